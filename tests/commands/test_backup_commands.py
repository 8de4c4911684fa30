"""`backup`, `backup list`, `backup verify <id>` end to end: real pg_dump, real target, real catalog.

The target is a copy of Chinook per test; the bot has its own throwaway store, Redis prefix and
backup folder (tests/support/backup_env.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, open_runtime
from commands.base import Actor, Request
from core.reply import Table, Text
from tests.support.backup_env import (
    ADMIN,
    OPERATOR,
    VIEWER,
    BackupWorld,
    databases_like,
    finish,
    scratch_names,
    sha256_file,
    take_backup,
)
from tests.support.chinook import CHINOOK_ROWS
from tests.support.faults import gated_pg_dump
from tests.support.runtime import closed_port

__all__ = ["scratch_names"]  # a fixture, used by name


def corrupt(path: Path) -> None:
    """Overwrite 2 KB two thirds into the file (table data, past the table of contents); same size."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size * 2 // 3)
        handle.write(bytes(range(256)) * 8)
    assert path.stat().st_size == size


# --- backup ---------------------------------------------------------------------------------------


async def test_operator_backup_writes_a_checked_file_and_a_good_catalog_entry(
    world: BackupWorld, rt: Runtime
) -> None:
    started = await world.handle(rt, OPERATOR, "backup")
    assert started.status == "running", started
    job_id = started.ids["job_id"]

    reply = await rt.pipeline.runner.wait(int(job_id))

    assert reply.status == "succeeded", reply
    assert reply.ids["job_id"] == job_id
    backup_id = reply.ids["backup_id"]
    row = world.backup_row(int(backup_id))
    assert row["status"] == "good"
    assert row["kind"] == "regular"
    assert row["job_id"] == job_id
    assert row["created_by"] == OPERATOR
    assert row["database_name"] == world.target_name
    assert row["row_counts"] == CHINOOK_ROWS
    path = world.backup_dir / row["file_name"]
    assert path.is_file()
    assert path.stat().st_size == row["size_bytes"] > 0
    assert sha256_file(path) == row["sha256"]
    assert path.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert world.files() == [row["file_name"]]  # no partial file left behind
    assert [j["status"] for j in world.jobs()] == ["succeeded"]


async def test_back_to_back_backups_get_distinct_files(world: BackupWorld, rt: Runtime) -> None:
    # File names carry the time to the second: two backups within one second must not collide.
    ids = [await take_backup(world, rt) for _ in range(3)]

    rows = [world.backup_row(i) for i in ids]
    assert [r["status"] for r in rows] == ["good"] * 3
    assert len({r["file_name"] for r in rows}) == 3
    assert world.files() == sorted(r["file_name"] for r in rows)
    for r in rows:
        assert sha256_file(world.backup_dir / r["file_name"]) == r["sha256"]


def test_viewer_is_refused_a_backup(idle_world: BackupWorld) -> None:
    code, out, _ = idle_world.cli(VIEWER, "backup")

    assert code == 2, out
    assert out["status"] == "refused"
    assert "operator" in out["text"]
    assert idle_world.jobs() == [] and idle_world.backups() == [] and idle_world.files() == []


async def test_backup_list_is_newest_first_and_reports_folder_problems(
    world: BackupWorld, rt: Runtime
) -> None:
    first, second, third = [await take_backup(world, rt) for _ in range(3)]

    clean = await world.handle(rt, VIEWER, "backup list")
    assert clean.status == "succeeded", clean
    table = next(e for e in clean.elements if isinstance(e, Table))
    assert [row[0] for row in table.rows] == [str(third), str(second), str(first)]
    assert all("good" in row[4] for row in table.rows)
    assert "0 problems" in clean.summary

    (world.backup_dir / "stray-20260101T000000Z.dump").write_bytes(b"not ours")
    world.file_of(first).unlink()
    with world.file_of(second).open("r+b") as handle:
        handle.truncate(100)
    with world.file_of(third).open("ab") as handle:
        handle.write(b"\0")

    code, out, _ = world.cli(VIEWER, "backup list")

    assert code == 0, out
    text = out["text"]
    assert "File stray-20260101T000000Z.dump is in the backup folder but not in the catalog." in text
    assert f"Backup {first}: its file is gone." in text
    assert f"Backup {second}: its file has changed (size)." in text
    assert f"Backup {third}: its file has changed (size)." in text
    assert "4 problems" in out["summary"]
    assert [world.backup_row(i)["status"] for i in (first, second, third)] == ["good"] * 3


# --- backup verify -------------------------------------------------------------------------------


async def test_verify_passes_on_a_good_backup_and_is_recorded(
    world: BackupWorld, rt: Runtime, scratch_names: list[str]
) -> None:
    backup_id = await take_backup(world, rt)
    assert world.backup_row(backup_id)["verify_status"] is None

    reply = await world.run(rt, OPERATOR, f"backup verify {backup_id}")

    assert reply.status == "succeeded", reply
    assert reply.ids["backup_id"] == backup_id
    assert f"{len(CHINOOK_ROWS)} tables match" in reply.summary
    row = world.backup_row(backup_id)
    assert row["verify_status"] == "passed"
    assert row["verified_at"] is not None
    assert row["verify_detail"]["differences"] == []
    assert len(scratch_names) == 1  # it really restored somewhere...
    assert databases_like(scratch_names[0]) == set()  # ...and dropped it


def cpuinfo_cores() -> int:
    """The processors /proc/cpuinfo lists: the target server's (it runs on this host)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return sum(1 for line in lines if re.match(r"processor\s*:", line))


@pytest.mark.parametrize("configured", [3, "auto"])
async def test_verify_restores_with_parallel_jobs_configured_or_sized_to_the_target(
    world: BackupWorld, tmp_path: Path, scratch_names: list[str], configured: int | str
) -> None:
    gate = gated_pg_dump(tmp_path / "pg-bin")  # opened: its pg_restore only records its arguments
    gate.open()
    world.set_env(GARDENBOT_PG_BIN_DIR=str(gate.folder))
    world.bot.configure(backup={"restore_jobs": configured})
    runtime = await open_runtime(world.bot.settings())
    try:
        backup_id = await take_backup(world, runtime)
        reply = await world.run(runtime, OPERATOR, f"backup verify {backup_id}")
    finally:
        await runtime.close()

    assert reply.status == "succeeded", reply
    [restore_line] = [line for line in gate.restore_args.read_text().splitlines() if "--dbname" in line]
    jobs = configured if isinstance(configured, int) else min(8, cpuinfo_cores())
    assert (f"--jobs={jobs}" in restore_line) if jobs > 1 else ("--jobs" not in restore_line), restore_line


async def test_verify_latest_checks_the_newest_good_backup_and_is_refused_when_there_is_none(
    world: BackupWorld, rt: Runtime, scratch_names: list[str]
) -> None:
    none_yet = await world.run(rt, OPERATOR, "backup verify latest")
    assert none_yet.status == "refused" and "no good backup to verify" in none_yet.summary, none_yet
    await take_backup(world, rt)
    newest = await take_backup(world, rt)

    reply = await world.run(rt, OPERATOR, "backup verify latest")

    assert reply.status == "succeeded", reply
    assert reply.ids["backup_id"] == newest
    assert world.backup_row(newest)["verify_status"] == "passed"


async def test_verify_of_a_corrupted_file_fails_and_is_recorded(world: BackupWorld, rt: Runtime) -> None:
    backup_id = await take_backup(world, rt)
    corrupt(world.file_of(backup_id))

    code, out, _ = world.cli(OPERATOR, f"backup verify {backup_id}")

    assert code == 1, out
    assert out["status"] == "failed"
    assert f"Backup {backup_id} FAILED verification: the checksum does not match." in out["text"]
    row = world.backup_row(backup_id)
    assert row["verify_status"] == "failed"
    assert row["verify_detail"]["problem"] == "checksum_mismatch"


async def test_verify_of_a_backup_that_does_not_restore_drops_its_scratch_database(
    world: BackupWorld, rt: Runtime, scratch_names: list[str]
) -> None:
    # A dump that was broken when it was written: the catalog's checksum is the broken file's, so
    # only restoring it shows the problem.
    backup_id = await take_backup(world, rt)
    path = world.file_of(backup_id)
    corrupt(path)
    world.store_rows("UPDATE backups SET sha256 = %s WHERE id = %s", (sha256_file(path), backup_id))

    reply = await world.run(rt, OPERATOR, f"backup verify {backup_id}")

    assert reply.status == "failed", reply
    assert reply.exit_code == 1
    assert "it could not be restored" in reply.summary
    assert world.backup_row(backup_id)["verify_detail"]["problem"] == "restore_failed"
    assert len(scratch_names) == 1
    assert databases_like(scratch_names[0]) == set()
    assert world.jobs()[-1]["status"] == "failed"


# --- one at a time -------------------------------------------------------------------------------


async def test_two_backups_at_once_exactly_one_runs(world: BackupWorld, rt: Runtime) -> None:
    replies = await asyncio.gather(*(world.run(rt, OPERATOR, "backup") for _ in range(2)))

    assert sorted(r.status for r in replies) == ["refused", "succeeded"], replies
    refused = next(r for r in replies if r.status == "refused")
    assert "already running" in refused.summary
    assert refused.exit_code == 2
    assert len(world.jobs()) == 1  # the refused request made no job...
    assert [b["status"] for b in world.backups()] == ["good"]  # ...and no catalog entry
    assert len(world.files()) == 1


async def test_racing_refusal_names_the_running_job(world: BackupWorld, rt: Runtime) -> None:
    replies = await asyncio.gather(*(world.handle(rt, OPERATOR, "backup") for _ in range(2)))
    running = next(r for r in replies if r.status == "running")
    refused = next(r for r in replies if r.status == "refused")
    await rt.pipeline.runner.wait(int(running.ids["job_id"]))

    assert f"already running (job {running.ids['job_id']}, started by {OPERATOR} at" in refused.summary


async def test_backup_while_one_runs_is_refused_naming_it(world: BackupWorld, rt: Runtime) -> None:
    earlier = await world.run(rt, OPERATOR, "backup")  # a good backup that verify may use
    assert earlier.status == "succeeded", earlier
    first = await world.handle(rt, OPERATOR, "backup")
    assert first.status == "running", first
    second = await world.handle(rt, ADMIN, "backup")
    verify = await world.handle(rt, OPERATOR, f"backup verify {earlier.ids['backup_id']}")  # the same lock
    done = await rt.pipeline.runner.wait(int(first.ids["job_id"]))

    assert done.status == "succeeded", done
    for refused in (second, verify):
        assert refused.status == "refused", refused
        assert f"already running (job {first.ids['job_id']}, started by {OPERATOR} at" in refused.summary
    assert len(world.jobs()) == 2
    after = await world.run(rt, ADMIN, "backup")  # the lock is free again
    assert after.status == "succeeded", after


# --- bad input ------------------------------------------------------------------------------------

BAD_VERIFY = [
    pytest.param("backup verify abc", "not a path or a name", id="word"),
    pytest.param("backup verify", "Missing argument", id="missing"),
    pytest.param("backup verify 0", "not a path or a name", id="zero"),
    pytest.param("backup verify -1", "not a path or a name", id="negative"),
    pytest.param("backup verify ../../etc/passwd", "not a path or a name", id="path"),
    pytest.param("backup verify 1 2", "Too many arguments", id="two-ids"),
]


@pytest.mark.parametrize(("text", "says"), BAD_VERIFY)
async def test_bad_verify_input_is_refused_and_runs_nothing(
    idle_world: BackupWorld, idle_rt: Runtime, text: str, says: str
) -> None:
    reply = await idle_world.handle(idle_rt, OPERATOR, text)

    assert reply.status == "refused", reply
    assert reply.exit_code == 2
    assert says in reply.summary, reply.summary
    assert idle_world.jobs() == [] and idle_world.backups() == [] and idle_world.files() == []


async def test_verify_of_an_unknown_id_is_refused_and_runs_nothing(world: BackupWorld, rt: Runtime) -> None:
    reply = await world.run(rt, OPERATOR, "backup verify 999999")

    assert "There is no backup 999999" in reply.summary, reply.summary
    assert reply.status == "refused", reply
    assert world.jobs() == []


def test_bad_verify_input_exits_2_from_the_console(idle_world: BackupWorld) -> None:
    code, out, _ = idle_world.cli(OPERATOR, "backup verify abc")

    assert code == 2, out
    assert out["status"] == "refused"
    assert "backup verify <id|latest>" in out["text"]  # the usage line (`latest` since schedules)
    assert idle_world.jobs() == [] and idle_world.files() == []


# --- errors ---------------------------------------------------------------------------------------


def test_backup_without_pg_tools_fails_naming_the_setting(world: BackupWorld, tmp_path: Path) -> None:
    empty = tmp_path / "no-pg-tools"
    empty.mkdir()
    world.set_env(GARDENBOT_PG_BIN_DIR=str(empty))

    code, out, _ = world.cli(OPERATOR, "backup")

    assert code == 1, out
    assert out["status"] == "failed"
    assert "GARDENBOT_PG_BIN_DIR" in out["text"]
    assert str(empty) in out["text"]
    assert [b for b in world.backups() if b["status"] == "good"] == []
    assert world.files() == []
    assert [j["status"] for j in world.jobs()] == ["failed"]


def test_backup_with_the_target_down_fails_with_one_clear_line(world: BackupWorld) -> None:
    world.set_env(GARDEN_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/{world.target_name}")

    code, out, _ = world.cli(OPERATOR, "backup")

    assert code == 1, out
    assert out["status"] == "failed"
    assert re.search(rf"The Garden DX database {world.target_name} is unreachable", out["summary"]), out
    assert "\n" not in out["summary"]
    assert "Traceback" not in out["text"]
    backups = world.backups()
    assert [b["status"] for b in backups] == ["failed"]  # recorded, never good
    assert backups[0]["size_bytes"] is None and backups[0]["sha256"] is None
    assert world.files() == []


# --- hardening ------------------------------------------------------------------------------------


async def test_backup_list_never_calls_a_catalogued_backup_unknown_however_many(
    world: BackupWorld, rt: Runtime
) -> None:
    first = await take_backup(world, rt)
    source = world.file_of(first)
    # 30 newer good backups (copies of the first): the first is no longer among the rows shown.
    for n in range(30):
        name = f"copy-{n:02d}.dump"
        shutil.copyfile(source, world.backup_dir / name)
        world.store_rows(
            "INSERT INTO backups (kind, database_name, file_name, status, size_bytes, sha256,"
            " row_counts, started_at, finished_at, created_by)"
            " SELECT kind, database_name, %s, status, size_bytes, sha256, row_counts,"
            " started_at + make_interval(secs => %s), finished_at + make_interval(secs => %s), created_by"
            " FROM backups WHERE id = %s",
            (name, n + 1, n + 1, first),
        )

    reply = await world.handle(rt, VIEWER, "backup list")

    table = next(e for e in reply.elements if isinstance(e, Table))
    assert str(first) not in [r[0] for r in table.rows]
    assert "0 problems" in reply.summary, [e for e in reply.elements if not isinstance(e, Table)]
    source.unlink()  # beyond the page, a good backup whose file is gone is still found
    again = await world.handle(rt, VIEWER, "backup list")
    problems = [e.text for e in again.elements if isinstance(e, Text)]
    assert f"Backup {first}: its file is gone." in problems and "1 problems" in again.summary


async def test_a_backup_in_japanese_shows_japanese_progress(world: BackupWorld, rt: Runtime) -> None:
    request = Request(actor=Actor(user_id=OPERATOR), text="backup", source="console", locale="ja")
    shown: list[str] = []
    original = rt.pipeline.runner._progress

    def recording(job_id: int) -> Any:
        show = original(job_id)

        async def record(percent: int, text: str) -> None:
            shown.append(text)
            await show(percent, text)

        return record

    rt.pipeline.runner._progress = recording  # type: ignore[method-assign]
    reply = await finish(rt, await rt.pipeline.handle(request))

    assert reply.status == "succeeded", reply
    assert "ダンプ中: 0 B 書き込み済み" in shown, shown
    assert shown[-1] == "バックアップを書き込み、検査しました", shown
    assert not any("dumping" in text or "written" in text for text in shown)
    assert world.jobs()[-1]["progress_text"] == "バックアップを書き込み、検査しました"
