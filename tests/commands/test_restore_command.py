"""`restore <id>` end to end: approval by a second person, safety backup, swap, and every way it
must refuse or fail while leaving the live database exactly as it was.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.runtime import Runtime, open_runtime
from core.formatting import format_bytes, format_time
from core.reply import Fields, Reply, Text
from tests.support.backup_env import (
    ADMIN,
    LEAD,
    OPERATOR,
    VIEWER,
    BackupWorld,
    admin_query,
    sha256_file,
    take_backup,
)
from tests.support.faults import gated_pg_dump


def change_data(world: BackupWorld) -> None:
    """After the backup: rows deleted from one table, rows updated in another."""
    world.target_rows("DELETE FROM invoice_line WHERE invoice_id <= 40")
    world.target_rows("UPDATE track SET name = name || ' (remastered)' WHERE track_id <= 100")


async def request_restore(world: BackupWorld, rt: Runtime, backup_id: int) -> int:
    reply = await world.handle(rt, ADMIN, f"restore {backup_id}")
    assert reply.status == "pending", reply
    return int(reply.ids["approval_id"])


def assert_untouched(world: BackupWorld, expected: dict[str, Any]) -> None:
    """The live database holds exactly what it held, and no restore copy was left behind."""
    assert world.fingerprint() == expected
    assert world.related_databases() == set()


async def test_restore_is_approved_by_another_person_and_brings_the_backup_back(
    world: BackupWorld, rt: Runtime
) -> None:
    backup_id = await take_backup(world, rt)
    at_backup = world.fingerprint()
    change_data(world)
    changed = world.fingerprint()
    assert changed["counts"]["public.invoice_line"] < at_backup["counts"]["public.invoice_line"]
    assert changed["md5"]["track"] != at_backup["md5"]["track"]

    # The admin asks: it waits for approval and tells the approver what will happen.
    code, out, _ = world.cli(ADMIN, f"restore {backup_id}")
    assert code == 3, out
    assert out["status"] == "pending"
    approval_id = int(out["approval_id"])
    record = world.backup_row(backup_id)
    zone = rt.settings.zone
    summary = world.approvals()[0]["summary"]
    for fact in (
        f"backup {backup_id}",
        format_time(record["finished_at"], zone),
        format_bytes(record["size_bytes"]),
        record["sha256"][:16],
        world.target_name,
    ):
        assert fact in summary, (fact, summary)
        assert fact in out["text"], (fact, out["text"])
    assert [j["command"] for j in world.jobs()] == ["backup"]
    assert world.fingerprint() == changed  # nothing happens before the approval

    # Neither the requester nor a non-approver may decide.
    own = await world.approve(rt, ADMIN, approval_id)
    assert own.status == "refused", own
    assert own.exit_code == 2
    viewer = await world.approve(rt, VIEWER, approval_id)
    assert viewer.status == "refused", viewer
    assert [j["command"] for j in world.jobs()] == ["backup"]
    assert world.approvals()[0]["status"] == "pending"

    # An approver (an operator holding the approver flag) approves: safety backup, restore, swap.
    done = await world.approve(rt, LEAD, approval_id)

    assert done.status == "succeeded", done
    assert done.ids["backup_id"] == backup_id
    [job] = [j for j in world.jobs() if j["command"] == "restore"]
    assert job["status"] == "succeeded"
    assert (job["requested_by"], job["approved_by"]) == (ADMIN, LEAD)
    safety = world.backup_row(int(done.ids["safety_backup_id"]))
    assert (safety["kind"], safety["status"], safety["job_id"]) == ("safety", "good", job["id"])
    assert safety["row_counts"] == changed["counts"]  # it holds the data as it was just before
    assert sha256_file(world.backup_dir / safety["file_name"]) == safety["sha256"]

    assert world.fingerprint() == at_backup
    [kept] = world.related_databases()
    assert kept.startswith(f"{world.target_name}_before_")
    assert world.fingerprint(database=kept) == changed

    again = await world.approve(rt, LEAD, approval_id)  # a second click runs nothing
    assert again.status == "refused", again
    assert [j["command"] for j in world.jobs()] == ["backup", "restore"]


async def test_a_file_changed_after_the_request_is_refused_at_approval(
    world: BackupWorld, rt: Runtime
) -> None:
    backup_id = await take_backup(world, rt)
    change_data(world)
    changed = world.fingerprint()
    approval_id = await request_restore(world, rt, backup_id)
    path = world.file_of(backup_id)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # other bytes, same size: only the checksum can tell
        handle.seek(size // 2)
        handle.write(bytes(255 - b for b in path.read_bytes()[size // 2 : size // 2 + 64]))
    assert path.stat().st_size == size == world.backup_row(backup_id)["size_bytes"]

    reply = await world.approve(rt, LEAD, approval_id)

    assert reply.status in ("failed", "refused"), reply
    assert "checksum" in reply.summary, reply.summary
    assert "nothing changed" in reply.summary
    assert_untouched(world, changed)
    assert world.jobs()[-1]["status"] == "failed"
    assert [b["kind"] for b in world.backups()] == ["regular"]  # refused before the safety backup


async def test_a_backup_recatalogued_after_the_request_is_refused_at_approval(
    world: BackupWorld, rt: Runtime
) -> None:
    # The approval is bound to the checksum the approver was shown, not to whatever the catalog says now.
    backup_id = await take_backup(world, rt)
    change_data(world)
    changed = world.fingerprint()
    approval_id = await request_restore(world, rt, backup_id)
    path = world.file_of(backup_id)
    with path.open("ab") as handle:
        handle.write(b"\0")
    world.store_rows(
        "UPDATE backups SET sha256 = %s, size_bytes = %s WHERE id = %s",
        (sha256_file(path), path.stat().st_size, backup_id),
    )

    reply = await world.approve(rt, LEAD, approval_id)

    assert reply.status in ("failed", "refused"), reply
    assert f"Backup {backup_id} changed after the approval was asked" in reply.summary
    assert_untouched(world, changed)
    assert [b["kind"] for b in world.backups()] == ["regular"]  # refused before the safety backup


async def test_a_restore_whose_file_is_gone_leaves_the_database_as_it_was(
    world: BackupWorld, rt: Runtime
) -> None:
    backup_id = await take_backup(world, rt)
    change_data(world)
    changed = world.fingerprint()
    approval_id = await request_restore(world, rt, backup_id)
    world.file_of(backup_id).unlink()

    reply = await world.approve(rt, LEAD, approval_id)

    assert reply.status in ("failed", "refused"), reply
    assert reply.exit_code in (1, 2)
    assert "is missing" in reply.summary, reply.summary
    assert_untouched(world, changed)


async def test_a_restore_that_fails_half_way_leaves_the_database_as_it_was(
    world: BackupWorld, rt: Runtime
) -> None:
    # A dump broken when it was written (its catalogued checksum is the broken file's): only
    # pg_restore finds out, after the safety backup, while it fills the new database.
    backup_id = await take_backup(world, rt)
    path = world.file_of(backup_id)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size * 2 // 3)
        handle.write(bytes(range(256)) * 8)
    world.store_rows("UPDATE backups SET sha256 = %s WHERE id = %s", (sha256_file(path), backup_id))
    change_data(world)
    changed = world.fingerprint()
    approval_id = await request_restore(world, rt, backup_id)

    reply = await world.approve(rt, LEAD, approval_id)

    assert reply.status == "failed", reply
    assert reply.exit_code == 1
    assert "pg_restore failed" in reply.summary and "unchanged" in reply.summary, reply.summary
    assert_untouched(world, changed)
    kinds = {b["kind"]: b["status"] for b in world.backups()}
    assert kinds == {"regular": "good", "safety": "good"}  # the safety backup came first


# --- bad input ------------------------------------------------------------------------------------

BAD_RESTORE = [
    pytest.param("restore ../../etc/passwd", "not a path or a name", id="relative-path"),
    pytest.param("restore /tmp/x.dump", "not a path or a name", id="absolute-path"),
    pytest.param("restore 1; DROP TABLE jobs", "Too many arguments", id="sql"),
    pytest.param("restore '1; DROP TABLE jobs'", "not a path or a name", id="sql-quoted"),
    pytest.param("restore", "Missing argument", id="missing"),
    pytest.param("restore 0", "not a path or a name", id="zero"),
    pytest.param("restore 1.5", "not a path or a name", id="fraction"),
    pytest.param("restore 999999", "There is no backup 999999", id="unknown"),
    pytest.param("restore 99999999999999999999", "not a path or a name", id="huge"),
    pytest.param("restore ²", "Bad argument", id="superscript-digit"),
]


@pytest.mark.parametrize(("text", "says"), BAD_RESTORE)
async def test_bad_restore_input_is_refused_and_runs_nothing(
    idle_world: BackupWorld, idle_rt: Runtime, text: str, says: str
) -> None:
    reply = await idle_world.handle(idle_rt, ADMIN, text)

    assert reply.status == "refused", reply
    assert reply.exit_code == 2
    assert says in reply.summary, reply.summary
    assert "\n" not in reply.summary
    assert idle_world.jobs() == [] and idle_world.approvals() == [] and idle_world.backups() == []
    assert idle_world.files() == []


async def test_only_an_admin_may_ask_for_a_restore(world: BackupWorld, rt: Runtime) -> None:
    backup_id = await take_backup(world, rt)

    reply = await world.handle(rt, OPERATOR, f"restore {backup_id}")

    assert reply.status == "refused", reply
    assert "admin" in reply.summary
    assert world.approvals() == []


@pytest.mark.parametrize("text", ["restore ../../etc/passwd", "restore 999999"])
def test_bad_restore_input_exits_2_from_the_console(idle_world: BackupWorld, text: str) -> None:
    code, out, _ = idle_world.cli(ADMIN, text)

    assert code == 2, out
    assert out["status"] == "refused"
    assert idle_world.jobs() == [] and idle_world.approvals() == [] and idle_world.files() == []


# --- hardening ------------------------------------------------------------------------------------


async def test_the_approval_opens_promptly_while_a_table_is_locked(world: BackupWorld, rt: Runtime) -> None:
    # The approval text gives catalog estimates: an exact count(*) would wait for the lock.
    backup_id = await take_backup(world, rt)
    with psycopg.connect(world.target_url) as locker:
        locker.execute("LOCK TABLE track IN ACCESS EXCLUSIVE MODE")
        try:
            reply = await asyncio.wait_for(world.handle(rt, ADMIN, f"restore {backup_id}"), timeout=15)
        finally:
            locker.rollback()
    assert reply.status == "pending", reply
    assert "tables, about" in world.approvals()[0]["summary"]


@contextmanager
def scripted_api(answers: list[tuple[int, bytes]]) -> Iterator[tuple[str, list[str]]]:
    """A stand-in API whose GET /health gives these answers in turn (the last one repeats);
    yields its base URL and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            status, body = answers[min(len(asked), len(answers)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def restore_runtime(world: BackupWorld, api_url: str, wait_s: float) -> AsyncIterator[Runtime]:
    world.set_env(GARDEN_API_URL=api_url)
    world.bot.configure(backup={"restore_health_wait_seconds": wait_s})
    runtime = await open_runtime(world.bot.settings())
    try:
        yield runtime
    finally:
        await runtime.close()


async def restored(world: BackupWorld, rt: Runtime) -> Reply:
    backup_id = await take_backup(world, rt)
    change_data(world)
    reply = await world.approve(rt, LEAD, await request_restore(world, rt, backup_id))
    assert reply.status == "succeeded", reply
    return reply


def reply_text(reply: Reply) -> str:
    return "\n".join(e.text for e in reply.elements if isinstance(e, Text))


async def test_the_api_is_polled_after_the_swap_until_healthy(world: BackupWorld) -> None:
    answers = [(503, b"starting"), (200, b'{"status":"unhealthy"}'), (200, b'{"status":"healthy"}')]
    with scripted_api(answers) as (api_url, asked):
        async with restore_runtime(world, api_url, wait_s=20) as rt:
            reply = await restored(world, rt)
    assert "API /health after the swap: healthy (after" in reply_text(reply), reply_text(reply)
    assert asked == ["/health"] * 3


async def test_an_api_still_unhealthy_after_the_wait_is_reported_not_failed(world: BackupWorld) -> None:
    with scripted_api([(200, b'{"status":"unhealthy"}')]) as (api_url, asked):
        async with restore_runtime(world, api_url, wait_s=1) as rt:
            reply = await restored(world, rt)
    text = reply_text(reply)
    assert "API /health after the swap: NOT healthy after" in text and "HTTP 200" in text, text
    assert len(asked) >= 2  # polled, not asked once


async def test_a_failed_prune_of_old_copies_is_a_warning_not_a_failure(
    world: BackupWorld, rt: Runtime
) -> None:
    # A template database cannot be dropped: pruning this old `_before_` copy fails for real.
    old = f"{world.target_name}_before_20200101_000000"
    admin_query(f'CREATE DATABASE "{old}" IS_TEMPLATE true')
    try:
        reply = await restored(world, rt)
    finally:
        admin_query(f'ALTER DATABASE "{old}" IS_TEMPLATE false')
    assert "Warning: old copies of the database could not be dropped" in reply_text(reply)
    assert [j["status"] for j in world.jobs() if j["command"] == "restore"] == ["succeeded"]
    assert old in world.related_databases()


# --- recovery time: the safety dump alongside the restore ------------------------------------------


@asynccontextmanager
async def gated_runtime(world: BackupWorld, tmp_path: Path, *, jobs: int = 2) -> AsyncIterator[Any]:
    """A bot whose pg_dump waits at a gate (see GatedPgDump); yields (runtime, gate)."""
    gate = gated_pg_dump(tmp_path / "pg-bin")
    world.set_env(GARDENBOT_PG_BIN_DIR=str(gate.folder))
    world.bot.configure(backup={"restore_jobs": jobs})
    runtime = await open_runtime(world.bot.settings())
    try:
        yield runtime, gate
    finally:
        gate.open()  # nothing stays stuck at the gate
        await runtime.close()


def job_progress(world: BackupWorld, command: str) -> str:
    rows = [j for j in world.jobs() if j["command"] == command]
    return str(rows[-1]["progress_text"] or "") if rows else ""


async def progress_until(world: BackupWorld, words: str, running: asyncio.Task[Reply]) -> str:
    """The restore job's progress text once it contains words (within 90 s)."""
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        text = job_progress(world, "restore")
        if words in text:
            return text
        assert not running.done(), running.result()
        assert asyncio.get_running_loop().time() < deadline, f"progress never said {words!r}: {text!r}"
        await asyncio.sleep(0.1)


async def approved_while_gated(
    world: BackupWorld, rt: Runtime, gate: Any
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A backup, the data changed, a restore requested, the gate closed: (at backup, changed, approval)."""
    gate.open()
    backup_id = await take_backup(world, rt)
    at_backup = world.fingerprint()
    change_data(world)
    changed = world.fingerprint()
    approval_id = await request_restore(world, rt, backup_id)
    gate.close()
    return at_backup, changed, approval_id


async def test_the_safety_dump_and_the_parallel_restore_overlap_and_the_swap_waits_for_both(
    world: BackupWorld, tmp_path: Path
) -> None:
    async with gated_runtime(world, tmp_path, jobs=2) as (rt, gate):
        at_backup, changed, approval_id = await approved_while_gated(world, rt, gate)
        running = asyncio.create_task(world.approve(rt, LEAD, approval_id))

        # The safety pg_dump has started and is held before it writes a byte, yet the restore
        # runs to its end beside it: the two overlap. Nothing is swapped while the dump runs.
        text = await progress_until(world, "restore done", running)
        assert gate.started.exists()
        assert "safety dump" in text, text
        assert world.fingerprint() == changed
        assert any(db.startswith(f"{world.target_name}_restore_") for db in world.related_databases())

        gate.open()
        reply = await running

    assert reply.status == "succeeded", reply
    assert world.fingerprint() == at_backup
    safety = world.backup_row(int(reply.ids["safety_backup_id"]))
    assert (safety["kind"], safety["status"], safety["row_counts"]) == ("safety", "good", changed["counts"])
    assert "--jobs=2" in gate.restore_args.read_text()
    regular_dump, safety_dump = gate.dump_args.read_text().splitlines()
    assert "--compress" not in regular_dump and "--compress=1" in safety_dump  # the quicker safety dump
    # Recovery time, from the approval to the swap and to the first healthy /health after it.
    to_swap, to_healthy = reply.ids["recovery_to_swap_ms"], reply.ids["recovery_to_healthy_ms"]
    assert isinstance(to_swap, int) and isinstance(to_healthy, int)
    assert 0 < to_swap <= to_healthy
    text = reply_text(reply)
    fields = dict(next(e for e in reply.elements if isinstance(e, Fields)).pairs)
    assert fields["recovery time, approval to swap"] and fields["recovery time, approval to healthy API"]
    assert fields["parallel restore jobs"] == "2"
    assert "API /health after the swap: healthy" in text


async def test_a_failed_safety_dump_stops_the_swap_and_leaves_the_live_database_as_it_was(
    world: BackupWorld, tmp_path: Path
) -> None:
    async with gated_runtime(world, tmp_path) as (rt, gate):
        _, changed, approval_id = await approved_while_gated(world, rt, gate)
        running = asyncio.create_task(world.approve(rt, LEAD, approval_id))
        # The restore is done and ready to swap; then the safety pg_dump fails.
        await progress_until(world, "restore done", running)
        gate.fail.touch()
        gate.open()
        reply = await running

    assert reply.status == "failed", reply
    assert "safety backup failed" in reply.summary and "simulated failure" in reply.summary, reply.summary
    assert "live database is unchanged" in reply.summary
    assert_untouched(world, changed)  # not swapped, and the restored copy dropped
    [job] = [j for j in world.jobs() if j["command"] == "restore"]
    assert job["status"] == "failed"
    assert {b["kind"]: b["status"] for b in world.backups()} == {"regular": "good", "safety": "failed"}
