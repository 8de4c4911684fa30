"""The text backend: the same pipeline in a terminal. Replies as text, buttons as numbered choices.

How a reply looks is bot/console_render.py; how a line is read (editing, history, completion) is
bot/shell.py.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TextIO

from bot.clicks import request_from_click
from bot.console_render import print_reply, render_text, reply_json
from bot.shell import LineReader, line_reader
from commands.base import Actor, ConsoleOrigin, Request, Role
from commands.job_watch import started_job
from commands.pipeline import Pipeline
from commands.policy import Policy
from core.errors import GardenBotError, NotAllowed
from core.formatting import progress_bar
from core.i18n import Translator
from core.reply import Actions, Button, Reply, Text, mention

__all__ = ["Console", "render_text", "reply_json", "watch_job"]


async def watch_job(pipeline: Pipeline, job_id: int, stream: TextIO = sys.stderr) -> Reply:
    """Show a job's progress on stderr (stdout keeps only the result) and return its result."""
    end = "\r" if stream.isatty() else "\n"
    async for event in pipeline.jobs.watch(job_id):
        if event.reply is not None:
            if stream.isatty():
                stream.write("\n")
            return event.reply
        if event.text:
            stream.write(f"job {job_id} {progress_bar(event.percent)} {event.text}{end}")
            stream.flush()
    raise GardenBotError("job.not_running_here", job_id=job_id)  # pragma: no cover


def os_login() -> str:
    """The account of the process's real uid: not $USER or $LOGNAME, which the same person sets."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers): the number is still that account
        return str(uid)


@dataclass(frozen=True)
class ConsoleAccess:
    """Who the person at this console may act as.

    In the demo anyone may be anyone. Otherwise the OS login acts as the Slack user that
    `console.users` maps it to, and only a login mapped to an admin may act as someone else.
    """

    policy: Policy
    users: Mapping[str, str]
    demo: bool
    login: str = field(default_factory=os_login)
    host: str = field(default_factory=socket.gethostname)

    def identify(self, wanted: str | None) -> tuple[str | None, ConsoleOrigin | None]:
        """(Slack user to act as, origin to record); raise NotAllowed when the login may not."""
        if self.demo:
            return wanted, None
        mapped = self.mapped_user()
        if wanted is None or wanted == mapped:
            return mapped, ConsoleOrigin(os_login=self.login, host=self.host)
        if self.policy.role_of(Actor(user_id=mapped)) < Role.ADMIN:
            raise NotAllowed("console.impersonation_refused", login=self.login, user=mapped)
        return wanted, ConsoleOrigin(os_login=self.login, host=self.host, impersonated_by=mapped)

    def run_as_scheduler(self) -> ConsoleOrigin:
        """The origin to record when this console runs a schedule by hand (`gardenbot schedule run`).

        Acting as the scheduler (admin by default) is acting as another user: outside the demo only
        a login mapped to an admin may, and the record names that admin as `impersonated_by`.
        """
        if self.demo:
            return ConsoleOrigin(os_login=self.login, host=self.host)
        mapped = self.mapped_user()
        if self.policy.role_of(Actor(user_id=mapped)) < Role.ADMIN:
            raise NotAllowed("console.schedule_run_refused", login=self.login, user=mapped)
        return ConsoleOrigin(os_login=self.login, host=self.host, impersonated_by=mapped)

    def mapped_user(self) -> str:
        """The Slack user `console.users` maps this login to; NotAllowed when it maps it to nobody."""
        mapped = self.users.get(self.login)
        if mapped is None:
            raise NotAllowed("console.unmapped_login", login=self.login)
        return mapped


@dataclass
class Console:
    """One operator at a terminal, speaking to the pipeline as `user`."""

    pipeline: Pipeline
    access: ConsoleAccess  # who `as <user>` may switch to
    user: str
    origin: ConsoleOrigin | None = None  # None in the demo
    locale: str | None = None

    def request(self, text: str) -> Request:
        return Request(
            actor=Actor(user_id=self.user),
            text=text,
            source="console",
            locale=self.locale,
            console=self.origin,
        )

    def act_as(self, wanted: str) -> str | None:
        """Switch to another user (`as <user>`); a line to show, or None when it just switched."""
        t = Translator(self.locale or "en")
        try:
            user, origin = self.access.identify(wanted)
        except GardenBotError as exc:
            return t(exc.message_key, **exc.params)
        self.user, self.origin = user or wanted, origin
        if origin is not None and origin.impersonated_by is not None:
            return t("console.acting_as", user=self.user, by=origin.impersonated_by)
        return None

    async def run_once(self, text: str, *, wait: bool = True) -> Reply:
        """One command; when it starts a job, wait for the job's result by watching it."""
        return await self.run_request(self.request(text), wait=wait)

    async def run_request(self, request: Request, *, wait: bool = True) -> Reply:
        reply = await self.pipeline.handle(request)
        job_id = started_job(reply)
        if wait and job_id is not None:
            result = await watch_job(self.pipeline, job_id)
            return self.shown_here(result, self.pipeline.jobs.requested_by(job_id))
        return reply

    def shown_here(self, result: Reply, requester: str | None) -> Reply:
        """A private result (a temporary password) is printed only at the requester's console;
        an approver who ran the job sees that it went to the requester, not what it said."""
        if result.visibility != "asker" or result.status != "succeeded" or requester == self.user:
            return result
        t = Translator(self.locale or "en")
        said = t("job.private_result", requester=mention(requester or "?"))
        return Reply(status=result.status, summary=said, elements=(Text(said),), ids=result.ids)

    def choice(self, button: Button) -> Request:
        """A numbered choice, turned into a request exactly as the same Slack button would be."""
        try:
            clicked = request_from_click(button.action_id, button.value, Actor(user_id=self.user), None)
        except GardenBotError:
            return self.request(f"{button.action_id} {button.value}")  # refused like the typed words
        return replace(clicked, source="console", locale=self.locale, console=self.origin)

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
                said = self.act_as(text[3:].strip() or self.user)
                if said:
                    stdout.write(said + "\n")
                continue
            if text.isdigit() and 1 <= int(text) <= len(choices):
                reply = await self.run_request(self.choice(choices[int(text) - 1]))
            else:
                reply = await self.run_once(text)
            print_reply(reply, stdout)
            choices = next((e.buttons for e in reply.elements if isinstance(e, Actions)), ())
            if choices:
                stdout.write(t("console.choice_hint") + "\n")
