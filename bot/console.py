"""The text backend: the same pipeline in a terminal. Replies as text, buttons as numbered choices."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from commands.base import Actor, Request
from commands.pipeline import Pipeline
from commands.runner import JobListener
from core.formatting import display_width, pad, text_table
from core.i18n import Translator
from core.reply import MENTION_PATTERN, Actions, Button, Fields, Header, Note, Progress, Reply, Table, Text

LEVEL_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "info": "·"}


def progress_bar(percent: int, width: int = 20) -> str:
    filled = max(0, min(width, round(percent * width / 100)))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {percent:3d}%"


def render_text(reply: Reply) -> str:
    lines: list[str] = []
    for element in reply.elements:
        if isinstance(element, Header):
            lines.append(f"== {element.text} ==")
        elif isinstance(element, Text):
            lines.append(element.text.replace("*", ""))
        elif isinstance(element, Note):
            lines.append(f"({element.text})")
        elif isinstance(element, Fields):
            width = max((display_width(label) for label, _ in element.pairs), default=0)
            lines.extend(f"{pad(label, width)} : {value}" for label, value in element.pairs)
        elif isinstance(element, Table):
            lines.append(_table(element))
        elif isinstance(element, Progress):
            lines.append(f"{progress_bar(element.percent)} {element.text}")
        elif isinstance(element, Actions):
            lines.append(_choices(element.buttons))
    if not lines:
        lines.append(reply.summary)
    return MENTION_PATTERN.sub(r"@\1", "\n".join(lines))


def _table(table: Table) -> str:
    if not table.levels:
        return text_table(table.columns, table.rows)
    rows = tuple((LEVEL_MARK[level], *row) for level, row in zip(table.levels, table.rows, strict=False))
    return text_table(("", *table.columns), rows)


def _choices(buttons: tuple[Button, ...]) -> str:
    return "  ".join(f"[{i}] {b.label} ({b.action_id} {b.value})" for i, b in enumerate(buttons, 1))


def reply_json(reply: Reply) -> str:
    payload: dict[str, Any] = {
        "status": reply.status,
        "text": render_text(reply),
        "summary": reply.summary,
    }
    payload.update(reply.ids)
    return json.dumps(payload, ensure_ascii=False)


class ConsoleProgress(JobListener):
    """Shows a job's progress on stderr so stdout keeps only the result."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    async def job_progress(self, job_id: int, percent: int, text: str) -> None:
        end = "\r" if self.stream.isatty() else "\n"
        self.stream.write(f"job {job_id} {progress_bar(percent)} {text}{end}")
        self.stream.flush()

    async def job_finished(self, job_id: int, reply: Reply) -> None:
        if self.stream.isatty():
            self.stream.write("\n")


@dataclass
class Console:
    """One operator at a terminal, speaking to the pipeline as `user`."""

    pipeline: Pipeline
    user: str
    locale: str | None = None

    def request(self, text: str) -> Request:
        return Request(actor=Actor(user_id=self.user), text=text, source="console", locale=self.locale)

    async def run_once(self, text: str, *, wait: bool = True) -> Reply:
        """One command; when it starts a job, wait for the job's result."""
        reply = await self.pipeline.handle(self.request(text), listener=ConsoleProgress())
        job_id = reply.ids.get("job_id")
        if wait and reply.status == "running" and isinstance(job_id, int):
            return await self.pipeline.runner.wait(job_id)
        return reply

    async def shell(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
        t = Translator(self.locale or "en")
        stdout.write(t("console.banner", user=self.user) + "\n")
        choices: tuple[Button, ...] = ()
        while True:
            stdout.write(f"garden[{self.user}]> ")
            stdout.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                stdout.write("\n")
                return 0
            text = line.strip()
            if text in ("quit", "exit"):
                return 0
            if not text:
                continue
            if text.startswith("as "):
                self.user = text[3:].strip() or self.user
                continue
            if text.isdigit() and 1 <= int(text) <= len(choices):
                chosen = choices[int(text) - 1]
                text = f"{chosen.action_id} {chosen.value}"
            reply = await self.run_once(text)
            stdout.write(render_text(reply) + "\n")
            choices = next((e.buttons for e in reply.elements if isinstance(e, Actions)), ())
            if choices:
                stdout.write(t("console.choice_hint") + "\n")
