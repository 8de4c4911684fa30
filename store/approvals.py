"""Approvals in the bot's store. A decision is one conditional UPDATE, so it is taken exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg.types.json import Jsonb

from core.errors import Conflict, NotFound
from store.db import Store

Decision = Literal["approved", "denied"]


@dataclass(frozen=True)
class Approval:
    id: int
    command: str
    args: dict[str, Any]
    summary: str
    binding: dict[str, Any]
    requester: str
    channel: str | None
    source: str
    correlation_id: str
    status: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    job_id: int | None
    message_ref: dict[str, Any]
    requester_os_login: str | None = None  # the console that asked, outside the demo
    requester_host: str | None = None
    requester_impersonated_by: str | None = None  # the admin who asked while acting as `requester`

    def requested_by(self) -> frozenset[str]:
        """Every person behind the request: the requester and an admin who acted as them."""
        return frozenset(p for p in (self.requester, self.requester_impersonated_by) if p)


_COLUMNS = (
    "id, command, args, summary, binding, requester, channel, source, correlation_id, status,"
    " created_at, expires_at, decided_by, decided_at, job_id, message_ref, requester_os_login,"
    " requester_host, requester_impersonated_by"
)


def _approval(row: dict[str, Any]) -> Approval:
    return Approval(**row)


async def open_approval(
    store: Store,
    *,
    command: str,
    args: dict[str, Any],
    summary: str,
    binding: dict[str, Any],
    requester: str,
    channel: str | None,
    source: str,
    correlation_id: str,
    ttl: timedelta,
    requester_os_login: str | None = None,
    requester_host: str | None = None,
    requester_impersonated_by: str | None = None,
) -> Approval:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"INSERT INTO approvals (command, args, summary, binding, requester, channel, source,"
            f" correlation_id, expires_at, requester_os_login, requester_host, requester_impersonated_by)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (
                command,
                Jsonb(args),
                summary,
                Jsonb(binding),
                requester,
                channel,
                source,
                correlation_id,
                ttl,
                requester_os_login,
                requester_host,
                requester_impersonated_by,
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    return _approval(row)


async def get_approval(store: Store, approval_id: int) -> Approval:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = %s", (approval_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("approval.not_found", approval_id=approval_id)
    return _approval(row)


async def pending_approvals(store: Store, *, limit: int = 20) -> list[Approval]:
    """Approvals still waiting for a decision (not expired), newest first."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at > now()"
            " ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
    return [_approval(row) for row in rows]


async def decide_approval(
    store: Store,
    approval_id: int,
    *,
    decided_by: str,
    decision: Decision,
    decided_from_os_login: str | None = None,
    decided_for: str | None = None,
) -> Approval:
    """Take the decision if and only if the approval is still pending and unexpired.

    Ten approvers clicking at the same instant: one UPDATE matches, the others see Conflict.
    Nobody behind the request decides it: not the requester, not an admin who asked while acting as
    them, not the OS login that asked from a console. `decided_for` is the admin behind a decider
    who acts as someone else at a console.
    """
    deciders = [p for p in (decided_by, decided_for) if p]
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE approvals SET status = %s, decided_by = %s, decided_at = now()"
            f" WHERE id = %s AND status = 'pending' AND expires_at > now()"
            f" AND requester <> ALL(%s)"
            f" AND (requester_impersonated_by IS NULL OR requester_impersonated_by <> ALL(%s))"
            f" AND (%s::text IS NULL OR requester_os_login IS DISTINCT FROM %s::text)"
            f" RETURNING {_COLUMNS}",
            (
                decision,
                decided_by,
                approval_id,
                deciders,
                deciders,
                decided_from_os_login,
                decided_from_os_login,
            ),
        )
        row = await cur.fetchone()
        if row is not None:
            return _approval(row)
        # Say why it did not match: expired (and record it), already decided, or unknown.
        cur = await conn.execute(
            f"UPDATE approvals SET status = 'expired' WHERE id = %s AND status = 'pending'"
            f" AND expires_at <= now() RETURNING {_COLUMNS}",
            (approval_id,),
        )
        expired = await cur.fetchone()
    if expired is not None:
        raise Conflict("approval.expired", approval_id=approval_id)
    current = await get_approval(store, approval_id)
    if current.status == "expired":
        raise Conflict("approval.expired", approval_id=approval_id)
    if current.status != "pending":
        raise Conflict(
            "approval.already_decided",
            approval_id=approval_id,
            status=current.status,
            decided_by=current.decided_by or "?",
        )
    raise Conflict("approval.requester_cannot_decide", approval_id=approval_id)


async def reopen_approval(store: Store, approval_id: int, *, decided_by: str) -> bool:
    """Undo an approval whose job could not start (its lock was busy): pending again, so it is not
    used up. Only the decider's own approval with no job yet moves; True when it did."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE approvals SET status = 'pending', decided_by = NULL, decided_at = NULL"
            " WHERE id = %s AND status = 'approved' AND decided_by = %s AND job_id IS NULL",
            (approval_id, decided_by),
        )
        return cur.rowcount == 1


async def attach_job(store: Store, approval_id: int, job_id: int) -> None:
    async with store.connection() as conn:
        await conn.execute("UPDATE approvals SET job_id = %s WHERE id = %s", (job_id, approval_id))


async def remember_message(store: Store, approval_id: int, message_ref: dict[str, Any]) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE approvals SET message_ref = %s WHERE id = %s", (Jsonb(message_ref), approval_id)
        )


async def expire_overdue(store: Store, *, limit: int = 100) -> list[Approval]:
    """Mark pending approvals past their time as expired; the ones this call marked, oldest first.

    One UPDATE per row set: two replicas sweeping at once never both return the same approval.
    """
    async with store.connection() as conn:
        cur = await conn.execute(
            f"UPDATE approvals SET status = 'expired' WHERE id IN ("
            f"SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= now()"
            f" ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" AND status = 'pending' RETURNING {_COLUMNS}",
            (limit,),
        )
        rows = await cur.fetchall()
    return sorted((_approval(row) for row in rows), key=lambda a: a.id)
