"""The text backend: the same pipeline in a terminal. Replies as text, buttons as numbered choices.

How a reply looks is bot/console_render.py; how a line is read (editing, history, completion) is
bot/shell.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from bot.console_render import print_reply, render_text, reply_json
from bot.shell import LineReader, line_reader
from commands.base import Actor, Request
from commands.pipeline import Pipeline
from commands.runner import JobListener
from core.formatting import progress_bar
from core.i18n import Translator
from core.reply import Actions, Button, Reply

__all__ = ["Console", "ConsoleProgress", "render_text", "reply_json"]


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

    async def shell(
        self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, *, reader: LineReader | None = None
    ) -> int:
        """Line editing, history and completion at a terminal (bot/shell.py); plain lines otherwise."""
        t = Translator(self.locale or "en")
        stdout.write(t("console.banner", user=self.user) + "\n")
        read = reader or line_reader(self.pipeline, stdin, stdout)
        choices: tuple[Button, ...] = ()
        while True:
            line = await read(f"garden[{self.user}]> ")
            if line is None:
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
            print_reply(reply, stdout)
            choices = next((e.buttons for e in reply.elements if isinstance(e, Actions)), ())
            if choices:
                stdout.write(t("console.choice_hint") + "\n")
