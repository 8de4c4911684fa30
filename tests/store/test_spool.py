"""The local audit spool: durable lines, one drainer at a time, and replay into the real store."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from store import db
from store.audit import AuditLog, AuditRecord
from store.db import Conn, Store
from store.spool import AuditSpool

KEY = b"k" * 32
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/x"


class CountingStore(Store):
    """A store that counts how often a connection was asked for."""

    attempts = 0

    @asynccontextmanager
    async def connection(self, *, bound: float | None = None) -> AsyncIterator[Conn]:
        self.attempts += 1
        async with super().connection(bound=bound) as conn:
            yield conn


@pytest.fixture
async def down_store(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CountingStore]:
    monkeypatch.setattr(db, "POOL_TIMEOUT_S", 0.2)  # fail fast: nothing listens on port 1
    store = CountingStore(CLOSED_PORT_URL)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def a_record(n: int, **overrides: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "correlation_id": f"c{n}",
        "source": "console",
        "actor": "テスト太郎",
        "command": "health",
        "event": "requested",
        "outcome": "succeeded",
        "args": {"n": n},
    }
    fields.update(overrides)
    return AuditRecord.new(**fields)


async def spool_while_down(
    down_store: Store, spool: Path, count: int, *, retry_after_s: float = 3600
) -> list[AuditRecord]:
    log = AuditLog(down_store, spool, key=KEY, retry_after_s=retry_after_s)
    records = [a_record(n) for n in range(count)]
    for rec in records:
        await log.record(rec)
    return records


async def stored_record_ids(store: Store) -> list[str]:
    async with store.connection() as conn:
        cur = await conn.execute("SELECT record_id::text AS r FROM audit_log ORDER BY id")
        return [str(row["r"]) for row in await cur.fetchall()]


# --- the spool file on its own ---


async def test_appended_lines_are_counted_and_private(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "sub" / "audit.spool")

    await spool.append({"name": "テスト太郎"})
    await spool.append({"n": 2})

    assert spool.count() == 2
    assert "テスト太郎" in spool.path.read_text(encoding="utf-8")
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600


async def test_taking_a_missing_spool_creates_nothing(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit.spool")

    async with spool.taken() as batch:
        assert batch.lines == []
        batch.clear()

    assert not spool.path.exists()
    assert spool.count() == 0


async def test_an_append_during_a_drain_does_not_wait_for_it_and_survives_its_clear(tmp_path: Path) -> None:
    # A drain may sit on a hanging store for as long as the store's bound: appends never wait on it.
    spool = AuditSpool(tmp_path / "audit.spool")
    await spool.append({"n": 1})

    async with spool.taken() as batch:
        await asyncio.wait_for(spool.append({"n": 2}), timeout=5)
        assert batch.lines == [{"n": 1}]
        batch.clear()

    async with spool.taken() as batch:
        assert batch.lines == [{"n": 2}]


async def test_a_second_drainer_finds_the_spool_busy_and_takes_nothing(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit.spool")
    await spool.append({"n": 1})

    async with spool.taken() as first:
        async with AuditSpool(spool.path).taken() as second:
            assert (second.busy, second.lines) == (True, [])
            second.clear()
        first.clear()

    assert spool.count() == 0


async def test_a_record_while_a_drain_hangs_on_the_store_is_spooled_within_five_seconds(
    down_store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    await spool_while_down(down_store, spool, 2)
    log = AuditLog(down_store, spool, key=KEY, retry_after_s=0)

    async with log.spool.taken() as stuck:  # a drain that holds the spool, stuck on its store
        assert len(stuck.lines) == 2
        await asyncio.wait_for(log.record(a_record(3)), timeout=5)

    assert log.spooled() == 3


async def test_half_a_line_from_a_crash_is_kept_aside(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit.spool")
    spool.path.write_bytes(b'{"n": 1}\n{"n": 2, "cut')

    await spool.append({"n": 3})
    async with spool.taken() as batch:
        assert batch.lines == [{"n": 1}, {"n": 3}]
        assert batch.unreadable == [b'{"n": 2, "cut']
        batch.clear()

    assert spool.count() == 0
    assert spool.rejected_path.read_bytes() == b'{"n": 2, "cut\n'


# --- the audit log with the store down and back ---


async def test_store_down_records_go_to_the_spool(down_store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "audit.spool"

    await spool_while_down(down_store, spool, 3, retry_after_s=0)  # every one tries the store

    assert AuditLog(down_store, spool, key=KEY).spooled() == 3
    assert len(spool.read_text(encoding="utf-8").splitlines()) == 3


async def test_after_a_failure_records_spool_without_waiting_on_the_store(
    down_store: CountingStore, tmp_path: Path
) -> None:
    log = AuditLog(down_store, tmp_path / "audit.spool", key=KEY, retry_after_s=3600)

    await log.record(a_record(1))
    await log.record(a_record(2))

    assert down_store.attempts == 1
    assert log.spooled() == 2


async def test_spooled_secrets_are_masked(down_store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "audit.spool"
    log = AuditLog(down_store, spool, key=KEY, retry_after_s=0)

    await log.record(
        a_record(1, args={"password": "hunter2", "target": "postgresql://u:s3cret@db/garden_dx"})
    )

    text = spool.read_text(encoding="utf-8")
    assert "hunter2" not in text
    assert "s3cret" not in text


async def test_drain_writes_spooled_records_once_in_order(
    down_store: Store, store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    records = await spool_while_down(down_store, spool, 4)
    log = AuditLog(store, spool, key=KEY)

    written = await log.drain_spool()
    again = await log.drain_spool()

    assert (written, again) == (4, 0)
    assert await stored_record_ids(store) == [str(r.record_id) for r in records]
    assert log.spooled() == 0
    assert (await log.verify()).ok


async def test_record_drains_older_spooled_records_first(
    down_store: Store, store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    spooled = await spool_while_down(down_store, spool, 2)
    log = AuditLog(store, spool, key=KEY)
    fresh = a_record(99)

    await log.record(fresh)

    assert await stored_record_ids(store) == [str(r.record_id) for r in [*spooled, fresh]]
    assert log.spooled() == 0
    assert (await log.verify()).ok


async def test_redrain_after_a_crash_halfway_writes_no_duplicates(
    down_store: Store, store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    records = await spool_while_down(down_store, spool, 4)
    # the crashed drain had stored the first half but not yet emptied the spool
    first_drain = AuditLog(store, tmp_path / "other.spool", key=KEY)
    for rec in records[:2]:
        await first_drain.record(rec)
    log = AuditLog(store, spool, key=KEY)

    written = await log.drain_spool()

    assert written == 2
    assert await stored_record_ids(store) == [str(r.record_id) for r in records]
    assert (await log.verify()).ok


async def test_two_drainers_at_once_write_each_record_once(
    down_store: Store, store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    records = await spool_while_down(down_store, spool, 5)

    results = await asyncio.gather(
        AuditLog(store, spool, key=KEY).drain_spool(), AuditLog(store, spool, key=KEY).drain_spool()
    )

    assert sorted(results) == [0, 5]
    assert await stored_record_ids(store) == [str(r.record_id) for r in records]


async def test_a_record_whose_caller_is_cancelled_while_the_spool_is_locked_is_still_spooled(
    down_store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    log = AuditLog(down_store, spool, key=KEY, retry_after_s=3600)
    await log.record(a_record(1))  # the store is down: spooled, and the next ones go straight there
    holder = os.open(spool, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process busy with the spool for a moment
        caller = asyncio.create_task(log.record(a_record(2)))
        await asyncio.sleep(0.1)
        caller.cancel()  # e.g. the command's work bound passed
        with contextlib.suppress(asyncio.CancelledError):
            await caller
    finally:
        os.close(holder)  # releases the lock

    async with asyncio.timeout(5):
        while log.spooled() < 2:
            await asyncio.sleep(0.02)
