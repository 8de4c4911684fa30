"""Anchor the audit chain outside the database: post its head to the ops channel once a day.

Whoever holds the database credentials can delete the newest audit rows and leave a shorter chain
that still verifies; a head posted where they cannot edit it (`gardenbot audit verify --head
ID:HASH`) catches that. A scheduler will take this over; until then `gardenbot serve` runs
`publish_daily`, whose clock and sleep are injectable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import StoreUnavailable
from core.i18n import Translator
from store.audit import AuditLog, Head

log = logging.getLogger(__name__)

CHECK_EVERY_S = 600.0  # how often the day is looked at; the head is posted once per day


async def publish_head(audit: AuditLog, client: AsyncWebClient, channel: str, t: Translator) -> Head | None:
    """Post "audit head: id N, hash …" to `channel`; None (nothing posted) for an empty log."""
    head = await audit.head()
    if head is None:
        return None
    await client.chat_postMessage(channel=channel, text=t("audit.head_published", id=head.id, hash=head.hash))
    return head


async def publish_daily(
    audit: AuditLog,
    client: AsyncWebClient,
    channel: str,
    t: Translator,
    *,
    today: Callable[[], date],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Post the head on the first check of every day (by `today()`); retry a failed post later."""
    published_on: date | None = None
    while True:
        day = today()
        if day != published_on:
            try:
                await publish_head(audit, client, channel, t)
                published_on = day
            except (StoreUnavailable, SlackApiError, OSError) as exc:
                log.warning("audit head not published (%s): will try again", type(exc).__name__)
        await sleep(CHECK_EVERY_S)
