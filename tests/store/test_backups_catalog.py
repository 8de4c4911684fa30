"""The backup catalog against the real PostgreSQL, and how the runbooks' results land in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import NotFound, RunbookFailed
from runbooks.backups import BackupFile, prune_backups, take_backup
from runbooks.pg_tools import PgTools, find_pg_tools
from store.backups import (
    fail_backup_record,
    finish_backup_record,
    get_backup,
    list_backups,
    mark_interrupted,
    mark_pruned,
    newest_good_backup,
    record_verification,
    start_backup_record,
)
from store.db import Store
from tests.support.chinook import fake_pg_tool


async def a_job(store: Store) -> int:
    async with store.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO jobs (command, requested_by, source, correlation_id)"
            " VALUES ('backup', 'U0OPS', 'console', 'c1') RETURNING id"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(str(row["id"]))


def a_file(name: str, size: int = 1234) -> BackupFile:
    return BackupFile(
        path=Path("/backups") / name,
        size_bytes=size,
        sha256="ab" * 32,
        row_counts={"public.track": 3503, "public.テスト": 1},
        pg_dump_version="15.20",
        server_version="PostgreSQL 15.20",
        duration_ms=420,
        table_count=2,
        toc_entries=55,
    )


async def start(store: Store, name: str, job_id: int | None = None) -> int:
    return await start_backup_record(
        store,
        job_id=job_id,
        kind="regular",
        database_name="garden_dx",
        file_name=name,
        created_by="U0OPS",
    )


async def test_a_backup_is_good_only_once_finished(store: Store) -> None:
    backup_id = await start(store, "a.dump")
    running = await get_backup(store, backup_id)
    assert (running.status, running.sha256, running.is_good) == ("running", None, False)
    assert await newest_good_backup(store) is None
    await finish_backup_record(store, backup_id, a_file("a.dump"))
    good = await get_backup(store, backup_id)
    assert good.is_good and good.size_bytes == 1234 and good.sha256 == "ab" * 32
    assert good.row_counts == {"public.track": 3503, "public.テスト": 1}
    assert good.finished_at is not None and good.duration_ms == 420
    newest = await newest_good_backup(store)
    assert newest is not None and newest.id == backup_id
    with pytest.raises(NotFound):
        await finish_backup_record(store, backup_id, a_file("a.dump"))


async def test_list_is_newest_first_and_filters_by_status(store: Store) -> None:
    ids = [await start(store, f"{n}.dump") for n in range(3)]
    await finish_backup_record(store, ids[0], a_file("0.dump"))
    await fail_backup_record(store, ids[1], "pg_dump failed")
    assert [b.id for b in await list_backups(store)] == ids[::-1]
    assert [b.id for b in await list_backups(store, limit=2)] == ids[:0:-1]
    assert [b.id for b in await list_backups(store, statuses=["good"])] == [ids[0]]
    failed = await get_backup(store, ids[1])
    assert (failed.status, failed.error) == ("failed", "pg_dump failed")


async def test_unknown_backup_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await get_backup(store, 999)
    assert caught.value.params == {"backup_id": 999}
    with pytest.raises(NotFound):
        await record_verification(store, 999, passed=True, detail={})


async def test_verification_is_recorded(store: Store) -> None:
    backup_id = await start(store, "v.dump")
    await finish_backup_record(store, backup_id, a_file("v.dump"))
    await record_verification(store, backup_id, passed=False, detail={"problem": "x"})
    record = await get_backup(store, backup_id)
    assert record.verify_status == "failed" and record.verify_detail == {"problem": "x"}
    assert record.verified_at is not None


async def test_backups_of_a_dead_job_become_interrupted(store: Store) -> None:
    dead, alive = await a_job(store), await a_job(store)
    lost = await start(store, "lost.dump", dead)
    ongoing = await start(store, "ongoing.dump", alive)
    marked = await mark_interrupted(store, job_ids=[dead])
    assert [b.id for b in marked] == [lost] and marked[0].status == "interrupted"
    assert (await get_backup(store, ongoing)).status == "running"
    with pytest.raises(NotFound):  # too late: an interrupted backup never turns good
        await finish_backup_record(store, lost, a_file("lost.dump"))
    assert await newest_good_backup(store) is None


async def test_a_failed_backup_never_reads_as_good(store: Store, tmp_path: Path) -> None:
    real = await find_pg_tools(None)
    broken = fake_pg_tool(tmp_path, "pg_dump", real.version_text, "printf PGDMP; exit 1")
    tools = PgTools(broken, real.pg_restore, None, real.version, real.version_text)
    backup_id = await start(store, "broken.dump")
    with pytest.raises(RunbookFailed) as caught:
        await take_backup(dsn=store.dsn, backup_dir=tmp_path / "b", tools=tools, file_name="broken.dump")
    await fail_backup_record(store, backup_id, str(caught.value))
    assert (await get_backup(store, backup_id)).status == "failed"
    assert await newest_good_backup(store) is None
    assert list((tmp_path / "b").iterdir()) == []


async def test_retention_prunes_through_the_catalog(store: Store, tmp_path: Path) -> None:
    ids = []
    for name in ("old.dump", "newest.dump"):
        backup_id = await start(store, name)
        await finish_backup_record(store, backup_id, a_file(name))
        (tmp_path / name).write_bytes(b"x")
        ids.append(backup_id)
    records = await list_backups(store)
    later = datetime.now(UTC) + timedelta(days=400)
    pruned = prune_backups(backup_dir=tmp_path, entries=records, retention_days=30, now=later)
    assert [p.id for p in pruned] == [ids[0]]
    assert await mark_pruned(store, [p.id for p in pruned]) == 1
    assert (await get_backup(store, ids[0])).status == "pruned"
    assert [p.name for p in tmp_path.iterdir()] == ["newest.dump"]
