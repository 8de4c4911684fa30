"""Alert threads in the bot's store: one row per Alertmanager alert group (groupKey).

A webhook stores the group's latest payload (`record_notification`); whoever sends the Slack
message reads the row before its turn to send, so it shows the latest state. Posting the first message is
claimed with a short lease (`claim_posting`), so two replicas receiving the same new group post
one message: the other waits for the `ts` and updates it. Times are the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from core.alerts import AlertGroup
from core.errors import Conflict, NotFound
from store.db import Store

COLUMNS = (
    "id, group_key, status, payload, notifications, first_at, received_at, channel, ts, acked_by, acked_at"
)
POSTING_LEASE = timedelta(seconds=30)  # longer than a chat.postMessage with its retries


@dataclass(frozen=True)
class AlertThread:
    id: int
    group_key: str
    status: str
    payload: dict[str, Any]
    notifications: int
    first_at: datetime
    received_at: datetime
    channel: str | None
    ts: str | None
    acked_by: str | None
    acked_at: datetime | None

    @property
    def group(self) -> AlertGroup:
        return AlertGroup.model_validate(self.payload)


def _thread(row: dict[str, Any]) -> AlertThread:
    return AlertThread(**row)


# The group fires anew: it was resolved, or an alert fires that was not firing in the state
# before (matched by fingerprint, or by labels when Alertmanager sent none).
REFIRES = """
    EXCLUDED.status = 'firing' AND (alert_threads.status <> 'firing' OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(EXCLUDED.payload->'alerts') AS new_alert
        WHERE new_alert->>'status' = 'firing' AND NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements(alert_threads.payload->'alerts') AS old_alert
            WHERE old_alert->>'status' = 'firing'
              AND coalesce(nullif(old_alert->>'fingerprint', ''), old_alert->>'labels')
                = coalesce(nullif(new_alert->>'fingerprint', ''), new_alert->>'labels'))))
"""


async def record_notification(
    store: Store, group: AlertGroup, *, at: datetime, notifications: int = 1
) -> AlertThread:
    """Keep the group's latest state; the first notification of a group opens its thread.

    A group that fires anew (resolved before, or an alert firing that was not) loses its
    acknowledgement: the on-call operator is asked again. A state received before the stored
    one (a notification kept while the store was down) never replaces it; it is counted.
    `notifications` is how many webhooks this state stands for (more than one when some were
    received while the store was down).
    """
    payload = Jsonb(group.model_dump(mode="json", by_alias=True))
    newer = "alert_threads.received_at <= EXCLUDED.received_at"
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO alert_threads (group_key, status, payload, first_at, received_at, notifications)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (group_key) DO UPDATE SET"
            f" status = CASE WHEN {newer} THEN EXCLUDED.status ELSE alert_threads.status END,"
            f" payload = CASE WHEN {newer} THEN EXCLUDED.payload ELSE alert_threads.payload END,"
            " received_at = greatest(alert_threads.received_at, EXCLUDED.received_at),"
            f" acked_by = CASE WHEN {newer} AND {REFIRES} THEN NULL ELSE alert_threads.acked_by END,"
            f" acked_at = CASE WHEN {newer} AND {REFIRES} THEN NULL ELSE alert_threads.acked_at END,"
            " notifications = alert_threads.notifications + EXCLUDED.notifications"
            f" RETURNING {COLUMNS}",
            (group.group_key, group.status, payload, at, at, notifications),
        )
        row = await cur.fetchone()
    assert row is not None
    return _thread(row)


async def get_thread(store: Store, thread_id: int) -> AlertThread:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {COLUMNS} FROM alert_threads WHERE id = %s", (thread_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("alert.not_found", alert=thread_id)
    return _thread(row)


async def thread_of(store: Store, group_key: str) -> AlertThread | None:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {COLUMNS} FROM alert_threads WHERE group_key = %s", (group_key,))
        row = await cur.fetchone()
    return _thread(row) if row is not None else None


async def claim_posting(
    store: Store, thread_id: int, *, now: datetime, renewing: datetime | None = None
) -> datetime | None:
    """The lease's end when this caller is to post the thread's first message (none yet, nobody
    posting), else None. `renewing`: the end of a lease this caller holds, which it may renew."""
    until = now + POSTING_LEASE
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE alert_threads SET posting_until = %s WHERE id = %s AND ts IS NULL"
            " AND (posting_until IS NULL OR posting_until < %s OR posting_until = %s) RETURNING id",
            (until, thread_id, now, renewing),
        )
        return until if await cur.fetchone() is not None else None


async def release_posting(store: Store, thread_id: int) -> None:
    """The post failed: let the next attempt (here or on another replica) claim it again."""
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE alert_threads SET posting_until = NULL WHERE id = %s AND ts IS NULL", (thread_id,)
        )


async def remember_message(store: Store, thread_id: int, *, channel: str, ts: str) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE alert_threads SET channel = %s, ts = %s, posting_until = NULL WHERE id = %s",
            (channel, ts, thread_id),
        )


async def adopt_message(store: Store, thread_id: int, *, channel: str, ts: str, now: datetime) -> bool:
    """Make a message posted while the store was down the thread's own, when the thread has none
    and nobody is posting one; False when it has (or is getting) another."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE alert_threads SET channel = %s, ts = %s, posting_until = NULL"
            " WHERE id = %s AND (ts IS NULL OR ts = %s) AND (posting_until IS NULL OR posting_until < %s)"
            " RETURNING id",
            (channel, ts, thread_id, ts, now),
        )
        return await cur.fetchone() is not None


async def acknowledge(store: Store, thread_id: int, *, by: str, at: datetime) -> AlertThread:
    """Record who acknowledged the group; a second acknowledgement is a Conflict naming the first."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE alert_threads SET acked_by = %s, acked_at = %s WHERE id = %s AND acked_by IS NULL"
            f" RETURNING {COLUMNS}",
            (by, at, thread_id),
        )
        row = await cur.fetchone()
    if row is not None:
        return _thread(row)
    thread = await get_thread(store, thread_id)
    raise Conflict("alert.already_acknowledged", alert=thread_id, by=thread.acked_by or "?")
