from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import runbooks.backups as backups
from core.errors import RunbookFailed, TargetUnreachable
from runbooks.backups import (
    archives_past_retention,
    backup_file_name,
    backups_past_retention,
    check_backup_file,
    cleanup_partials,
    open_backup,
    prune_backups,
    reconcile_backup_dir,
    sha256_of,
    take_backup,
)
from runbooks.pg_tools import PgTools, admin_dsn, find_pg_tools
from runbooks.progress import Step
from runbooks.restore import restore_into_new_database
from runbooks.verify_backup import verify_backup
from tests.support.chinook import CHINOOK_ROWS, clone_database, fake_pg_tool
from tests.support.servers import ADMIN_DSN, create_database, drop_database, url_for


@pytest.fixture
def live(chinook: str) -> Iterator[str]:
    name = clone_database(chinook)
    try:
        yield url_for(name)
    finally:
        drop_database(name)


@pytest.fixture
async def tools() -> PgTools:
    return await find_pg_tools(None)


def stand_in_tools(folder: Path, real: PgTools, pg_dump_body: str) -> PgTools:
    fake = fake_pg_tool(folder, "pg_dump", real.version_text, pg_dump_body)
    return PgTools(fake, real.pg_restore, None, real.version, real.version_text)


def scratch_databases() -> set[str]:
    with psycopg.connect(ADMIN_DSN) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'gardenbot\\_verify\\_%'"
        ).fetchall()
    return {str(r[0]) for r in rows}


async def test_backup_is_a_checked_private_file_with_counts(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    seen: list[tuple[int, str]] = []

    async def progress(step: Step) -> None:
        seen.append((step.percent, step.key))

    at = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    name = backup_file_name("garden_dx", at)
    assert name == "garden_dx-20261128T020000Z.dump"
    backup = await take_backup(
        dsn=live, backup_dir=tmp_path / "b", tools=tools, file_name=name, progress=progress
    )
    assert backup.path == tmp_path / "b" / name
    assert sorted(p.name for p in backup.path.parent.iterdir()) == [name]
    assert backup.size_bytes == backup.path.stat().st_size > 0
    assert backup.sha256 == sha256_of(backup.path)
    assert backup.row_counts == CHINOOK_ROWS
    assert backup.table_count == 11
    assert backup.toc_entries == await check_backup_file(path=backup.path, tools=tools)
    assert stat.S_IMODE(backup.path.stat().st_mode) == 0o600
    assert backup.pg_dump_version == tools.version_text
    assert backup.server_version.startswith("PostgreSQL")
    assert seen[-1][0] == 100
    assert all(-1 <= percent <= 100 for percent, _ in seen)


async def test_an_empty_database_backs_up_and_verifies(tools: PgTools, tmp_path: Path) -> None:
    # A new Garden DX before its first migration: nothing to dump is still a good backup.
    name = create_database("gbt_empty")
    try:
        backup = await take_backup(
            dsn=url_for(name), backup_dir=tmp_path / "b", tools=tools, file_name="empty.dump"
        )
        verified = await verify_backup(
            admin_dsn=ADMIN_DSN,
            path=backup.path,
            expected_rows=backup.row_counts,
            expected_sha256=backup.sha256,
            tools=tools,
        )
    finally:
        drop_database(name)

    assert (backup.toc_entries, backup.table_count, backup.row_counts) == (0, 0, {})
    assert verified.passed, verified


async def test_progress_reports_a_percentage_when_the_size_is_expected(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    seen: list[int] = []

    async def progress(step: Step) -> None:
        seen.append(step.percent)

    await take_backup(dsn=live, backup_dir=tmp_path, tools=tools, expected_bytes=10, progress=progress)
    assert 99 in seen and -1 not in seen


async def test_a_failing_progress_callback_does_not_fail_the_backup(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    async def broken(step: Step) -> None:
        raise RuntimeError("slack is down")

    backup = await take_backup(dsn=live, backup_dir=tmp_path, tools=tools, progress=broken)
    assert backup.path.is_file()


async def test_an_existing_backup_name_is_refused(live: str, tools: PgTools, tmp_path: Path) -> None:
    (tmp_path / "x.dump").write_bytes(b"keep me")
    with pytest.raises(RunbookFailed) as caught:
        await take_backup(dsn=live, backup_dir=tmp_path, tools=tools, file_name="x.dump")
    assert caught.value.message_key == "backup.file_exists"
    assert (tmp_path / "x.dump").read_bytes() == b"keep me"
    for bad in ("../x.dump", "x.sql"):
        with pytest.raises(RunbookFailed) as caught:
            await take_backup(dsn=live, backup_dir=tmp_path, tools=tools, file_name=bad)
        assert caught.value.message_key == "backup.bad_file_name"


async def test_target_down_is_unreachable(tools: PgTools, tmp_path: Path) -> None:
    with pytest.raises(TargetUnreachable):
        await take_backup(
            dsn="postgresql://postgres:pw@127.0.0.1:1/garden_dx", backup_dir=tmp_path, tools=tools
        )
    assert list(tmp_path.iterdir()) == []


async def test_pg_dump_gets_the_password_through_its_environment(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    fake = stand_in_tools(tmp_path, tools, f'echo "$@" > {seen}.argv; env > {seen}.env; printf PGDMP; exit 0')
    with_password = live.replace("postgres@", "postgres:Zq9sekrit@")
    with pytest.raises(RunbookFailed):  # five bytes are no archive
        await take_backup(dsn=with_password, backup_dir=tmp_path / "b", tools=fake)
    assert "Zq9sekrit" not in Path(f"{seen}.argv").read_text()
    assert "--snapshot=" in Path(f"{seen}.argv").read_text()
    assert "PGPASSWORD=Zq9sekrit" in Path(f"{seen}.env").read_text().splitlines()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("printf 'PGDMP half a dump'; echo 'pg_dump: error: boom' >&2; exit 1", "pg_dump_failed"),
        ("head -c 300000 /dev/urandom; exit 0", "unreadable"),
    ],
)
async def test_a_failed_dump_leaves_no_file(
    live: str, tools: PgTools, tmp_path: Path, body: str, key: str
) -> None:
    folder = tmp_path / "b"
    with pytest.raises(RunbookFailed) as caught:
        await take_backup(dsn=live, backup_dir=folder, tools=stand_in_tools(tmp_path, tools, body))
    assert caught.value.message_key == f"backup.{key}"
    assert list(folder.iterdir()) == []


async def test_disk_full_is_named(
    live: str, tools: PgTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "_create_partial", lambda path: os.open("/dev/full", os.O_WRONLY))
    with pytest.raises(RunbookFailed) as caught:
        await take_backup(dsn=live, backup_dir=tmp_path, tools=tools)
    assert caught.value.message_key == "backup.disk_full"
    assert list(tmp_path.iterdir()) == []


async def test_a_cancelled_backup_kills_pg_dump_and_leaves_no_partial(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    body = f"echo $$ > {pid_file}; head -c 100000 /dev/zero; exec sleep 60"
    folder = tmp_path / "b"
    started = asyncio.Event()

    async def progress(step: Step) -> None:
        if step.key == "dumping" and int(str(step.params["written_bytes"])) > 0:
            started.set()

    task = asyncio.create_task(
        take_backup(
            dsn=live,
            backup_dir=folder,
            tools=stand_in_tools(tmp_path, tools, body),
            progress=progress,
        )
    )
    await asyncio.wait_for(started.wait(), timeout=20)
    assert [p.suffix for p in folder.iterdir()] == [".partial"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(folder.iterdir()) == []
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


async def test_verify_passes_and_drops_its_scratch_database(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    backup = await take_backup(dsn=live, backup_dir=tmp_path, tools=tools)
    before = scratch_databases()
    outcome = await verify_backup(
        admin_dsn=ADMIN_DSN,
        path=backup.path,
        expected_rows=backup.row_counts,
        expected_sha256=backup.sha256,
        tools=tools,
    )
    assert outcome.passed, outcome
    assert outcome.row_counts == CHINOOK_ROWS
    assert scratch_databases() == before

    wrong = {**backup.row_counts, "public.track": 1, "public.gone": 5}
    outcome = await verify_backup(admin_dsn=ADMIN_DSN, path=backup.path, expected_rows=wrong, tools=tools)
    assert not outcome.passed and outcome.problem == "row_counts_differ"
    assert {(d.table, d.expected, d.actual) for d in outcome.differences} == {
        ("public.track", 1, 3503),
        ("public.gone", 5, None),
    }
    assert outcome.as_detail()["differences"]
    assert scratch_databases() == before


async def test_verify_fails_a_damaged_backup(live: str, tools: PgTools, tmp_path: Path) -> None:
    backup = await take_backup(dsn=live, backup_dir=tmp_path, tools=tools)
    sha = backup.sha256
    with backup.path.open("r+b") as handle:
        handle.truncate(backup.size_bytes // 2)
    before = scratch_databases()
    outcome = await verify_backup(
        admin_dsn=ADMIN_DSN, path=backup.path, expected_rows=backup.row_counts, tools=tools
    )
    assert (outcome.passed, outcome.problem) == (False, "restore_failed")
    outcome = await verify_backup(
        admin_dsn=ADMIN_DSN,
        path=backup.path,
        expected_rows=backup.row_counts,
        expected_sha256=sha,
        tools=tools,
    )
    assert (outcome.passed, outcome.problem) == (False, "checksum_mismatch")
    outcome = await verify_backup(
        admin_dsn=ADMIN_DSN, path=tmp_path / "nope.dump", expected_rows={}, tools=tools
    )
    assert outcome.problem == "file_missing"
    assert scratch_databases() == before


def test_cleanup_partials_removes_only_partials(tmp_path: Path) -> None:
    (tmp_path / "a.dump.partial").write_bytes(b"x")
    (tmp_path / "b.dump").write_bytes(b"y")
    assert cleanup_partials(tmp_path) == [tmp_path / "a.dump.partial"]
    assert [p.name for p in tmp_path.iterdir()] == ["b.dump"]
    assert cleanup_partials(tmp_path / "absent") == []


@dataclass(frozen=True)
class Entry:
    id: int
    file_name: str
    status: str
    finished_at: datetime | None
    size_bytes: int | None = None
    sha256: str | None = None

    @property
    def started_at(self) -> datetime:
        return self.finished_at or datetime(2020, 1, 1, tzinfo=UTC)


def test_retention_keeps_the_newest_good_backup_however_old(tmp_path: Path) -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    entries = [
        Entry(1, "a.dump", "good", now - timedelta(days=90)),
        Entry(2, "b.dump", "good", now - timedelta(days=60)),
        Entry(3, "c.dump", "failed", now - timedelta(days=10)),
        Entry(4, "d.dump", "running", None),
    ]
    for entry in entries:
        (tmp_path / entry.file_name).write_bytes(b"x")
    pruned = prune_backups(backup_dir=tmp_path, entries=entries, retention_days=30, now=now)
    assert [e.id for e in pruned] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "c.dump", "d.dump"]
    fresh = [*entries, Entry(5, "e.dump", "good", now - timedelta(days=1))]
    assert [e.id for e in backups_past_retention(fresh, retention_days=30, now=now)] == [1, 2]
    assert backups_past_retention([entries[2]], retention_days=1, now=now) == []


@dataclass
class Archive:
    id: int
    host: str
    path: str
    status: str
    created_at: datetime


def test_file_retention_keeps_each_hosts_newest_archive_however_old_and_never_a_kept_archives_file() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    archives = [
        Archive(1, "web1", "/b/garden-files-web1-1.tar.gz", "good", now - timedelta(days=200)),
        Archive(2, "web1", "/b/garden-files-web1-2.tar.gz", "good", now - timedelta(days=150)),
        Archive(3, "web1", "/b/garden-files-web1-3.tar.gz", "pruned", now - timedelta(days=300)),
        Archive(4, "web2", "/b/garden-files-web2-1.tar.gz", "good", now - timedelta(days=400)),  # web2's only
        Archive(5, "web3", "/b/garden-files-web3-1.tar.gz", "good", now - timedelta(days=120)),
        Archive(6, "web3", "/b/garden-files-web3-1.tar.gz", "good", now - timedelta(days=100)),  # same file
        Archive(7, "web3", "/b/garden-files-web3-2.tar.gz", "good", now - timedelta(days=5)),
    ]

    chosen = archives_past_retention(archives, retention_days=90, now=now)

    assert [a.id for a in chosen] == [1, 5, 6]  # web1's newest (150 days) and web2's only one stay
    # A newer good row naming the same file keeps it: the old row is not chosen.
    shared = [*archives[4:6], Archive(8, "web3", "/b/garden-files-web3-1.tar.gz", "good", now)]
    assert archives_past_retention(shared, retention_days=90, now=now) == []
    assert archives_past_retention(archives, retention_days=3650, now=now) == []


def test_reconciliation_finds_strays_missing_and_changed_files(tmp_path: Path) -> None:
    (tmp_path / "same.dump").write_bytes(b"abc")
    (tmp_path / "resized.dump").write_bytes(b"abcd")
    (tmp_path / "edited.dump").write_bytes(b"xyz")
    (tmp_path / "stray.dump").write_bytes(b"?")
    (tmp_path / "killed.dump.partial").write_bytes(b"?")
    sha = sha256_of(tmp_path / "same.dump")
    entries = [
        Entry(1, "same.dump", "good", None, 3, sha),
        Entry(2, "resized.dump", "good", None, 3, sha),
        Entry(3, "edited.dump", "good", None, 3, sha),
        Entry(4, "gone.dump", "good", None, 3, sha),
        Entry(5, "old.dump", "pruned", None, 3, sha),
    ]
    quick = reconcile_backup_dir(tmp_path, entries)
    assert quick.untracked_files == (tmp_path / "stray.dump",)
    assert quick.partial_files == (tmp_path / "killed.dump.partial",)
    assert quick.missing_files == (4,)
    assert quick.changed_files == ((2, "size"),)
    full = reconcile_backup_dir(tmp_path, entries, check_checksums=True)
    assert full.changed_files == ((2, "size"), (3, "sha256"))
    assert not full.clean
    assert reconcile_backup_dir(tmp_path / "empty", []).clean


# --- limits and environment of the pg tools ------------------------------------------------------

BOT_SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-Zq9slack",
    "SLACK_SIGNING_SECRET": "Zq9signing",
    "GARDENBOT_AUDIT_KEY": "Zq9audit",
    "GARDENBOT_ALERT_TOKEN": "Zq9alert",
    "DATABASE_URL": "postgresql://bot:Zq9botdsn@127.0.0.1/gardenbot",
    "PGPASSWORD": "Zq9inherited",
}


async def test_pg_tools_get_only_an_allow_listed_environment(
    live: str, tools: PgTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in BOT_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LC_TIME", "C")
    seen = tmp_path / "seen"
    dump = fake_pg_tool(tmp_path, "pg_dump", tools.version_text, f"env > {seen}-dump.env; printf PGDMP")
    restore = fake_pg_tool(
        tmp_path,
        "pg_restore",
        tools.version_text,
        f'env > "{seen}$1.env"; [ "$1" = "--list" ] && echo "1; 0 0 TABLE public t x"; exit 0',
    )
    fake = PgTools(dump, restore, None, tools.version, tools.version_text)
    target = live.replace("postgres@", "postgres:Zq9target@")

    await take_backup(dsn=target, backup_dir=tmp_path / "b", tools=fake)  # the fake list passes
    scratch = f"gbt_envcheck_{os.getpid()}"
    try:
        with open_backup(next((tmp_path / "b").iterdir())) as opened:
            await restore_into_new_database(
                admin_dsn=admin_dsn(target), backup=opened, new_name=scratch, tools=fake
            )
    finally:
        drop_database(scratch)

    envs = {p.name: p.read_text() for p in tmp_path.glob("seen*.env")}
    assert set(envs) == {"seen-dump.env", "seen--list.env", "seen--no-password.env"}
    for name, text in envs.items():
        for secret in BOT_SECRETS.values():
            assert secret not in text, (name, secret)
        assert "LC_TIME=C" in text.splitlines() and any(v.startswith("PATH=") for v in text.splitlines())
    assert "PGPASSWORD=Zq9target" in envs["seen-dump.env"].splitlines()
    assert "PGPASSWORD=Zq9target" in envs["seen--no-password.env"].splitlines()
    assert "PGPASSWORD" not in envs["seen--list.env"]  # reading a file needs no password


async def test_a_table_locked_by_another_session_fails_the_backup_instead_of_hanging(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    with psycopg.connect(live) as locker:
        locker.execute("LOCK TABLE invoice_line IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        with pytest.raises(RunbookFailed) as caught:
            await asyncio.wait_for(
                take_backup(dsn=live, backup_dir=tmp_path, tools=tools, lock_wait_timeout_s=1),
                timeout=30,
            )
        locker.rollback()
    assert caught.value.message_key == "backup.table_locked"
    assert list(tmp_path.iterdir()) == []


async def test_a_backup_past_its_time_limit_is_abandoned_and_pg_dump_killed(
    live: str, tools: PgTools, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    body = f"echo $$ > {pid_file}; exec sleep 60"
    folder = tmp_path / "b"
    with pytest.raises(RunbookFailed) as caught:
        await asyncio.wait_for(
            take_backup(
                dsn=live, backup_dir=folder, tools=stand_in_tools(tmp_path, tools, body), timeout_s=1
            ),
            timeout=30,
        )
    assert caught.value.message_key == "backup.timed_out"
    assert list(folder.iterdir()) == []
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()
