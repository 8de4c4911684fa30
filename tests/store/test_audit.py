"""The audit log against the real PostgreSQL: chain, append-only guard, tampering, export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store import audit as audit_module
from store.audit import (
    CHAIN_UNKEYED,
    PIN_MISSING,
    UNKEYED_REFUSED,
    AuditEntry,
    AuditLog,
    AuditRecord,
    Head,
    chain_hash,
    record_as_json,
)
from store.db import Store, migration_files

KEY = b"k" * 32
OTHER_KEY = b"m" * 32


@pytest.fixture
def audit(store: Store, tmp_path: Path) -> AuditLog:
    return AuditLog(store, tmp_path / "audit.spool", key=KEY)


def a_record(n: int = 0, **overrides: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "correlation_id": f"c{n}",
        "source": "console",
        "actor": "U0OPS",
        "command": "health",
        "event": "requested",
        "outcome": "succeeded",
        "args": {"n": n},
    }
    fields.update(overrides)
    return AuditRecord.new(**fields)


async def write(audit: AuditLog, count: int) -> list[AuditRecord]:
    records = [a_record(n) for n in range(count)]
    for rec in records:
        await audit.record(rec)
    return records


async def run_as_superuser(store: Store, *statements: str) -> None:
    async with store.connection() as conn:
        for statement in statements:
            await conn.execute(statement.encode())


async def ids_in_order(store: Store) -> list[int]:
    async with store.connection() as conn:
        cur = await conn.execute("SELECT id FROM audit_log ORDER BY id")
        return [int(str(row["id"])) for row in await cur.fetchall()]


async def test_appended_records_verify_intact(audit: AuditLog) -> None:
    records = await write(audit, 3)

    result = await audit.verify()
    entries = await audit.entries()

    assert (result.ok, result.checked, result.first_bad_id) == (True, 3, None)
    assert [e.record_id for e in entries] == [r.record_id for r in reversed(records)]
    assert entries[-1].prev_hash == "0" * 64
    assert entries[0].prev_hash == entries[1].hash


async def test_an_empty_log_verifies(audit: AuditLog) -> None:
    assert (await audit.verify()).ok


async def test_hash_at_insert_matches_what_postgresql_gives_back(audit: AuditLog) -> None:
    awkward = {
        "big": 1e20,
        "one": 1.0,
        "tiny": 0.1,
        "huge_int": 2**70,
        "nested": {"z": [1, "二", None, True], "a": {"b": 2.50}},
        "nul": "a\x00b",
        "nan": float("nan"),
        "money": Decimal("12.30"),
        "when": datetime(2024, 1, 2, tzinfo=UTC),
        "tuple": (1, 2),
        3: "int key",
    }
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=9)))
    await audit.record(a_record(1, args=awkward, detail={"名前": "テスト太郎"}))
    await audit.record(replace(a_record(2), at=moment))

    result = await audit.verify()
    [awkward_row, tokyo_row] = sorted(await audit.entries(), key=lambda e: e.id)

    assert result.ok, result
    assert awkward_row.args["nul"] == "a\ufffdb"
    assert awkward_row.args["3"] == "int key"
    assert awkward_row.args["big"] == 1e20
    assert tokyo_row.at == moment
    assert chain_hash(tokyo_row, tokyo_row.prev_hash, KEY) == tokyo_row.hash


async def test_entries_filter_by_actor_and_time(audit: AuditLog) -> None:
    await audit.record(a_record(1, actor="U0OPS"))
    await audit.record(a_record(2, actor="U0ADMIN"))
    await audit.record(a_record(3, actor="U0OPS"))

    mine = await audit.entries(actor="U0OPS")
    later = await audit.entries(since=datetime.now(UTC) + timedelta(days=1))
    newest = await audit.entries(limit=1)

    assert [e.correlation_id for e in mine] == ["c3", "c1"]
    assert later == []
    assert [e.correlation_id for e in newest] == ["c3"]
    assert isinstance(newest[0], AuditEntry)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
async def test_the_database_refuses_to_change_the_log(audit: AuditLog, store: Store, statement: str) -> None:
    await write(audit, 2)

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        await run_as_superuser(store, statement)

    assert len(await ids_in_order(store)) == 2


async def test_a_row_altered_behind_the_guard_is_named(audit: AuditLog, store: Store) -> None:
    await write(audit, 5)
    target = (await ids_in_order(store))[2]

    await run_as_superuser(
        store,
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        f"UPDATE audit_log SET outcome = 'failed' WHERE id = {target}",
        "ALTER TABLE audit_log ENABLE TRIGGER USER",
    )
    result = await audit.verify()

    assert (result.ok, result.first_bad_id, result.reason) == (False, target, "hash mismatch")
    assert result.checked == 3


async def test_an_altered_row_with_a_forged_hash_breaks_the_next_link(audit: AuditLog, store: Store) -> None:
    # Even someone holding the key cannot alter a row without breaking the next row's link.
    await write(audit, 4)
    ids = await ids_in_order(store)
    [victim] = [e for e in await audit.entries() if e.id == ids[1]]
    forged = replace(victim, actor="mallory")
    forged_hash = chain_hash(forged, forged.prev_hash, KEY)

    await run_as_superuser(
        store,
        "SET session_replication_role = replica",
        f"UPDATE audit_log SET actor = 'mallory', hash = '{forged_hash}' WHERE id = {ids[1]}",
        "SET session_replication_role = DEFAULT",
    )
    result = await audit.verify()

    assert (result.ok, result.first_bad_id) == (False, ids[2])
    assert result.reason == "chain broken (prev_hash)"


async def test_a_middle_row_deleted_behind_the_guard_is_caught(audit: AuditLog, store: Store) -> None:
    await write(audit, 5)
    ids = await ids_in_order(store)

    await run_as_superuser(
        store,
        "SET session_replication_role = replica",
        f"DELETE FROM audit_log WHERE id = {ids[2]}",
        "SET session_replication_role = DEFAULT",
    )
    result = await audit.verify()

    assert (result.ok, result.first_bad_id) == (False, ids[3])
    assert result.reason == "chain broken (prev_hash)"


async def test_concurrent_appends_keep_one_chain(audit: AuditLog, store: Store) -> None:
    records = [a_record(n) for n in range(50)]

    await asyncio.gather(*(audit.record(rec) for rec in records))
    result = await audit.verify()

    assert (result.ok, result.checked) == (True, 50), result
    stored = {e.record_id for e in await audit.entries(limit=100)}
    assert stored == {r.record_id for r in records}


async def test_verify_and_export_read_in_batches(audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "BATCH_SIZE", 2)
    await write(audit, 5)

    out = io.StringIO()
    count = await audit.export(out)

    assert count == 5
    assert [json.loads(line)["correlation_id"] for line in out.getvalue().splitlines()] == [
        f"c{n}" for n in range(5)
    ]
    assert (await audit.verify()).checked == 5


async def test_japanese_text_stays_readable_in_jsonl_export(audit: AuditLog) -> None:
    await audit.record(a_record(1, actor="テスト太郎", args={"name": "テスト太郎"}))

    out = io.StringIO()
    count = await audit.export(out, fmt="jsonl")
    [row] = [json.loads(line) for line in out.getvalue().splitlines()]

    assert count == 1
    assert "テスト太郎" in out.getvalue()
    assert (row["actor"], row["args"]) == ("テスト太郎", {"name": "テスト太郎"})
    assert set(row) >= {"id", "record_id", "at", "prev_hash", "hash"}


async def test_japanese_text_stays_readable_in_csv_export(audit: AuditLog) -> None:
    await audit.record(a_record(1, actor="テスト太郎", args={"name": "テスト太郎"}))

    out = io.StringIO()
    count = await audit.export(out, fmt="csv")
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))

    assert count == 1
    assert row["actor"] == "テスト太郎"
    assert json.loads(row["args"]) == {"name": "テスト太郎"}
    assert "テスト太郎" in out.getvalue()


async def test_export_since_leaves_older_rows_out(audit: AuditLog) -> None:
    old = replace(a_record(1), at=datetime(2020, 1, 1, tzinfo=UTC))
    await audit.record(old)
    await audit.record(a_record(2))

    out = io.StringIO()
    count = await audit.export(out, since=datetime(2021, 1, 1, tzinfo=UTC))

    assert count == 1
    assert json.loads(out.getvalue())["correlation_id"] == "c2"


async def test_secrets_in_args_are_masked_in_the_stored_row(audit: AuditLog, store: Store) -> None:
    await audit.record(
        a_record(
            1,
            args={
                "password": "hunter2",
                "target": "postgresql://garden:s3cret@db/garden_dx",
                "options": "host=db password=kw-secret",
                "argv": ["--dsn", "postgresql://garden:in-a-list@db/x"],
            },
            detail={"error": "could not connect to postgresql://garden:s3cret@db/garden_dx"},
        )
    )

    async with store.connection() as conn:
        cur = await conn.execute("SELECT args::text AS args, detail::text AS detail FROM audit_log")
        row = await cur.fetchone()
    assert row is not None
    stored = f"{row['args']} {row['detail']}"

    for secret in ("hunter2", "s3cret", "kw-secret", "in-a-list"):
        assert secret not in stored
    assert "postgresql://garden:***@db/garden_dx" in stored
    assert (await audit.verify()).ok


async def test_two_processes_appending_at_once_keep_one_chain(store: Store, tmp_path: Path) -> None:
    # Two replicas: each its own pool and its own idea of the head, one log between them.
    other_store = Store(store.dsn, max_size=5)
    await other_store.open()
    try:
        mine = AuditLog(store, tmp_path / "a.spool", key=KEY)
        theirs = AuditLog(other_store, tmp_path / "b.spool", key=KEY)
        nested = {"list": [1, "二", None, True, {"z": "\u2028", "a": 2**70}], "tab": "a\tb"}
        records = [a_record(n, detail=nested) for n in range(60)]

        await asyncio.gather(
            *(log.record(rec) for rec, log in zip(records, [mine, theirs] * 30, strict=True))
        )
        result = await mine.verify()
    finally:
        await other_store.close()

    assert (result.ok, result.checked) == (True, 60), result
    assert mine.spooled() == theirs.spooled() == 0


async def test_an_append_after_the_newest_rows_were_removed_links_to_what_is_there(
    audit: AuditLog, store: Store
) -> None:
    # The head this process remembers is gone: the append must not link to it.
    await write(audit, 3)
    ids = await ids_in_order(store)
    await run_as_superuser(
        store,
        "SET session_replication_role = replica",
        f"DELETE FROM audit_log WHERE id = {ids[-1]}",
        "SET session_replication_role = DEFAULT",
    )

    await audit.record(a_record(9))
    result = await audit.verify()

    assert (result.ok, result.checked) == (True, 3), result


async def test_the_store_refuses_a_second_row_linked_to_the_same_hash(audit: AuditLog, store: Store) -> None:
    await write(audit, 2)
    [first, _] = sorted(await audit.entries(), key=lambda e: e.id)
    fork = a_record(7)

    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert_linked(store, fork, first.prev_hash)


async def test_a_log_forked_before_the_one_successor_rule_still_migrates_and_is_ruled_after(
    audit: AuditLog, store: Store
) -> None:
    # A damaged log (two rows on one hash) must not stop the bot from starting; the rule holds after it.
    [(_, one_successor)] = [m for m in migration_files() if m[0] == "0011_audit_one_successor"]
    await write(audit, 2)
    [first, _] = sorted(await audit.entries(), key=lambda e: e.id)
    await run_as_superuser(store, "DROP INDEX audit_log_one_successor")
    await insert_linked(store, a_record(7), first.prev_hash)

    await run_as_superuser(store, one_successor)
    newest = max(e.id for e in await audit.entries())
    newest_hash = next(e.hash for e in await audit.entries() if e.id == newest)
    await insert_linked(store, a_record(8), newest_hash)

    with pytest.raises(psycopg.errors.UniqueViolation):
        await insert_linked(store, a_record(9), newest_hash)


async def insert_linked(store: Store, rec: AuditRecord, prev: str) -> None:
    async with store.connection() as conn:
        await conn.execute(
            "INSERT INTO audit_log (record_id, at, correlation_id, source, actor, command, event,"
            " outcome, prev_hash, hash, chain_version) VALUES (%s, %s, 'c', 'console', 'U0OPS',"
            " 'health', 'requested', 'succeeded', %s, %s, 2)",
            (rec.record_id, rec.at, prev, chain_hash(rec, prev, KEY)),
        )


def test_a_record_needs_a_timezone_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditRecord(
            record_id=uuid.uuid4(),
            at=datetime(2024, 1, 1),
            correlation_id="c",
            source="console",
            actor="U0OPS",
            command="health",
            event="requested",
            outcome="ok",
        )


# --- the keyed chain and its published head ---


async def rechain(store: Store, audit: AuditLog, *, key: bytes | None, version: int) -> None:
    """What someone with the database credentials but not the key can do: rewrite every hash."""
    entries = sorted(await audit.entries(limit=1000), key=lambda e: e.id)
    prev = "0" * 64
    async with store.connection() as conn:
        await conn.execute("SET session_replication_role = replica")
        for entry in entries:
            digest = chain_hash(entry, prev, key)
            await conn.execute(
                "UPDATE audit_log SET prev_hash = %s, hash = %s, chain_version = %s WHERE id = %s",
                (prev, digest, version, entry.id),
            )
            prev = digest
        await conn.execute("SET session_replication_role = DEFAULT")


async def insert_unkeyed(store: Store, records: list[AuditRecord]) -> None:
    """Rows as the bot wrote them before the chain was keyed (chain_version 1, plain SHA-256)."""
    async with store.connection() as conn:
        prev = "0" * 64
        for rec in records:
            digest = chain_hash(rec, prev)
            body = record_as_json(rec)
            await conn.execute(
                "INSERT INTO audit_log (record_id, at, correlation_id, source, actor, approver, channel,"
                " command, args, event, outcome, duration_ms, detail, prev_hash, hash, chain_version)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s, %s)",
                (
                    rec.record_id,
                    rec.at,
                    rec.correlation_id,
                    rec.source,
                    rec.actor,
                    rec.approver,
                    rec.channel,
                    rec.command,
                    json.dumps(body["args"]),
                    rec.event,
                    rec.outcome,
                    rec.duration_ms,
                    json.dumps(body["detail"]),
                    prev,
                    digest,
                    CHAIN_UNKEYED,
                ),
            )
            prev = digest


async def test_verify_gives_the_head_the_newest_record_and_its_hash(audit: AuditLog, store: Store) -> None:
    await write(audit, 3)
    newest = (await ids_in_order(store))[-1]

    result = await audit.verify()
    head = await audit.head()

    assert result.ok and result.head is not None and head is not None
    assert (
        (result.head.id, result.head.hash)
        == (head.id, head.hash)
        == (newest, (await audit.entries())[0].hash)
    )
    assert (await audit.verify(head=str(head))).ok
    assert (await audit.verify(head=head.hash)).ok


async def test_deleting_the_newest_records_is_caught_by_the_published_head(
    audit: AuditLog, store: Store
) -> None:
    await write(audit, 5)
    published = await audit.head()
    assert published is not None
    ids = await ids_in_order(store)

    await run_as_superuser(
        store,
        "SET session_replication_role = replica",
        f"DELETE FROM audit_log WHERE id >= {ids[3]}",
        "SET session_replication_role = DEFAULT",
    )
    without_head = await audit.verify()
    with_head = await audit.verify(head=str(published))

    assert without_head.ok  # a shorter chain is still a whole chain: only the anchor catches it
    assert (with_head.ok, with_head.first_bad_id, with_head.reason) == (False, ids[4], "head missing")


async def test_rechaining_every_record_without_the_key_is_caught(audit: AuditLog, store: Store) -> None:
    await write(audit, 4)
    await run_as_superuser(
        store,
        "ALTER TABLE audit_log DISABLE TRIGGER USER",
        "UPDATE audit_log SET actor = 'mallory'",
        "ALTER TABLE audit_log ENABLE TRIGGER USER",
    )

    await rechain(store, audit, key=OTHER_KEY, version=2)  # any key but ours
    result = await audit.verify()

    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        (await ids_in_order(store))[0],
        "hash mismatch",
    )


async def test_rechaining_the_whole_log_as_unkeyed_fails_verify_without_the_published_head(
    audit: AuditLog, store: Store
) -> None:
    await write(audit, 4)
    first = (await ids_in_order(store))[0]

    await rechain(store, audit, key=None, version=CHAIN_UNKEYED)
    result = await audit.verify()

    assert (result.ok, result.first_bad_id, result.reason) == (False, first, UNKEYED_REFUSED)


@pytest.mark.parametrize("slipped_id", [0, -(2**63)])
async def test_a_record_slipped_in_below_the_first_id_is_checked_too(
    audit: AuditLog, store: Store, slipped_id: int
) -> None:
    await write(audit, 2)
    await run_as_superuser(
        store,
        "INSERT INTO audit_log (id, record_id, at, correlation_id, source, actor, approver, channel,"
        " command, args, event, outcome, duration_ms, detail, prev_hash, hash, chain_version)"
        f" SELECT {slipped_id}, gen_random_uuid(), at, correlation_id, source, 'mallory', approver, channel,"
        " 'restore', args, event, outcome, duration_ms, detail, repeat('e', 64), repeat('d', 64),"
        " chain_version FROM audit_log ORDER BY id LIMIT 1",
    )

    result = await audit.verify()

    assert (result.ok, result.first_bad_id) == (False, slipped_id)


async def test_the_bot_adds_no_record_after_a_log_rewritten_without_the_key(
    audit: AuditLog, store: Store
) -> None:
    await write(audit, 4)
    await rechain(store, audit, key=None, version=CHAIN_UNKEYED)
    before = await ids_in_order(store)

    await audit.record(a_record(9))  # a keyed record here would vouch for the forged ones

    assert await ids_in_order(store) == before
    assert audit.spooled() == 1
    assert (await audit.verify()).reason == UNKEYED_REFUSED


def pinned(store: Store, tmp_path: Path, last: AuditEntry) -> AuditLog:
    """The bot as configured with `audit_unkeyed_until` naming `last`."""
    return AuditLog(store, tmp_path / "pinned.spool", key=KEY, unkeyed_until=Head(last.id, last.hash))


async def entry(audit: AuditLog, ident: int) -> AuditEntry:
    [found] = [e for e in await audit.entries(limit=1000) if e.id == ident]
    return found


async def test_records_from_before_keying_verify_up_to_the_configured_last_one_and_the_keyed_chain_follows(
    audit: AuditLog, store: Store, tmp_path: Path
) -> None:
    await insert_unkeyed(store, [a_record(n) for n in range(2)])
    ids = await ids_in_order(store)
    upgraded = pinned(store, tmp_path, await entry(audit, ids[1]))
    await write(upgraded, 2)
    ids = await ids_in_order(store)

    result = await upgraded.verify()
    start = await audit.unkeyed_start()

    assert (result.ok, result.checked, result.unkeyed, result.keyed_from) == (True, 4, 2, ids[2])
    assert start is not None and (start.count, start.vouched_by) == (2, ids[2])


async def test_records_from_before_keying_are_refused_until_their_last_one_is_configured(
    audit: AuditLog, store: Store
) -> None:
    await insert_unkeyed(store, [a_record(n) for n in range(2)])
    await write(audit, 2)  # the bot chains nothing after them yet: spooled
    ids = await ids_in_order(store)

    result = await audit.verify()
    start = await audit.unkeyed_start()

    assert len(ids) == 2 and audit.spooled() == 2
    assert (result.ok, result.first_bad_id, result.reason) == (False, ids[0], UNKEYED_REFUSED)
    assert start is not None and (start.count, start.vouched_by) == (2, None)
    assert start.last == Head(ids[1], (await entry(audit, ids[1])).hash)


async def test_an_unkeyed_record_after_the_configured_last_one_is_refused(
    audit: AuditLog, store: Store, tmp_path: Path
) -> None:
    await insert_unkeyed(store, [a_record(n) for n in range(3)])
    ids = await ids_in_order(store)

    result = await pinned(store, tmp_path, await entry(audit, ids[1])).verify()

    assert (result.ok, result.first_bad_id, result.reason) == (False, ids[2], UNKEYED_REFUSED)


@pytest.mark.parametrize("alteration", ["delete the last", "rewrite the first"])
async def test_altering_the_records_from_before_keying_is_caught_by_their_configured_last_one(
    audit: AuditLog, store: Store, tmp_path: Path, alteration: str
) -> None:
    await insert_unkeyed(store, [a_record(n) for n in range(3)])
    ids = await ids_in_order(store)
    upgraded = pinned(store, tmp_path, await entry(audit, ids[2]))
    await write(upgraded, 2)
    keyed_ids = (await ids_in_order(store))[3:]

    if alteration == "delete the last":  # and every keyed record with it: a shorter, whole chain
        await run_as_superuser(
            store,
            "SET session_replication_role = replica",
            f"DELETE FROM audit_log WHERE id >= {ids[2]}",
            "SET session_replication_role = DEFAULT",
        )
        expected_bad = ids[2]
    else:  # the unkeyed records rewritten and chained again without the key; the keyed ones kept
        await run_as_superuser(
            store,
            "SET session_replication_role = replica",
            f"DELETE FROM audit_log WHERE id >= {keyed_ids[0]}",
            f"UPDATE audit_log SET actor = 'mallory' WHERE id = {ids[0]}",
            "SET session_replication_role = DEFAULT",
        )
        await rechain(store, audit, key=None, version=CHAIN_UNKEYED)
        expected_bad = ids[2]
    result = await upgraded.verify()

    assert (result.ok, result.first_bad_id, result.reason) == (False, expected_bad, PIN_MISSING)


async def test_an_unkeyed_record_after_keyed_ones_is_named(audit: AuditLog, store: Store) -> None:
    await write(audit, 3)
    ids = await ids_in_order(store)
    [last] = [e for e in await audit.entries() if e.id == ids[2]]
    unkeyed = chain_hash(last, last.prev_hash)

    await run_as_superuser(
        store,
        "SET session_replication_role = replica",
        f"UPDATE audit_log SET chain_version = 1, hash = '{unkeyed}' WHERE id = {ids[2]}",
        "SET session_replication_role = DEFAULT",
    )
    result = await audit.verify()

    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        ids[2],
        "unkeyed record inside the keyed chain",
    )
