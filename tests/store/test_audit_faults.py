"""The audit append under faults, against the real PostgreSQL: a writer whose caller gives up, a
statement the server commits after the client's bound, write tasks cancelled as at shutdown, a batch
the store refuses part of, two AuditLogs and two real processes appending at once.

Each test ends the same way: every record is in the log exactly once (the spool drained, as the
next record or a restart would), and the chain verifies.

A hanging write is made for real: another session holds an uncommitted row linked to the newest
hash, so the append's INSERT waits on the one-successor index until that session ends. Committing
that row makes the waiting INSERT fail on the server; rolling it back lets the server commit the
INSERT, after the client may have given up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.errors import StoreUnavailable
from store import audit as audit_module
from store.audit import AuditLog, AuditRecord, canonical_json, prepared
from store.db import QUERY_BOUND_S, Store
from store.spool import AuditSpool
from tests.store.test_audit import KEY, a_record
from tests.support.pg_rounds import counting_round_trips
from tests.support.serve import PrivatePostgres

WAITING_INSERT = (
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE 'WITH head AS%%'"
)


async def stored_ids(store: Store) -> list[uuid.UUID]:
    async with store.connection() as conn:
        cur = await conn.execute("SELECT record_id FROM audit_log ORDER BY id")
        return [row["record_id"] for row in await cur.fetchall()]


async def waiting_inserts(store: Store) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(WAITING_INSERT)
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def until(check: Any, timeout: float = 20.0) -> None:
    """Wait for `check()` to be true; a store still given only its short bound after a fault
    counts as not yet."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(StoreUnavailable):
                if await check():
                    return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def another_append_in_flight(
    store: Store, rec: AuditRecord
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Another writer's row linked to the newest hash, inserted and not yet committed: an append
    from here waits on it. Commit or roll back the yielded connection to end it."""
    async with store.connection() as conn:
        cur = await conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
        row = await cur.fetchone()
    head = str(row["hash"]) if row else audit_module.GENESIS_HASH
    rows, _ = audit_module._chained([prepared(rec)], head, KEY)
    blocker = await psycopg.AsyncConnection.connect(store.dsn)
    try:
        await blocker.execute(
            f"INSERT INTO audit_log ({audit_module.INSERT_COLUMNS})"
            f" VALUES ({audit_module._ROW_PLACEHOLDERS})",
            rows[0],
        )
        yield blocker
    finally:
        await blocker.close()  # rolls back whatever the test left open


async def assert_each_once_and_intact(audit: AuditLog, store: Store, records: list[AuditRecord]) -> None:
    ids = await stored_ids(store)
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert set(ids) == {r.record_id for r in records}, "a record is missing (or one is unexpected)"
    result = await audit.verify()
    assert (result.ok, result.checked) == (True, len(records)), result


async def test_a_record_whose_caller_gave_up_while_the_store_hung_is_kept_when_the_write_fails(
    store: Store, tmp_path: Path
) -> None:
    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY, retry_after_s=0)
    first, theirs, mine = a_record(1), a_record(2), a_record(3)
    await audit.record(first)

    async with another_append_in_flight(store, theirs) as other:
        caller = asyncio.create_task(audit.record(mine))
        await until(lambda: waiting_inserts(store))
        caller.cancel()  # e.g. the command's work bound passed
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        await asyncio.sleep(QUERY_BOUND_S + 1)  # the write hits the store's bound and fails
        await other.commit()  # and the server refuses the INSERT it still held: one successor
    await until(lambda: _none_waiting(store))
    await until(store.is_reachable)  # after a bound was hit the store is given 0.5 s a use

    await audit.drain_spool()  # as the next record (or a restart) would
    await assert_each_once_and_intact(audit, store, [first, theirs, mine])


async def _exists(path: Path) -> bool:
    return path.exists()


async def _stored(store: Store, rec: AuditRecord) -> bool:
    return rec.record_id in await stored_ids(store)


async def _none_waiting(store: Store) -> bool:
    return await waiting_inserts(store) == 0


async def test_a_write_the_server_commits_after_the_client_gave_up_is_stored_once(
    store: Store, tmp_path: Path
) -> None:
    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY, retry_after_s=0)
    first, theirs, late, after = a_record(1), a_record(2), a_record(3), a_record(4)
    await audit.record(first)

    async with another_append_in_flight(store, theirs) as other:
        await audit.record(late)  # gives up after its bound: the record is spooled
        assert audit.spooled() == 1
        await other.rollback()  # the server now commits the INSERT nobody waits for
    await until(lambda: _stored(store, late))  # in the table, and in the spool
    await until(store.is_reachable)  # after a bound was hit the store is given 0.5 s a use

    await audit.record(after)  # drains the spool first (the late one is skipped), then appends
    assert audit.spooled() == 0
    await assert_each_once_and_intact(audit, store, [first, late, after])


async def test_write_tasks_cancelled_as_at_shutdown_leave_every_record_in_the_spool(
    store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "audit.spool"
    audit = AuditLog(store, spool, key=KEY, retry_after_s=0)
    first, theirs = a_record(0), a_record(999)
    await audit.record(first)
    records = [a_record(n) for n in range(1, 41)]

    async with another_append_in_flight(store, theirs) as other:
        callers = [asyncio.create_task(audit.record(rec)) for rec in records]
        await until(lambda: waiting_inserts(store))
        # What asyncio.run does when the process stops: every task is cancelled, writers included
        # (the pool's own workers are left running, so that this test can look at the log after).
        for task in asyncio.all_tasks():
            if task.get_coro().__qualname__.startswith("AuditLog."):  # type: ignore[union-attr]
                task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await other.commit()  # the batch in flight is refused by the server
    await until(lambda: _none_waiting(store))

    restarted = AuditLog(store, spool, key=KEY)  # the next process's start drains the spool
    await restarted.drain_spool()
    await assert_each_once_and_intact(restarted, store, [first, theirs, *records])


async def test_a_record_the_store_refuses_fails_alone_and_the_rest_of_its_batch_is_written(
    store: Store, tmp_path: Path
) -> None:
    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY)
    async with store.connection() as conn:
        await conn.execute(
            "ALTER TABLE audit_log ADD CONSTRAINT test_no_refused CHECK (actor <> 'refused') NOT VALID"
        )
    records = [a_record(n, actor="refused" if n == 7 else "U0OPS") for n in range(20)]

    outcomes = await asyncio.gather(*(audit.record(rec) for rec in records), return_exceptions=True)

    failed = [n for n, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [7]
    assert isinstance(outcomes[7], psycopg.errors.CheckViolation)
    await assert_each_once_and_intact(audit, store, [r for n, r in enumerate(records) if n != 7])
    assert audit.spooled() == 0


async def test_two_logs_in_one_process_with_callers_cancelled_midway_lose_nothing(
    store: Store, tmp_path: Path
) -> None:
    other_store = Store(store.dsn, max_size=5)
    await other_store.open()
    try:
        logs = [
            AuditLog(store, tmp_path / "a.spool", key=KEY, retry_after_s=0),
            AuditLog(other_store, tmp_path / "b.spool", key=KEY, retry_after_s=0),
        ]
        records = [a_record(n) for n in range(300)]
        callers = [asyncio.create_task(logs[n % 2].record(rec)) for n, rec in enumerate(records)]
        await asyncio.sleep(0.05)
        for task in callers[::7]:
            task.cancel()  # their callers give up; the records must still end up stored
        await asyncio.gather(*callers, return_exceptions=True)
        await until(lambda: _no_writes_pending(logs))
        for log in logs:
            await log.drain_spool()
        await assert_each_once_and_intact(logs[0], store, records)
    finally:
        await other_store.close()


async def _no_writes_pending(logs: list[AuditLog]) -> bool:
    return not any(log._waiting or log._appending.locked() or log._pending_writes for log in logs)


CHILD = """
import asyncio, sys
from pathlib import Path
from core.errors import StoreUnavailable
from store.audit import AuditLog, AuditRecord
from store.db import Store

async def main(dsn, spool, tag, count):
    store = Store(dsn, max_size=5)
    await store.open()
    log = AuditLog(store, Path(spool), key=b"k" * 32)
    records = [
        AuditRecord.new(correlation_id=f"{tag}{n}", source="console", actor="U0OPS", command="health",
                        event="requested", outcome="succeeded", args={"n": n, "big": 2**70})
        for n in range(count)
    ]
    Path(spool + ".started").touch()
    calls = []
    for wave in range(0, count, 10):  # waves of 10 for about a second: long enough to be stopped in
        calls += [asyncio.ensure_future(log.record(rec)) for rec in records[wave : wave + 10]]
        await asyncio.sleep(0.03)
    await asyncio.gather(*calls)
    Path(spool + ".burst_done").write_text(str(log.spooled()))
    for _ in range(300):  # after a fault the store may need a moment before the drain goes through
        try:
            await log.drain_spool()
        except StoreUnavailable:
            await asyncio.sleep(0.1)
            continue
        if log.spooled() == 0:
            break
        await asyncio.sleep(0.1)
    await store.close()
    print("\\n".join(str(rec.record_id) for rec in records))

asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
"""


@pytest.mark.parametrize("stop_one", [False, True], ids=["running", "one_sigstopped"])
async def test_two_processes_appending_bursts_at_once_lose_nothing_and_write_nothing_twice(
    store: Store, tmp_path: Path, stop_one: bool
) -> None:
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            store.dsn,
            str(tmp_path / f"{tag}.spool"),
            tag,
            "200",
            stdout=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    talking = asyncio.gather(*(child.communicate() for child in children))
    if stop_one:  # a replica stopped mid-burst (a long GC pause, a starved VM) past its bounds
        started = tmp_path / "a.spool.started"
        await until(lambda: _exists(started))
        await asyncio.sleep(0.2)
        os.kill(children[0].pid, signal.SIGSTOP)
        assert not (tmp_path / "a.spool.burst_done").exists(), "stopped too late: the burst was over"
        await asyncio.sleep(QUERY_BOUND_S + 1)
        os.kill(children[0].pid, signal.SIGCONT)
    outputs = await talking
    assert [child.returncode for child in children] == [0, 0]
    written = [uuid.UUID(line) for out, _ in outputs for line in out.decode().split()]
    assert len(written) == 400

    ids = await stored_ids(store)
    assert len(ids) == len(set(ids)) == 400
    assert set(ids) == set(written)
    result = await AuditLog(store, tmp_path / "check.spool", key=KEY).verify()
    assert (result.ok, result.checked) == (True, 400), result


AWKWARD_WITHOUT_FLOATS: list[Any] = [
    {"big": 2**70, "negative": -(2**63) - 1, "huge": 10**300, "zero": 0, "minus_zero": -0},
    {"control": "".join(chr(c) for c in range(1, 32)) + "\x7f", "quote": '"\\/', "sep": "\u2028\u2029"},
    {"unicode": "二 テスト 🌱 \U0001f600 é é", "escaped_key\t": True, "": None, "ключ": False},
    {"nested": [[], {}, [{"b": 1, "a": [1, "2", None]}], {"z": {"y": {"x": []}}}]},
    {"keys": {"b": 1, "a": 2, "aa": 3, "B": 4, "é": 5, "e": 6, "10": 7, "9": 8}},
    {"dup_after_cleaning": {"a\x00": 1, "a\ufffd": 2}, 3: "int key", "3": "str key"},
    {"surrogate": "\ud800x", "nul": "a\x00b"},
]


@pytest.mark.parametrize("args", AWKWARD_WITHOUT_FLOATS, ids=range(len(AWKWARD_WITHOUT_FLOATS)))
async def test_json_hashed_locally_is_what_jsonb_gives_back(store: Store, tmp_path: Path, args: Any) -> None:
    # Without floats the hash is computed without asking PostgreSQL: that is only right if jsonb
    # gives back exactly the canonical JSON that was hashed.
    rec = prepared(a_record(1, args=args, detail={"d": args}))
    async with store.connection() as conn:
        cur = await conn.execute(
            "SELECT %s::jsonb AS args, %s::jsonb AS detail",
            (canonical_json(rec.args), canonical_json(rec.detail)),
        )
        row = await cur.fetchone()
    assert row is not None
    assert canonical_json(row["args"]) == canonical_json(rec.args)
    assert canonical_json(row["detail"]) == canonical_json(rec.detail)

    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY)
    await audit.record(a_record(1, args=args, detail={"d": args}))
    assert (await audit.verify()).ok


@pytest.mark.parametrize(
    "value",
    [-0.0, 0.1, 1e20, 1e-7, 5e-324, 1.7976931348623157e308, 123456789.123456789, 1.0, -1.5e-300, 2.0**70],
)
async def test_floats_hash_as_postgresql_stores_them(store: Store, tmp_path: Path, value: float) -> None:
    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY)
    await audit.record(a_record(1, args={"f": value, "list": [value, {"g": value}]}))
    await audit.record(a_record(2, args={"f": value}))  # the next one links to it
    result = await audit.verify()
    assert (result.ok, result.checked) == (True, 2), result
    assert json.loads(canonical_json((await audit.entries())[0].args))["f"] == pytest.approx(value, abs=0)


async def test_two_logs_bursting_while_the_store_is_frozen_and_thawed_lose_nothing(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    # SIGSTOP the server under a burst from two logs (two replicas): statements in flight hang until
    # the client's bound, then the records are spooled; after the thaw every record is there once.
    stores = [Store(private_pg.url, max_size=5), Store(private_pg.url, max_size=5)]
    for one in stores:
        await one.open()
    try:
        await stores[0].migrate()
        logs = [
            AuditLog(one, tmp_path / f"{n}.spool", key=KEY, retry_after_s=0.2) for n, one in enumerate(stores)
        ]
        records = [a_record(n) for n in range(200)]
        callers = [asyncio.create_task(logs[n % 2].record(rec)) for n, rec in enumerate(records)]
        await asyncio.sleep(0.1)
        private_pg.freeze()
        try:
            await asyncio.sleep(QUERY_BOUND_S + 1)
        finally:
            private_pg.thaw()
        assert [r for r in await asyncio.gather(*callers, return_exceptions=True) if r is not None] == []
        await until(lambda: _no_writes_pending(logs), timeout=60)

        async def drained() -> bool:
            try:
                return all([await log.drain_spool() >= 0 and log.spooled() == 0 for log in logs])
            except StoreUnavailable:
                return False

        await until(drained, timeout=60)
        assert sum(log.spooled() for log in logs) == 0
        await assert_each_once_and_intact(logs[0], stores[0], records)
    finally:
        for one in stores:
            await one.close()


async def test_draining_a_full_chunk_of_the_spool_takes_a_few_round_trips_not_one_per_record(
    store: Store, tmp_path: Path
) -> None:
    # Each use of a connection must finish within the store's bound (3 s; 0.5 s right after a
    # failure). A drain that spends a round trip or two per record in one use cannot finish over a
    # link of a few milliseconds, and then the spool never empties: every record after it is spooled.
    spool = tmp_path / "audit.spool"
    records = [a_record(n) for n in range(audit_module.DRAIN_CHUNK)]
    for rec in [*records, records[3]]:  # a record spooled twice (a write that timed out, then failed)
        await AuditSpool(spool).append(audit_module.record_as_json(prepared(rec)))
    await AuditLog(store, tmp_path / "other.spool", key=KEY).record(records[5])  # one already stored

    with counting_round_trips() as relay:
        relayed = Store(relay.dsn(store.dsn), max_size=2)
        await relayed.open()
        try:
            audit = AuditLog(relayed, spool, key=KEY)
            await relayed.is_reachable()  # the pool's first connection, not counted
            before = relay.counts()
            assert await audit.drain_spool() == len(records) - 1
            used = relay.counts() - before
        finally:
            await relayed.close()

    assert used.round_trips <= 10, used
    await assert_each_once_and_intact(AuditLog(store, spool, key=KEY), store, records)


async def test_fields_of_the_wrong_json_type_are_hashed_as_the_columns_store_them(
    store: Store, tmp_path: Path
) -> None:
    # The hash is of the record as given; verify hashes the row as read back. A number where text
    # belongs comes back as text, and True where the duration belongs comes back as 1.
    audit = AuditLog(store, tmp_path / "audit.spool", key=KEY)
    odd: Any = {"correlation_id": 12, "channel": 34, "approver": 5.0}
    await audit.record(a_record(1, duration_ms=True, **odd))
    await audit.record(a_record(2))

    result = await audit.verify()
    assert (result.ok, result.checked) == (True, 2), result


async def test_a_spooled_record_the_store_refuses_is_kept_aside_and_the_spool_still_drains(
    store: Store, tmp_path: Path
) -> None:
    # A record refused for itself must not stop every later drain (and with it every later record).
    async with store.connection() as conn:
        await conn.execute(
            "ALTER TABLE audit_log ADD CONSTRAINT test_no_refused CHECK (actor <> 'refused') NOT VALID"
        )
    spool = tmp_path / "audit.spool"
    records = [a_record(n, actor="refused" if n == 2 else "U0OPS") for n in range(5)]
    for rec in records:
        await AuditSpool(spool).append(audit_module.record_as_json(prepared(rec)))
    audit = AuditLog(store, spool, key=KEY)

    await audit.drain_spool()
    after = a_record(9)
    await audit.record(after)

    assert audit.spooled() == 0
    kept_aside = [
        json.loads(line) for line in spool.with_name("audit.spool.rejected").read_text().splitlines()
    ]
    assert [line["record_id"] for line in kept_aside] == [str(records[2].record_id)]
    await assert_each_once_and_intact(audit, store, [*records[:2], *records[3:], after])
