"""`gardenbot shell` at a terminal: completion of sub-commands and ids, history, a typed session."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from bot.console import Console, ConsoleAccess
from bot.runtime import Runtime
from bot.shell import ShellCompleter, history_file, prompt_reader, shell_session, store_ids
from commands.base import Args, Context, Role
from commands.command import Command
from commands.registry import Registry
from core.reply import Reply
from store.db import Store
from tests.support.runtime import BotWorld, closed_port

LEFT = "\x1b[D"
TAB = "\t"
ENTER = "\r"


def demo_console(runtime: Runtime, user: str, locale: str | None = None) -> Console:
    """A console of the embedded demo, where one terminal may act as anyone."""
    access = ConsoleAccess(runtime.services.policy, {}, demo=True)
    return Console(runtime.pipeline, access, user, None, locale)


def completer_of(runtime: Runtime) -> ShellCompleter:
    return ShellCompleter(runtime.pipeline.registry, store_ids(runtime.services.store))


async def completions(completer: ShellCompleter, text: str) -> list[str]:
    return [c.text async for c in completer.get_completions_async(Document(text), CompleteEvent())]


async def ask_for_flush(runtime: Runtime) -> int:
    reply = await demo_console(runtime, "U0ADMIN").run_once("cache flush")
    approval_id = reply.ids["approval_id"]
    assert reply.status == "pending" and isinstance(approval_id, int), reply
    return approval_id


async def test_sub_commands_complete_word_by_word_from_the_registry(bot_runtime: Runtime) -> None:
    completer = completer_of(bot_runtime)

    assert await completions(completer, "back") == ["backup"]
    assert await completions(completer, "backup ") == ["files", "list", "verify"]
    assert await completions(completer, "cache f") == ["flush"]
    assert await completions(completer, "ap") == ["approvals", "approve"]  # `approvals sweep` too
    assert await completions(completer, "jobs ") == []


async def test_approve_and_deny_complete_pending_approval_ids(bot_runtime: Runtime) -> None:
    approval_id = await ask_for_flush(bot_runtime)
    completer = completer_of(bot_runtime)

    assert await completions(completer, "approve ") == [str(approval_id)]
    assert await completions(completer, "deny ") == [str(approval_id)]
    await demo_console(bot_runtime, "U0LEAD").run_once(f"deny {approval_id}")
    assert await completions(completer, "approve ") == []  # decided: no longer offered


async def test_backup_verify_and_restore_complete_good_backup_ids(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    ids = {
        status: bot_world.query(
            "INSERT INTO backups (database_name, file_name, status, created_by)"
            " VALUES ('garden_dx', %s, %s, 'U0OPS') RETURNING id",
            (f"garden_dx_{status}.dump", status),
        )[0][0]
        for status in ("good", "failed")
    }
    completer = completer_of(bot_runtime)

    assert await completions(completer, "backup verify ") == [str(ids["good"])]
    assert await completions(completer, "restore ") == [str(ids["good"])]
    assert await completions(completer, "backup list ") == []


class JobIdArgs(Args):
    job_id: str


async def never_run(ctx: Context, args: JobIdArgs) -> Reply:
    raise AssertionError("completion never runs a command")


async def test_a_command_taking_a_job_id_completes_recent_job_ids(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    (job_id,) = bot_world.query(
        "INSERT INTO jobs (command, requested_by, source, correlation_id)"
        " VALUES ('backup', 'U0OPS', 'console', 'c-1') RETURNING id"
    )[0]
    job_show = Command(
        name="job show",
        usage="job show <id>",
        help_key="help.jobs",
        role=Role.VIEWER,
        run=never_run,
        args=JobIdArgs,
    )
    completer = ShellCompleter(Registry([job_show]), store_ids(bot_runtime.services.store))

    assert await completions(completer, "job ") == ["show"]
    assert await completions(completer, "job show ") == [str(job_id)]


async def test_with_the_store_down_ids_do_not_complete_and_nothing_raises(bot_runtime: Runtime) -> None:
    down = Store(f"postgresql://postgres@127.0.0.1:{closed_port()}/gardenbot", max_size=1)
    await down.open()
    try:
        completer = ShellCompleter(bot_runtime.pipeline.registry, store_ids(down), timeout=0.5)
        started = time.monotonic()
        assert await completions(completer, "approve ") == []
        assert await completions(completer, "restore ") == []
        assert time.monotonic() - started < 5  # the prompt is not held up by the dead store
        assert await completions(completer, "hel") == ["help"]  # words still complete
    finally:
        await down.close()


def test_the_history_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        fresh = history_file(tmp_path / "state")
        loose = tmp_path / "old" / "shell-history"
        loose.parent.mkdir()
        loose.write_text("+help\n")
        loose.chmod(0o644)
        tightened = history_file(loose.parent)
    finally:
        os.umask(old_umask)

    assert fresh == tmp_path / "state" / "shell-history"
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(tightened.stat().st_mode) == 0o600
    assert tightened.read_text() == "+help\n"


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


class TypedSession:
    """A shell fed through prompt_toolkit's pipe input, as a person types at a terminal."""

    def __init__(self, runtime: Runtime, pipe: PipeInput) -> None:
        self.session = shell_session(runtime.pipeline, input=pipe, output=DummyOutput())
        self.pipe = pipe
        self.prompts: list[str] = []
        self.read = prompt_reader(self.session)

    async def reader(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        return await self.read(prompt)

    async def line(self, keys: str, expect: str) -> None:
        """At the next prompt, type keys, see the line read `expect`, press Enter."""
        shown = len(self.prompts)
        self.pipe.send_text(keys)
        await until(lambda: self.text == expect, f"line {expect!r}")
        self.pipe.send_text(ENTER)
        await until(lambda: len(self.prompts) > shown, "the next prompt")

    async def keys(self, keys: str, expect: str) -> None:
        self.pipe.send_text(keys)
        await until(lambda: self.text == expect, f"line {expect!r}")

    async def tab(self, expect: str) -> None:
        """Once completions are offered (they come asynchronously), Tab takes the first."""
        state = lambda: self.session.default_buffer.complete_state  # noqa: E731
        await until(lambda: bool(state() and state().completions), f"completions for {self.text!r}")
        await self.keys(TAB, expect)

    @property
    def text(self) -> str:
        return self.session.default_buffer.text


async def test_a_typed_session_edits_lines_completes_ids_and_keeps_history(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    approval_id = await ask_for_flush(bot_runtime)
    stdout = io.StringIO()
    with create_pipe_input() as pipe:
        typed = TypedSession(bot_runtime, pipe)
        console = demo_console(bot_runtime, "U0ADMIN", "en")
        shell = asyncio.create_task(console.shell(stdout=stdout, reader=typed.reader))
        try:
            await until(lambda: len(typed.prompts) == 1, "the first prompt")
            # Line editing: "jbs", the cursor two to the left, "o" inserted → "jobs".
            await typed.line("jbs" + LEFT + LEFT + "o", "jobs")
            await typed.line("as U0LEAD", "as U0LEAD")
            await typed.keys("den", "den")
            await typed.tab("deny")  # the sub-command completed
            await typed.keys(" ", "deny ")
            await typed.tab(f"deny {approval_id}")  # the pending approval's id completed
            await typed.line("", f"deny {approval_id}")
            pipe.send_text("quit" + ENTER)
            assert await asyncio.wait_for(shell, timeout=30) == 0
        finally:
            shell.cancel()

    out = stdout.getvalue()
    assert "No jobs yet." in out
    assert f"Approval {approval_id} denied by @U0LEAD" in out
    status = bot_world.query("SELECT status, decided_by FROM approvals WHERE id = %s", (approval_id,))
    assert status == [("denied", "U0LEAD")]
    history = (bot_world.state_dir / "shell-history").read_text(encoding="utf-8")
    assert [line[1:] for line in history.splitlines() if line.startswith("+")] == [
        "jobs",
        "as U0LEAD",
        f"deny {approval_id}",
        "quit",
    ]


async def test_without_a_terminal_the_shell_reads_plain_lines_and_numbered_choices(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    stdin = io.StringIO("cache flush\nas U0LEAD\n2\n")
    stdout = io.StringIO()

    assert await demo_console(bot_runtime, "U0ADMIN", "en").shell(stdin, stdout) == 0

    out = stdout.getvalue()
    assert "[1] Approve (approve " in out and "\x1b" not in out, out
    assert "garden[U0LEAD]> " in out
    assert bot_world.query("SELECT status, decided_by FROM approvals") == [("denied", "U0LEAD")]
