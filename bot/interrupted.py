"""Telling Slack about jobs a stopped process left behind, whoever found them.

A replica finds them at start-up (its own or another's jobs, silent past the stale limit) or while
serving (`keep_sweeping`, when another replica was killed). Either way the ops channel hears it and
each job's own message, whose progress bar its dead process can no longer move, says so in place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import interrupted_line
from bot.slack_surface import apply_edits
from core.config import Settings
from core.i18n import Translator
from core.reply import Edit, Reply, Text
from store.jobs import Job

log = logging.getLogger(__name__)


async def announce_interrupted(settings: Settings, client: AsyncWebClient, jobs: Sequence[Job]) -> None:
    """A line per job in the ops channel, and each job's message (when remembered) edited to say it."""
    if not jobs:
        return
    t = Translator(settings.locale)
    lines = {j.id: interrupted_line(t, j) for j in jobs}
    edits = tuple(
        Edit(ref=dict(j.message_ref), reply=_said(lines[j.id]))
        for j in jobs
        if j.message_ref.get("channel") and j.message_ref.get("ts")
    )
    await apply_edits(client, edits)
    channel = settings.channels.ops
    if channel is None:
        return
    try:
        await client.chat_postMessage(channel=channel, text="\n".join(lines.values()))
    except SlackApiError as exc:
        log.warning("could not announce interrupted jobs: %s", exc.response.get("error"))


def _said(line: str) -> Reply:
    return Reply(status="failed", summary=line, elements=(Text(line),))
