"""The Notifier a command uses to reach a channel other than the asker's (commands/services.py).

Slack: chat.postMessage, conversations.create and .invite, and files uploaded the current way
(files.getUploadURLExternal, the upload URL, files.completeUploadExternal). Without a bot token
(the console, the demo): one line on stderr per notice, and uploaded files saved under the
state directory, so the console shows what Slack would have been sent.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import render_message
from bot.slack_surface import slack_http_logger
from commands.services import Notifier
from core.config import Settings
from core.reply import MENTION_PATTERN, Reply

POSTMORTEM_DIR = "postmortems"  # under the state directory, where the console keeps uploads


def slack_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """Every Web API call goes to SLACK_API_URL and retries on 429, connection and 5xx errors."""
    slack = settings.slack
    token = slack.bot_token.get_secret_value() if slack.bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=slack.api_url,
        session=session,
        timeout=15,
        logger=slack_http_logger(),  # request bodies (a temporary password) never reach DEBUG logs
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def notifier_for(settings: Settings) -> Notifier:
    """Slack when there is a bot token, else the console."""
    if settings.slack.bot_token is not None:
        return SlackNotifier(slack_client(settings))
    return ConsoleNotifier(settings.state_dir / POSTMORTEM_DIR)


class SlackNotifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, reply: Reply) -> dict[str, Any]:
        response = await self.client.chat_postMessage(channel=channel, **render_message(reply))
        return {"channel": str(response.get("channel") or channel), "ts": str(response["ts"])}

    async def open_channel(self, name: str, members: Sequence[str]) -> dict[str, Any]:
        created = await self.client.conversations_create(name=name)
        channel = str((created.get("channel") or {}).get("id", ""))
        ref: dict[str, Any] = {"channel": channel, "name": name}
        if members:
            try:
                await self.client.conversations_invite(channel=channel, users=",".join(members))
            except SlackApiError as exc:  # the channel exists: say who was not invited, keep it
                ref["invite_error"] = str(exc.response.get("error"))
        return ref

    async def upload(self, channel: str, filename: str, content: str, *, title: str) -> dict[str, Any]:
        response = await self.client.files_upload_v2(
            channel=channel, filename=filename, content=content.encode("utf-8"), title=title
        )
        file = response.get("file") or {}
        return {"channel": channel, "file": str(file.get("id", "")) if isinstance(file, dict) else ""}


class ConsoleNotifier:
    def __init__(self, directory: Path, stream: TextIO | None = None) -> None:
        self.directory = directory
        self.stream = stream

    def _say(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(MENTION_PATTERN.sub(r"@\1", line) + "\n")
        stream.flush()

    async def post(self, channel: str, reply: Reply) -> dict[str, Any]:
        self._say(f"[{channel}] {reply.summary}")
        return {"channel": channel, "ts": ""}

    async def open_channel(self, name: str, members: Sequence[str]) -> dict[str, Any]:
        self._say(f"[#{name}] " + ", ".join(members))
        return {"channel": "", "name": name}

    async def upload(self, channel: str, filename: str, content: str, *, title: str) -> dict[str, Any]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / filename
        path.write_text(content, encoding="utf-8")
        return {"path": str(path)}
