"""Showing replies in Slack: one channel message updated in place, refusals to the asker only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.blocks import render_message
from commands.job_watch import JobBoard
from core.errors import StoreUnavailable
from core.reply import Attachment, Edit, Progress, Reply, Text
from store.approvals import remember_message as remember_approval_message
from store.db import Store
from store.jobs import remember_message as remember_job_message

log = logging.getLogger(__name__)


def slack_http_logger() -> logging.Logger:
    """The logger handed to the Slack SDK's clients: never below INFO. At DEBUG they write whole
    request bodies, and a private reply's body holds a temporary password."""
    logger = logging.getLogger("bot.slack_http")
    logger.setLevel(max(logger.level, logging.INFO))
    return logger


class SlackSurface:
    """Where one request's answers go: its channel, its asker, and the message being updated."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        user: str,
        response_url: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.user = user
        self.response_url = response_url
        self.message_ts = message_ts
        self.thread_ts = thread_ts  # post as a reply in this message's thread
        self.title = ""

    async def show(self, reply: Reply) -> None:
        """Refusals and private answers to the asker; everything else as the channel message."""
        if reply.visibility == "asker":
            await self.tell_asker(reply)
        elif self.message_ts:
            await self.update(reply)
        else:
            await self.post(reply)
        await self.follow_up(reply)

    async def follow_up(self, reply: Reply) -> None:
        """What goes with a reply: its file (uploaded to the channel) and edits of earlier messages."""
        if reply.attachment is not None and reply.visibility == "channel":
            await self.upload(reply.attachment)
        await apply_edits(self.client, reply.edits)

    async def upload(self, attachment: Attachment) -> None:
        try:
            await self.client.files_upload_v2(
                channel=self.channel,
                content=attachment.content,
                filename=attachment.filename,
                title=attachment.title or attachment.filename,
                thread_ts=self.message_ts,
                request_file_info=False,
            )
        except SlackApiError as exc:
            log.warning("upload of %s failed: %s", attachment.filename, exc.response.get("error"))

    async def post(self, reply: Reply) -> None:
        self.title = self.title or reply.summary
        try:
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, **render_message(reply)
            )
            self.message_ts = str(response["ts"])
            self.channel = str(response.get("channel") or self.channel)
        except SlackApiError as exc:
            # Not in the channel, or a DM the bot cannot post to: answer through the response URL.
            log.warning("chat.postMessage to %s failed: %s", self.channel, exc.response.get("error"))
            await self._respond(reply, in_channel=True)

    async def update(self, reply: Reply) -> None:
        if self.message_ts is None:
            await self.post(reply)
            return
        try:
            await self.client.chat_update(channel=self.channel, ts=self.message_ts, **render_message(reply))
        except SlackApiError as exc:
            log.warning("chat.update failed: %s", exc.response.get("error"))

    async def show_result(self, reply: Reply, requester: str | None = None) -> None:
        """A job's result in place of its message. A private one (a temporary password) never goes
        to the channel message, and goes to the job's requester: after an approval this surface is
        the approver's click, so `requester` says who asked."""
        if reply.visibility != "asker":
            await self.update(reply)
            await self.follow_up(reply)  # a report's chart, edits of other messages
            return
        if requester is not None:
            await self.tell_asker(reply, user=requester)
        else:
            log.warning("a private job result was not shown: its requester is unknown here")
        if reply.status != "succeeded" and requester != self.user:
            await self.tell_asker(reply)  # a failure holds no secret: the approver learns it too
        await self.update(Reply(status=reply.status, summary=self.title or "done"))

    async def tell_asker(self, reply: Reply, *, user: str | None = None) -> None:
        """An ephemeral message to `user` (default: whoever made this request or click).

        The response URL belongs to this surface's user: it is the fallback only for them."""
        to = user or self.user
        try:
            await self.client.chat_postEphemeral(channel=self.channel, user=to, **render_message(reply))
        except SlackApiError as exc:
            if to != self.user:
                log.warning("chat.postEphemeral to the requester failed (%s)", exc.response.get("error"))
                return
            log.info("chat.postEphemeral failed (%s); using the response URL", exc.response.get("error"))
            await self._respond(reply, in_channel=False)

    async def _respond(self, reply: Reply, *, in_channel: bool) -> None:
        if not self.response_url:
            return
        body: dict[str, Any] = dict(render_message(reply))
        body["response_type"] = "in_channel" if in_channel else "ephemeral"
        webhook = AsyncWebhookClient(self.response_url, timeout=10, logger=slack_http_logger())
        response = await webhook.send_dict(body)
        if response.status_code >= 400:
            log.warning("response_url answered %s", response.status_code)


async def apply_edits(client: AsyncWebClient, edits: tuple[Edit, ...]) -> None:
    """Change earlier messages in place (an expired approval's buttons go); one failure stops no other."""
    for edit in edits:
        try:
            await client.chat_update(
                channel=edit.ref["channel"], ts=edit.ref["ts"], **render_message(edit.reply)
            )
        except SlackApiError as exc:
            log.warning("chat.update of %s failed: %s", edit.ref.get("ts"), exc.response.get("error"))


async def watch_job(surface: SlackSurface, board: JobBoard, job_id: int) -> None:
    """Keep a job's channel message current: a progress bar, then the result, in place.

    Called after the reply that started the job (or approved it) is shown, so nothing overtakes it.
    """
    async for event in board.watch(job_id):
        if event.reply is not None:
            await surface.show_result(event.reply, board.requested_by(job_id))
            return
        if event.text and surface.message_ts is not None:
            title = surface.title or f"#{job_id}"
            progress = Progress(event.percent, event.text)
            await surface.update(Reply(status="running", summary=title, elements=(Text(title), progress)))


async def remember_message(store: Store, surface: SlackSurface, ids: Mapping[str, int | str]) -> None:
    """Store where a job's or an approval's message is, so later news (an expiry, a job found
    interrupted at start-up) updates that message."""
    if surface.message_ts is None:
        return
    ref = {"channel": surface.channel, "ts": surface.message_ts}
    try:
        if isinstance(ids.get("job_id"), int):
            await remember_job_message(store, int(ids["job_id"]), ref)
        if isinstance(ids.get("approval_id"), int):
            await remember_approval_message(store, int(ids["approval_id"]), ref)
    except StoreUnavailable:
        log.warning("message reference not stored (store unreachable)")
