"""`gardenbot shell` for a person: line editing, history and completion through prompt_toolkit.

Sub-commands complete from the registry word by word ("back" → "backup", "backup " → "list",
"verify"); ids complete from the bot's store after the words that take one (pending approvals after
"approve"/"deny", backups after "backup verify"/"restore", jobs after a command taking a job id).
The store is asked with a short timeout: when it is down there is simply nothing to complete.
Without a terminal (pipes, tests) the shell reads plain lines as it always did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from commands.base import DECISION_WORDS
from commands.pipeline import Pipeline
from commands.registry import Registry
from store import approvals as approval_store
from store import backups as backup_store
from store import jobs as job_store
from store.db import Store

log = logging.getLogger(__name__)

HISTORY_FILE = "shell-history"
ID_TIMEOUT_S = 0.5  # a completion must never make the prompt wait on a slow store
ID_LIMIT = 20
LOCAL_WORDS = ("quit", "exit")

IdKind = Literal["approval", "backup", "job"]
# The argument field that names an id, in a command's args model → which ids complete there.
ID_FIELDS: dict[str, IdKind] = {"approval_id": "approval", "backup_id": "backup", "job_id": "job"}

# Reads one line after showing the prompt; None at the end of input.
LineReader = Callable[[str], Awaitable[str | None]]
IdSource = Callable[[IdKind], Awaitable[list[str]]]


def store_ids(store: Store) -> IdSource:
    """Ids worth offering, newest first: open approvals, good backups, recent jobs."""

    async def ids(kind: IdKind) -> list[str]:
        if kind == "approval":
            pending = await approval_store.pending_approvals(store, limit=ID_LIMIT)
            return [str(a.id) for a in pending]
        if kind == "backup":
            good = await backup_store.list_backups(store, limit=ID_LIMIT, statuses=("good",))
            return [str(b.id) for b in good]
        return [str(j.id) for j in await job_store.recent_jobs(store, limit=ID_LIMIT)]

    return ids


class ShellCompleter(Completer):
    """Completes sub-command words from the registry and ids from the store."""

    def __init__(self, registry: Registry, ids: IdSource, *, timeout: float = ID_TIMEOUT_S) -> None:
        self.names = [tuple(c.name.lower().split()) for c in registry]
        self.names += [(word,) for word in (*DECISION_WORDS, *LOCAL_WORDS)]
        self.id_kinds: dict[tuple[str, ...], IdKind] = {(w,): "approval" for w in DECISION_WORDS}
        for command in registry:
            kind = _id_kind(command.args.model_fields)
            if kind is not None:
                self.id_kinds[tuple(command.name.lower().split())] = kind
        self.ids = ids
        self.timeout = timeout

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before, current = _words(document.text_before_cursor)
        yield from _matching(self._next_words(before), current)

    async def get_completions_async(
        self, document: Document, complete_event: CompleteEvent
    ) -> AsyncGenerator[Completion, None]:
        before, current = _words(document.text_before_cursor)
        for completion in _matching(self._next_words(before), current):
            yield completion
        kind = self.id_kinds.get(tuple(w.lower() for w in before))
        if kind is not None:
            for completion in _matching(await self._fetch(kind), current):
                yield completion

    def _next_words(self, before: list[str]) -> list[str]:
        typed = tuple(w.lower() for w in before)
        found = {
            name[len(typed)] for name in self.names if len(name) > len(typed) and name[: len(typed)] == typed
        }
        return sorted(found)

    async def _fetch(self, kind: IdKind) -> list[str]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.ids(kind)
        except Exception as exc:  # a completion never breaks the prompt: no ids is the answer
            log.debug("no %s ids to complete: %s", kind, type(exc).__name__)
            return []


def _id_kind(fields: Iterable[str]) -> IdKind | None:
    first = next(iter(fields), None)
    return ID_FIELDS.get(first) if first is not None else None


def _words(text: str) -> tuple[list[str], str]:
    """The finished words before the cursor and the word being typed ("" after a space)."""
    words = text.split()
    if not text or text[-1].isspace():
        return words, ""
    return words[:-1], words[-1]


def _matching(candidates: Iterable[str], current: str) -> Iterator[Completion]:
    for candidate in candidates:
        if candidate.lower().startswith(current.lower()) and candidate != current:
            yield Completion(candidate, start_position=-len(current))


def history_file(state_dir: Path) -> Path:
    """The shell's history under the state directory, readable by its owner only (0600)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / HISTORY_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # also when it existed before with looser rights
    return path


def shell_session(
    pipeline: Pipeline, *, input: Input | None = None, output: Output | None = None
) -> PromptSession[str]:
    """A prompt with history in the state directory and completion of sub-commands and ids."""
    services = pipeline.services
    return PromptSession(
        history=FileHistory(history_file(services.settings.state_dir)),
        completer=ShellCompleter(pipeline.registry, store_ids(services.store)),
        complete_while_typing=True,
        input=input,
        output=output,
    )


def prompt_reader(session: PromptSession[str]) -> LineReader:
    """Lines from prompt_toolkit: Ctrl-D ends the shell, Ctrl-C drops the line being typed."""

    async def read(prompt: str) -> str | None:
        try:
            return await session.prompt_async(prompt)
        except EOFError:
            return None
        except KeyboardInterrupt:
            return ""

    return read


def plain_reader(stdin: TextIO, stdout: TextIO) -> LineReader:
    """Lines from a pipe or file, the prompt written before each, as before prompt_toolkit."""

    async def read(prompt: str) -> str | None:
        stdout.write(prompt)
        stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            stdout.write("\n")
            return None
        return line

    return read


def line_reader(pipeline: Pipeline, stdin: TextIO, stdout: TextIO) -> LineReader:
    """prompt_toolkit at a terminal; plain lines otherwise (pipes, tests, `gardenbot shell < file`)."""
    if stdin.isatty() and stdout.isatty():
        return prompt_reader(shell_session(pipeline))
    return plain_reader(stdin, stdout)
