"""store/escalation.py on a real PostgreSQL with an injected clock: each level paged once, across
replicas and restarts; a failed page is retried after its lease and said once on the timeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.config import Settings
from core.incidents import Incident, Page
from store.db import Store
from store.escalation import PAGE_LEASE, claim_page, escalation_tick
from store.incidents import acknowledge_incident, declare_incident, resolve_incident, timeline
from tests.support.servers import throwaway_database

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
SETTINGS = Settings(
    escalation={"level1": ["U0OPS"], "level2": ["U0ADMIN"], "level3": ["U0LEAD"], "level4": ["U0ARCH"]}
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Pager:
    """Records the pages it is asked to make; fails the first `fail` of them."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.made: list[tuple[int, int, str]] = []
        self.fail = fail
        self.delay = delay

    async def __call__(self, page: Page) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Slack is down")
        self.made.append((page.incident_id, page.level, page.reason))


@pytest.fixture
async def database() -> AsyncIterator[str]:
    with throwaway_database() as url:
        first = Store(url, max_size=2)
        await first.open()
        await first.migrate()
        await first.close()
        yield url


async def opened(url: str) -> Store:
    store = Store(url, max_size=4)
    await store.open()
    return store


async def declare(store: Store, severity: str) -> Incident:
    levels = {"P1": (1, 2, 3), "P2": (1, 2), "P3": (1,), "P4": (1,)}[severity]
    return await declare_incident(
        store,
        severity=severity,  # type: ignore[arg-type]
        title="API down",
        impact=None,
        declared_by="U0OPS",
        at=T0,
        paged_levels=levels,
    )


async def test_two_replicas_ticking_at_once_page_each_level_once(database: str) -> None:
    one, two = await opened(database), await opened(database)
    try:
        p1 = await declare(one, "P1")
        p3 = await declare(one, "P3")
        pager_one, pager_two = Pager(delay=0.05), Pager(delay=0.05)

        for minute in (15, 16, 31, 45, 240, 241):
            await asyncio.gather(
                escalation_tick(one, at(minute), SETTINGS, pager_one, claimant="replica-1"),
                escalation_tick(two, at(minute), SETTINGS, pager_two, claimant="replica-2"),
            )
    finally:
        await one.close()
        await two.close()

    made = sorted(pager_one.made + pager_two.made)
    assert made == sorted(
        [(p1.id, 4, "unacknowledged"), (p3.id, 3, "unresolved"), (p3.id, 2, "unacknowledged")]
    )


async def test_a_restart_mid_window_keeps_the_schedule(database: str) -> None:
    before = await opened(database)
    pager = Pager()
    incident = await declare(before, "P3")
    assert await escalation_tick(before, at(29), SETTINGS, pager) == []
    await before.close()  # the bot stops inside the 30-minute window...

    after = await opened(database)  # ...and a new process starts, with nothing in memory
    try:
        late_tick = await escalation_tick(after, at(30.5), SETTINGS, pager)
        assert [(p.level, p.reason, p.due_at) for p in late_tick] == [(3, "unresolved", at(30))]
        assert await escalation_tick(after, at(31), SETTINGS, pager) == []  # level 3 stays paged
        await acknowledge_incident(after, incident.id, by="U0OPS", at=at(100))
        assert await escalation_tick(after, at(240), SETTINGS, pager) == []  # acknowledged in time
        entries = await timeline(after, incident.id)
    finally:
        await after.close()
    assert pager.made == [(incident.id, 3, "unresolved")]
    paged = [e for e in entries if e.kind == "paged"]
    assert [(e.at, e.actor, e.text, e.detail["reason"]) for e in paged] == [
        (at(30.5), "scheduler", "level3", "unresolved")
    ]


async def test_a_failed_page_is_noted_once_and_retried_after_its_lease(database: str) -> None:
    store = await opened(database)
    try:
        incident = await declare(store, "P1")
        pager = Pager(fail=2)
        assert await escalation_tick(store, at(15), SETTINGS, pager) == []  # fails: claimed, not paged
        assert await escalation_tick(store, at(15.5), SETTINGS, pager) == []  # within the lease: left
        retry = at(15) + PAGE_LEASE
        assert await escalation_tick(store, retry, SETTINGS, pager) == []  # fails again
        made = await escalation_tick(store, retry + PAGE_LEASE, SETTINGS, pager)
        entries = await timeline(store, incident.id)
    finally:
        await store.close()
    assert [(p.level, p.reason) for p in made] == [(4, "unacknowledged")]
    assert pager.made == [(incident.id, 4, "unacknowledged")]
    failures = [e for e in entries if e.kind == "page_failed"]
    assert [(e.at, e.detail["error"]) for e in failures] == [(at(15), "ConnectionError")]
    assert [e.kind for e in entries].count("paged") == 1


async def test_a_claimer_that_died_leaves_the_page_to_another_after_the_lease(database: str) -> None:
    store = await opened(database)
    try:
        incident = await declare(store, "P1")
        page = Page(incident.id, 4, "unacknowledged", at(15))
        assert await claim_page(store, page, now=at(15), claimant="dead-replica") == 1  # then it crashed

        pager = Pager()
        assert await escalation_tick(store, at(16), SETTINGS, pager, claimant="alive") == []
        later = at(15) + PAGE_LEASE
        made = await escalation_tick(store, later, SETTINGS, pager, claimant="alive")
    finally:
        await store.close()
    assert [p.level for p in made] == [4]
    assert pager.made == [(incident.id, 4, "unacknowledged")]


async def test_an_incident_acknowledged_after_the_read_is_not_paged_as_unacknowledged(database: str) -> None:
    store = await opened(database)
    try:
        incident = await declare(store, "P1")
        owed = Page(incident.id, 4, "unacknowledged", at(15))
        await acknowledge_incident(store, incident.id, by="U0OPS", at=at(15))
        claimed = await claim_page(store, owed, now=at(15), claimant="me")
        await resolve_incident(store, incident.id, by="U0OPS", at=at(20))
        later = Page(incident.id, 3, "unresolved", at(30))
        unresolved = await claim_page(store, later, now=at(30), claimant="me")
    finally:
        await store.close()
    assert (claimed, unresolved) == (None, None)


async def test_a_resolved_incident_is_never_paged(database: str) -> None:
    store = await opened(database)
    try:
        incident = await declare(store, "P1")
        await resolve_incident(store, incident.id, by="U0OPS", at=at(3))
        pager = Pager()
        made: list[Any] = []
        for minute in (15, 30, 60, 1440):
            made += await escalation_tick(store, at(minute), SETTINGS, pager)
    finally:
        await store.close()
    assert made == [] and pager.made == []
