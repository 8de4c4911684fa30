"""Incidents in the bot's store: the incident, its timeline, and the escalation pages made.

Every change is one conditional statement (acknowledge only an open incident, resolve only an
unresolved one), so two people clicking at once get one change and one Conflict. Times are the
caller's (`at`, `now`): a test's clock or the real one, never the database's.

Escalation pages (which level was paged when) are claimed in store/escalation.py.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from core.config import Severity
from core.errors import Conflict, NotFound
from core.incidents import (
    Incident,
    TimelineEntry,
    TimelineKind,
    check_text,
    check_title,
)
from store.db import Conn, Store

log = logging.getLogger(__name__)
LIST_LIMIT = 20
INCIDENT_COLUMNS = (
    "id, severity, title, impact, status, declared_by, declared_at, acked_by, acked_at,"
    " resolved_by, resolved_at, summary, channel_ref, message_ref, postmortem, declared_impersonated_by,"
    " declared_from_os_login, acked_impersonated_by, acked_from_os_login"
)
_ENTRYINCIDENT_COLUMNS = "id, incident_id, at, actor, kind, text, detail"


def _incident(row: dict[str, Any]) -> Incident:
    return Incident(**row)


def _entry(row: dict[str, Any]) -> TimelineEntry:
    return TimelineEntry(**row)


async def _append(
    conn: Conn,
    incident_id: int,
    *,
    at: datetime,
    actor: str,
    kind: TimelineKind,
    text: str = "",
    detail: dict[str, Any] | None = None,
) -> TimelineEntry:
    cur = await conn.execute(
        f"INSERT INTO incident_timeline (incident_id, at, actor, kind, text, detail)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_ENTRYINCIDENT_COLUMNS}",
        (incident_id, at, actor, kind, text, Jsonb(detail or {})),
    )
    row = await cur.fetchone()
    assert row is not None
    return _entry(row)


async def declare_incident(
    store: Store,
    *,
    severity: Severity,
    title: str,
    impact: str | None,
    declared_by: str,
    at: datetime,
    paged_levels: Collection[int] = (),
    impersonated_by: str | None = None,
    from_os_login: str | None = None,
) -> Incident:
    """Open an incident; `paged_levels` (the severity's notify levels) count as paged by the notice.
    `impersonated_by` is the admin who declared it acting as `declared_by` at a console,
    `from_os_login` that console's OS login."""
    title = check_title(title)
    impact = check_text(impact, what="impact") if impact is not None else None
    async with store.connection() as conn, conn.transaction():
        cur = await conn.execute(
            f"INSERT INTO incidents (severity, title, impact, declared_by, declared_at,"
            f" declared_impersonated_by, declared_from_os_login)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {INCIDENT_COLUMNS}",
            (severity, title, impact, declared_by, at, impersonated_by, from_os_login),
        )
        row = await cur.fetchone()
        assert row is not None
        incident = _incident(row)
        levels = sorted(set(paged_levels))
        detail = {"severity": severity, "impact": impact, "levels": levels}
        await _append(conn, incident.id, at=at, actor=declared_by, kind="declared", text=title, detail=detail)
        for level in levels:
            await conn.execute(
                "INSERT INTO incident_pages (incident_id, level, reason, due_at, claimed_by, claimed_at,"
                " paged_at) VALUES (%s, %s, 'declared', %s, %s, %s, %s)",
                (incident.id, level, at, declared_by, at, at),
            )
    return incident


async def get_incident(store: Store, incident_id: int) -> Incident:
    async with store.connection() as conn:
        cur = await conn.execute(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = %s", (incident_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("incident.not_found", incident=f"INC-{incident_id}")
    return _incident(row)


async def _refuse_change(store: Store, incident_id: int) -> Conflict:
    """Why a conditional change matched nothing: NotFound is raised, a Conflict returned."""
    current = await get_incident(store, incident_id)
    if current.status == "resolved":
        return Conflict("incident.already_resolved", incident=current.ref, by=current.resolved_by or "?")
    return Conflict("incident.already_acknowledged", incident=current.ref, by=current.acked_by or "?")


async def acknowledge_incident(
    store: Store,
    incident_id: int,
    *,
    by: str,
    at: datetime,
    impersonated_by: str | None = None,
    from_os_login: str | None = None,
) -> Incident:
    """The first acknowledgement holds it; a second, or one after resolve, is a Conflict.
    `impersonated_by` and `from_os_login` as for `declare_incident`."""
    async with store.connection() as conn, conn.transaction():
        cur = await conn.execute(
            f"UPDATE incidents SET status = 'acknowledged', acked_by = %s, acked_at = %s,"
            f" acked_impersonated_by = %s, acked_from_os_login = %s"
            f" WHERE id = %s AND status = 'open' RETURNING {INCIDENT_COLUMNS}",
            (by, at, impersonated_by, from_os_login, incident_id),
        )
        row = await cur.fetchone()
        if row is not None:
            await _append(conn, incident_id, at=at, actor=by, kind="acknowledged")
            return _incident(row)
    raise await _refuse_change(store, incident_id)


async def add_update(store: Store, incident_id: int, *, by: str, at: datetime, text: str) -> TimelineEntry:
    """A status update on an unresolved incident's timeline."""
    text = check_text(text, what="update")
    async with store.connection() as conn:
        cur = await conn.execute(
            f"INSERT INTO incident_timeline (incident_id, at, actor, kind, text)"
            f" SELECT id, %s, %s, 'update', %s FROM incidents WHERE id = %s AND status <> 'resolved'"
            f" RETURNING {_ENTRYINCIDENT_COLUMNS}",
            (at, by, text, incident_id),
        )
        row = await cur.fetchone()
    if row is not None:
        return _entry(row)
    raise await _refuse_change(store, incident_id)


async def resolve_incident(
    store: Store, incident_id: int, *, by: str, at: datetime, summary: str | None = None
) -> Incident:
    """Resolve once; the incident keeps its acknowledgement (or its lack of one) for the figures."""
    summary = check_text(summary, what="summary") if summary is not None else None
    async with store.connection() as conn, conn.transaction():
        cur = await conn.execute(
            f"UPDATE incidents SET status = 'resolved', resolved_by = %s, resolved_at = %s, summary = %s"
            f" WHERE id = %s AND status <> 'resolved' RETURNING {INCIDENT_COLUMNS}",
            (by, at, summary, incident_id),
        )
        row = await cur.fetchone()
        if row is not None:
            await _append(conn, incident_id, at=at, actor=by, kind="resolved", text=summary or "")
            return _incident(row)
    raise await _refuse_change(store, incident_id)


async def list_incidents(store: Store, *, limit: int = LIST_LIMIT) -> list[Incident]:
    """Unresolved first (most severe, then oldest), then the most recently resolved."""
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents"
            f" ORDER BY status = 'resolved',"
            f" CASE WHEN status <> 'resolved' THEN severity END,"
            f" CASE WHEN status <> 'resolved' THEN declared_at END,"
            f" resolved_at DESC NULLS LAST, id DESC LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
    return [_incident(row) for row in rows]


async def timeline(store: Store, incident_id: int) -> list[TimelineEntry]:
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_ENTRYINCIDENT_COLUMNS} FROM incident_timeline WHERE incident_id = %s ORDER BY at, id",
            (incident_id,),
        )
        rows = await cur.fetchall()
    return [_entry(row) for row in rows]


async def note(
    store: Store,
    incident_id: int,
    *,
    at: datetime,
    actor: str,
    kind: TimelineKind,
    text: str = "",
    detail: dict[str, Any] | None = None,
) -> TimelineEntry:
    """Any other line on the timeline: a notice or mail that failed, a channel opened."""
    async with store.connection() as conn:
        return await _append(conn, incident_id, at=at, actor=actor, kind=kind, text=text, detail=detail)


async def note_action(
    store: Store,
    *,
    at: datetime,
    actor: str,
    command: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> int:
    """A bot action (restore, restart…) on the timeline of every unresolved incident; how many."""
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO incident_timeline (incident_id, at, actor, kind, text, detail)"
            " SELECT id, %s, %s, 'action', %s, %s FROM incidents"
            " WHERE status <> 'resolved' AND declared_at <= %s",
            (at, actor, command, Jsonb({"outcome": outcome, **(detail or {})}), at),
        )
        return cur.rowcount


async def remember_notice(store: Store, incident_id: int, message_ref: dict[str, Any]) -> None:
    await _set_json(store, incident_id, "message_ref", message_ref)


async def remember_channel(store: Store, incident_id: int, channel_ref: dict[str, Any]) -> None:
    await _set_json(store, incident_id, "channel_ref", channel_ref)


async def _set_json(store: Store, incident_id: int, column: str, value: dict[str, Any]) -> None:
    assert column in ("message_ref", "channel_ref")
    async with store.connection() as conn:
        await conn.execute(
            f"UPDATE incidents SET {column} = %s WHERE id = %s",  # column is one of two constants
            (Jsonb(value), incident_id),
        )


async def save_postmortem(store: Store, incident_id: int, markdown: str) -> None:
    async with store.connection() as conn:
        cur = await conn.execute(
            "UPDATE incidents SET postmortem = %s WHERE id = %s", (markdown, incident_id)
        )
    if cur.rowcount == 0:
        raise NotFound("incident.not_found", incident=f"INC-{incident_id}")
