from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.errors import NotFound, RunbookFailed
from runbooks.backups import BackupFile, open_backup, sha256_of, take_backup
from runbooks.pg_tools import PgTools, count_rows, find_pg_tools
from runbooks.progress import Step
from runbooks.restore import (
    RestoreOutcome,
    parallel_jobs,
    prune_old_databases,
    restore_backup,
    restore_database_names,
    restore_into_new_database,
    swap_databases,
)
from runbooks.verify_backup import verify_backup
from tests.support.chinook import CHINOOK_ROWS, clone_database
from tests.support.servers import ADMIN_DSN, create_database, drop_database, url_for

# Fingerprints of whole tables: any changed, missing or extra row changes them.
CHINOOK_FINGERPRINT = (
    "SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY track_id)) FROM track t),"
    " (SELECT md5(string_agg(l::text, ',' ORDER BY invoice_line_id)) FROM invoice_line l)"
)
PGBENCH_FINGERPRINT = (
    "SELECT (SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a),"
    " (SELECT md5(string_agg(b::text, ',' ORDER BY bid)) FROM pgbench_branches b)"
)


def fingerprint(name: str, query: str) -> tuple[str, ...]:
    with psycopg.connect(url_for(name)) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(str(v) for v in row)


def databases_like(prefix: str) -> set[str]:
    with psycopg.connect(ADMIN_DSN) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return {str(r[0]) for r in rows if str(r[0]).startswith(prefix)}


def run_sql(name: str, *statements: str) -> None:
    with psycopg.connect(url_for(name), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


@pytest.fixture
def live(chinook: str) -> Iterator[str]:
    """A Chinook copy; every database whose name starts with its name is dropped afterwards."""
    name = clone_database(chinook)
    try:
        yield name
    finally:
        for leftover in databases_like(name):
            drop_database(leftover)


@pytest.fixture
async def tools() -> PgTools:
    return await find_pg_tools(None)


async def backup_of(name: str, tools: PgTools, folder: Path) -> BackupFile:
    return await take_backup(dsn=url_for(name), backup_dir=folder, tools=tools, label=name)


async def restore_file(path: Path, **kwargs: Any) -> RestoreOutcome:
    """restore_backup of the file at path, held open for the restore."""
    with open_backup(path) as backup:
        return await restore_backup(backup=backup, **kwargs)


async def test_chinook_round_trip(live: str, tools: PgTools, tmp_path: Path) -> None:
    original = fingerprint(live, CHINOOK_FINGERPRINT)
    backup = await backup_of(live, tools, tmp_path)
    verified = await verify_backup(
        admin_dsn=ADMIN_DSN, path=backup.path, expected_rows=backup.row_counts, tools=tools
    )
    assert verified.passed
    run_sql(
        live,
        "DELETE FROM invoice_line WHERE invoice_line_id % 7 = 0",
        "UPDATE track SET name = name || ' (changed)' WHERE track_id < 100",
    )
    changed = fingerprint(live, CHINOOK_FINGERPRINT)
    assert changed != original
    # A session left open on the live database is ended by the swap.
    lingering = await psycopg.AsyncConnection.connect(url_for(live))
    try:
        outcome = await restore_file(
            dsn=url_for(live),
            path=backup.path,
            expected_sha256=backup.sha256,
            expected_rows=backup.row_counts,
            tools=tools,
        )
    finally:
        await lingering.close()
    assert outcome.live == live and outcome.kept_as.startswith(f"{live}_before_")
    assert outcome.row_counts == CHINOOK_ROWS
    assert await count_rows(url_for(live)) == CHINOOK_ROWS
    assert fingerprint(live, CHINOOK_FINGERPRINT) == original
    assert fingerprint(outcome.kept_as, CHINOOK_FINGERPRINT) == changed
    assert databases_like(f"{live}_restore_") == set()


async def test_pgbench_round_trip(tools: PgTools, tmp_path: Path) -> None:
    name = create_database("gbt_pgbench")
    try:
        subprocess.run(
            ["pgbench", "-i", "-s", "1", "-q", url_for(name)],
            check=True,
            capture_output=True,
        )
        original = fingerprint(name, PGBENCH_FINGERPRINT)
        backup = await backup_of(name, tools, tmp_path)
        assert backup.row_counts["public.pgbench_accounts"] == 100_000
        run_sql(
            name,
            "DELETE FROM pgbench_accounts WHERE aid <= 5000",
            "UPDATE pgbench_branches SET bbalance = bbalance + 10",
        )
        outcome = await restore_file(
            dsn=url_for(name),
            path=backup.path,
            expected_sha256=backup.sha256,
            expected_rows=backup.row_counts,
            tools=tools,
        )
        assert fingerprint(name, PGBENCH_FINGERPRINT) == original
        assert await count_rows(url_for(name)) == backup.row_counts
        assert fingerprint(outcome.kept_as, PGBENCH_FINGERPRINT) != original
    finally:
        for leftover in databases_like(name):
            drop_database(leftover)


async def test_a_damaged_dump_leaves_live_untouched(live: str, tools: PgTools, tmp_path: Path) -> None:
    backup = await backup_of(live, tools, tmp_path)
    run_sql(live, "DELETE FROM invoice_line WHERE invoice_line_id < 10")
    before = fingerprint(live, CHINOOK_FINGERPRINT)
    # Damaged after its checksum was taken: the checksum matches the damaged bytes.
    with backup.path.open("r+b") as handle:
        handle.truncate(backup.size_bytes * 2 // 3)
    with pytest.raises(RunbookFailed) as caught:
        await restore_file(
            dsn=url_for(live),
            path=backup.path,
            expected_sha256=sha256_of(backup.path),
            expected_rows=backup.row_counts,
            tools=tools,
        )
    assert caught.value.message_key in {"restore.pg_restore_failed", "backup.unreadable"}
    assert fingerprint(live, CHINOOK_FINGERPRINT) == before
    assert databases_like(live) == {live}


async def test_checksum_or_count_mismatch_leaves_live_untouched(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    backup = await backup_of(live, tools, tmp_path)
    run_sql(live, "DELETE FROM invoice_line WHERE invoice_line_id < 10")
    before = fingerprint(live, CHINOOK_FINGERPRINT)
    with pytest.raises(RunbookFailed) as caught:
        await restore_file(
            dsn=url_for(live),
            path=backup.path,
            expected_sha256="0" * 64,
            expected_rows=backup.row_counts,
            tools=tools,
        )
    assert caught.value.message_key == "restore.checksum_mismatch"
    with pytest.raises(RunbookFailed) as caught:
        await restore_file(
            dsn=url_for(live),
            path=backup.path,
            expected_sha256=backup.sha256,
            expected_rows={**backup.row_counts, "public.track": 1},
            tools=tools,
        )
    assert caught.value.message_key == "restore.row_counts_differ"
    assert caught.value.params["tables"] == "public.track"
    assert fingerprint(live, CHINOOK_FINGERPRINT) == before
    assert databases_like(live) == {live}


async def test_a_failed_swap_leaves_live_connectable(live: str) -> None:
    with pytest.raises(NotFound):
        await swap_databases(
            admin_dsn=ADMIN_DSN, live=live, replacement=f"{live}_nope", keep_as=f"{live}_kept"
        )
    taken = create_database("gbt_taken")
    try:
        other = create_database("gbt_other")
        try:
            with pytest.raises(RunbookFailed) as caught:
                await swap_databases(admin_dsn=ADMIN_DSN, live=live, replacement=other, keep_as=taken)
            assert caught.value.message_key == "restore.database_exists"
        finally:
            drop_database(other)
    finally:
        drop_database(taken)
    assert await count_rows(url_for(live)) == CHINOOK_ROWS


async def test_restoring_into_a_taken_name_is_refused_and_keeps_it(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    backup = await backup_of(live, tools, tmp_path)
    with pytest.raises(RunbookFailed) as caught, open_backup(backup.path) as opened:
        await restore_into_new_database(admin_dsn=ADMIN_DSN, backup=opened, new_name=live, tools=tools)
    assert caught.value.message_key == "restore.database_exists"
    assert await count_rows(url_for(live)) == CHINOOK_ROWS


async def test_old_before_databases_are_pruned(live: str) -> None:
    old = f"{live}_before_20200101_000000"
    abandoned = f"{live}_restore_20200101_000000"
    recent, _ = restore_database_names(live, datetime(2026, 11, 27, tzinfo=UTC))
    for name in (old, abandoned, recent):
        run_sql("postgres", f'CREATE DATABASE "{name}"')
    dropped = await prune_old_databases(
        admin_dsn=ADMIN_DSN, live=live, keep_days=7, now=datetime(2026, 11, 28, tzinfo=UTC)
    )
    assert sorted(dropped) == sorted([old, abandoned])
    assert databases_like(live) == {live, recent}


async def test_auto_parallel_jobs_are_the_target_servers_cores_at_most_8() -> None:
    # The test server runs on this host: the processors it reads are the ones /proc/cpuinfo lists.
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cores = sum(1 for line in lines if line.startswith("processor") and ":" in line)

    assert await parallel_jobs(ADMIN_DSN) == max(1, min(8, cores))
    assert await parallel_jobs(ADMIN_DSN, 3) == 3  # configured: taken as it is


def test_restore_names_fit_postgres_identifiers() -> None:
    at = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert restore_database_names("garden_dx", at) == (
        "garden_dx_restore_20261128_020000",
        "garden_dx_before_20261128_020000",
    )
    with pytest.raises(RunbookFailed):
        restore_database_names("x" * 50, at)


# --- the bytes restored are the bytes approved ----------------------------------------------------


def corrupted_copy(path: Path, into: Path) -> Path:
    """A copy of the dump with 2 KB of table data overwritten: same size, other bytes."""
    data = bytearray(path.read_bytes())
    at = len(data) * 2 // 3
    data[at : at + 2048] = bytes(range(256)) * 8
    into.write_bytes(bytes(data))
    assert into.stat().st_size == path.stat().st_size
    return into


def on_step(key: str, action: Callable[[], None]) -> Callable[[Step], Awaitable[None]]:
    """A progress callback that runs action once, when the step `key` is reported."""
    done: list[bool] = []

    async def progress(step: Step) -> None:
        if step.key == key and not done:
            done.append(True)
            action()

    return progress


async def test_a_same_size_file_swapped_in_after_the_checksum_is_not_restored(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    backup = await backup_of(live, tools, tmp_path)
    original = fingerprint(live, CHINOOK_FINGERPRINT)
    swapped = corrupted_copy(backup.path, tmp_path / "swapped.bin")
    run_sql(live, "DELETE FROM invoice_line WHERE invoice_line_id % 3 = 0")

    # Right after the checksum matched, the path gets other bytes of the same size.
    outcome = await restore_file(
        backup.path,
        dsn=url_for(live),
        expected_sha256=backup.sha256,
        expected_rows=backup.row_counts,
        tools=tools,
        progress=on_step("checksum_matched", lambda: os.replace(swapped, backup.path)),
    )

    assert backup.path.read_bytes() != b"" and sha256_of(backup.path) != backup.sha256  # the swap happened
    assert outcome.row_counts == CHINOOK_ROWS
    assert fingerprint(live, CHINOOK_FINGERPRINT) == original  # the approved bytes were restored


async def test_a_file_changed_in_place_after_the_checksum_is_refused(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    backup = await backup_of(live, tools, tmp_path)
    run_sql(live, "DELETE FROM invoice_line WHERE invoice_line_id < 10")
    before = fingerprint(live, CHINOOK_FINGERPRINT)

    def rewrite_header() -> None:
        # The database name in the archive's header: pg_restore does not mind, the checksum does.
        data = backup.path.read_bytes()
        at = data.index(live.encode())
        with backup.path.open("r+b") as handle:
            handle.seek(at)
            handle.write(b"x" * len(live))

    with pytest.raises(RunbookFailed) as caught:
        await restore_file(
            backup.path,
            dsn=url_for(live),
            expected_sha256=backup.sha256,
            expected_rows=backup.row_counts,
            tools=tools,
            progress=on_step("checksum_matched", rewrite_header),
        )

    assert caught.value.message_key == "restore.checksum_mismatch"
    assert backup.path.stat().st_size == backup.size_bytes
    assert fingerprint(live, CHINOOK_FINGERPRINT) == before
    assert databases_like(live) == {live}


async def test_a_symlinked_backup_is_refused(live: str, tools: PgTools, tmp_path: Path) -> None:
    backup = await backup_of(live, tools, tmp_path)
    run_sql(live, "DELETE FROM invoice_line WHERE invoice_line_id < 10")
    before = fingerprint(live, CHINOOK_FINGERPRINT)
    link = tmp_path / "link.dump"
    link.symlink_to(backup.path)

    with pytest.raises(RunbookFailed) as caught:
        await restore_file(
            link,
            dsn=url_for(live),
            expected_sha256=backup.sha256,
            expected_rows=backup.row_counts,
            tools=tools,
        )

    assert caught.value.message_key == "backup.not_a_regular_file"
    assert fingerprint(live, CHINOOK_FINGERPRINT) == before
    assert databases_like(live) == {live}


# --- database-level properties --------------------------------------------------------------------


@pytest.fixture
def reader_role() -> Iterator[str]:
    """A role with no privileges; request it before `live`, so the databases go first."""
    name = f"gbt_reader_{secrets.token_hex(4)}"
    run_sql("postgres", f'CREATE ROLE "{name}"')
    try:
        yield name
    finally:
        run_sql("postgres", f'DROP ROLE IF EXISTS "{name}"')


def database_properties(name: str, role: str) -> dict[str, Any]:
    with psycopg.connect(ADMIN_DSN) as conn:
        row = conn.execute(
            "SELECT has_database_privilege(%s, d.oid, 'CONNECT'),"
            " EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
            "         WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT'),"
            " (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0),"
            " shobj_description(d.oid, 'pg_database')"
            " FROM pg_database d WHERE d.datname = %s",
            (role, name),
        ).fetchone()
    assert row is not None
    return {"role_connect": row[0], "public_connect": row[1], "settings": row[2], "comment": row[3]}


async def test_restore_carries_the_backups_database_grants_settings_and_comment(
    reader_role: str, live: str, tools: PgTools, tmp_path: Path
) -> None:
    run_sql(
        "postgres",
        f'REVOKE CONNECT ON DATABASE "{live}" FROM PUBLIC',
        f'GRANT CONNECT ON DATABASE "{live}" TO "{reader_role}"',
        f"ALTER DATABASE \"{live}\" SET work_mem = '7MB'",
        f"COMMENT ON DATABASE \"{live}\" IS 'garden: it''s the live one; keep'",
    )
    at_backup = database_properties(live, reader_role)
    assert at_backup == {
        "role_connect": True,
        "public_connect": False,
        "settings": ["work_mem=7MB"],
        "comment": "garden: it's the live one; keep",
    }
    backup = await backup_of(live, tools, tmp_path)
    # Changed after the backup: the restore brings back what the backup carried.
    run_sql(
        "postgres",
        f'GRANT CONNECT ON DATABASE "{live}" TO PUBLIC',
        f'ALTER DATABASE "{live}" RESET work_mem',
        f"COMMENT ON DATABASE \"{live}\" IS 'changed'",
    )

    outcome = await restore_file(
        backup.path,
        dsn=url_for(live),
        expected_sha256=backup.sha256,
        expected_rows=backup.row_counts,
        tools=tools,
    )

    assert database_properties(live, reader_role) == at_backup
    kept = database_properties(outcome.kept_as, reader_role)
    assert (kept["public_connect"], kept["settings"], kept["comment"]) == (True, None, "changed")
