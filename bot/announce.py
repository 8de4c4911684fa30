"""Announcers: where a system actor's request (the scheduler's, the webhook's) is shown.

An announcer runs the request through the pipeline like any other, shows the reply in the
request's channel, then watches the job it started and keeps that same message current until the
job's result replaces it. Slack posts and updates a channel message; the console prints (for
`gardenbot schedule run`). Build the request with commands.system.system_request.

A system actor has nobody to tell privately: a refusal or failure is shown in the channel, and
a private answer (a temporary password) is withheld, never shown there.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TextIO

from slack_sdk.web.async_client import AsyncWebClient

from bot.console import watch_job as watch_in_console
from bot.console_render import print_reply
from bot.slack_surface import SlackSurface, remember_message
from bot.slack_surface import watch_job as watch_in_slack
from commands.base import Request
from commands.job_watch import started_job
from commands.pipeline import Pipeline
from commands.system import Announcer
from core.i18n import Translator
from core.reply import Reply

__all__ = ["Announcer", "ConsoleAnnouncer", "SlackAnnouncer", "for_channel"]


def for_channel(reply: Reply, t: Translator, command: str) -> Reply:
    """The reply as everyone in the channel may see it."""
    if reply.visibility != "asker":
        return reply
    if reply.status in ("refused", "failed"):
        return replace(reply, visibility="channel")
    return Reply(status=reply.status, summary=t("announce.private_withheld", command=command))


class _ChannelSurface(SlackSurface):
    """A SlackSurface whose every answer goes to the channel message, made fit for the channel."""

    def __init__(self, client: AsyncWebClient, request: Request, t: Translator, command: str) -> None:
        super().__init__(client, channel=str(request.channel), user=request.actor.user_id)
        self.t, self.command = t, command

    async def show(self, reply: Reply) -> None:
        await self.update(for_channel(reply, self.t, self.command))

    async def show_result(self, reply: Reply, requester: str | None = None) -> None:
        await self.update(for_channel(reply, self.t, self.command))


class SlackAnnouncer:
    """chat.postMessage to the request's channel, then chat.update of that message as its job goes."""

    def __init__(self, pipeline: Pipeline, client: AsyncWebClient) -> None:
        self.pipeline, self.client = pipeline, client

    async def announce(self, request: Request) -> Reply:
        if request.channel is None:
            raise ValueError("a system request names its channel (commands.system.system_request)")
        t = self.pipeline.translator(request)
        surface = _ChannelSurface(self.client, request, t, self.pipeline.command_name(request.text))
        reply = await self.pipeline.handle(request)
        await surface.show(reply)
        await remember_message(self.pipeline.services.store, surface, reply.ids)
        job_id = started_job(reply)
        if job_id is None:
            return reply
        await watch_in_slack(surface, self.pipeline.jobs, job_id)
        return await self.pipeline.jobs.result(job_id)


class ConsoleAnnouncer:
    """Prints what Slack would post: the reply, the job's progress (on stderr), its result."""

    def __init__(
        self, pipeline: Pipeline, stream: TextIO = sys.stdout, progress: TextIO = sys.stderr
    ) -> None:
        self.pipeline, self.stream, self.progress = pipeline, stream, progress

    async def announce(self, request: Request) -> Reply:
        t = self.pipeline.translator(request)
        command = self.pipeline.command_name(request.text)
        reply = await self.pipeline.handle(request)
        header = t("announce.header", actor=request.actor.user_id, channel=request.channel or "-")
        self.stream.write(header + "\n")
        print_reply(for_channel(reply, t, command), self.stream)
        job_id = started_job(reply)
        if job_id is None:
            return reply
        result = await watch_in_console(self.pipeline, job_id, self.progress)
        print_reply(for_channel(result, t, command), self.stream)
        return result
