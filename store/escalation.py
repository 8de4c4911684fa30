"""The escalation tick: page every level that is due, once, across replicas and restarts.

The scheduler calls `escalation_tick` every few seconds with the time; it reads the unresolved
incidents and the levels already paged, asks core.incidents.due_pages what is owed, and claims each
page with INSERT … ON CONFLICT on (incident, level) before making it. Two replicas ticking at once
claim a page once; a bot restarted mid-window finds the same incidents, deadlines and pages in the
store. A claim whose page was not made (the claimer died, or `page` raised) may be claimed again
once its lease has passed, so a Slack outage delays a page rather than losing it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from core.config import Settings
from core.incidents import Incident, Page, due_pages
from store.db import Store
from store.incidents import INCIDENT_COLUMNS, note

log = logging.getLogger(__name__)

PAGE_LEASE = timedelta(minutes=2)  # a claimed page not made within this may be claimed again

# Makes one page (Slack mentions, mail); raises only when nothing went out, so it is retried.
Pager = Callable[[Page], Awaitable[None]]


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def unresolved_with_pages(store: Store) -> list[tuple[Incident, set[int]]]:
    """Every unresolved incident with the levels already paged for it."""
    columns = ", ".join(f"i.{c.strip()}" for c in INCIDENT_COLUMNS.split(","))
    async with store.connection() as conn:
        cur = await conn.execute(
            f"SELECT {columns}, coalesce(array_agg(p.level) FILTER (WHERE p.paged_at IS NOT NULL),"
            f" '{{}}') AS paged FROM incidents i LEFT JOIN incident_pages p ON p.incident_id = i.id"
            f" WHERE i.status <> 'resolved' GROUP BY i.id ORDER BY i.declared_at"
        )
        rows = await cur.fetchall()
    found: list[tuple[Incident, set[int]]] = []
    for row in rows:
        paged: list[int] = row.pop("paged")
        found.append((Incident(**row), set(paged)))
    return found


async def claim_page(
    store: Store, page: Page, *, now: datetime, claimant: str, lease: timedelta = PAGE_LEASE
) -> int | None:
    """Claim the page for this process; its attempt number, or None when it is not ours to make.

    Not ours: already paged, claimed by someone else within the lease, or the incident moved on
    (resolved; acknowledged, for an unacknowledged page) since it was read.
    """
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO incident_pages (incident_id, level, reason, due_at, claimed_by, claimed_at)"
            " SELECT id, %s, %s, %s, %s, %s FROM incidents WHERE id = %s AND status <> 'resolved'"
            "  AND (%s <> 'unacknowledged' OR status = 'open')"
            " ON CONFLICT (incident_id, level) DO UPDATE"
            "  SET claimed_by = EXCLUDED.claimed_by, claimed_at = EXCLUDED.claimed_at,"
            "   attempts = incident_pages.attempts + 1"
            "  WHERE incident_pages.paged_at IS NULL"
            "   AND incident_pages.claimed_at <= EXCLUDED.claimed_at - %s::interval"
            " RETURNING attempts",
            (page.level, page.reason, page.due_at, claimant, now, page.incident_id, page.reason, lease),
        )
        row = await cur.fetchone()
    return int(row["attempts"]) if row is not None else None


async def mark_paged(store: Store, page: Page, *, now: datetime, claimant: str) -> None:
    """Record the page as made, and say so on the incident's timeline."""
    async with store.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE incident_pages SET paged_at = %s WHERE incident_id = %s AND level = %s",
            (now, page.incident_id, page.level),
        )
        await conn.execute(
            "INSERT INTO incident_timeline (incident_id, at, actor, kind, text, detail)"
            " VALUES (%s, %s, 'scheduler', 'paged', %s, %s)",
            (page.incident_id, now, f"level{page.level}", _page_detail(page, claimant)),
        )


def _page_detail(page: Page, claimant: str) -> Jsonb:
    return Jsonb(
        {
            "level": page.level,
            "reason": page.reason,
            "due_at": page.due_at.isoformat(),
            "contacts": [c.name for c in page.contacts],
            "by": claimant,
        }
    )


async def escalation_tick(
    store: Store,
    now: datetime,
    settings: Settings,
    page: Pager,
    *,
    claimant: str | None = None,
    lease: timedelta = PAGE_LEASE,
) -> list[Page]:
    """Make every page due at `now` that no one else has made; the pages this call made."""
    claimant = claimant or this_process()
    made: list[Page] = []
    for incident, paged in await unresolved_with_pages(store):
        for owed in due_pages(incident, paged, now, settings):
            attempt = await claim_page(store, owed, now=now, claimant=claimant, lease=lease)
            if attempt is None:
                continue
            if await _make_page(store, owed, page, now=now, attempt=attempt):
                await mark_paged(store, owed, now=now, claimant=claimant)
                made.append(owed)
    return made


async def _make_page(store: Store, owed: Page, page: Pager, *, now: datetime, attempt: int) -> bool:
    try:
        await page(owed)
    except Exception as exc:  # one failing page must not stop the others; it is retried after the lease
        log.warning("paging level %s for INC-%s failed: %s", owed.level, owed.incident_id, type(exc).__name__)
        if attempt == 1:  # the timeline says so once, not on every retry
            detail = {"level": owed.level, "reason": owed.reason, "error": type(exc).__name__}
            await note(
                store,
                owed.incident_id,
                at=now,
                actor="scheduler",
                kind="page_failed",
                text=f"level{owed.level}",
                detail=detail,
            )
        return False
    return True
