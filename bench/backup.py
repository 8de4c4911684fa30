"""Backup and restore overhead of the bot against the raw PostgreSQL tools, and the bot's memory.

    .venv/bin/python -m bench.backup [--admin-dsn URL] [--keep]

Builds (or reuses) a database of about 330 MB whose custom-format dump is about 140 MB (pgbench
tables plus a table of random bytea that does not compress), then in one run measures:
raw `pg_dump -Fc -f` vs take_backup (checksum and list check included), raw `pg_restore -d` vs
restore_into_new_database + row count check, and the peak RSS of this process while the bot works,
on a small database and on the big one (it should stay flat). Then the whole restore, as the
`restore` command runs it after the approval: checksum, the safety dump of the live database
alongside a parallel pg_restore, row counts, swap; against a raw single-job `pg_restore -d` of the
same file into a fresh database (`--restore-only` measures only this), with the whole machine's
busy CPU seconds during each (the bot's CPU / cores is the least time any schedule of its work can
take). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql

from core.config import Backup
from runbooks.backups import BackupFile, OpenedBackup, open_backup, take_backup
from runbooks.pg_tools import PgTools, child_env, dsn_for_database, find_pg_tools
from runbooks.restore import (
    RestoreOutcome,
    check_restored_database,
    drop_database,
    parallel_jobs,
    restore_backup,
    restore_into_new_database,
)

T = TypeVar("T")
SAFETY_COMPRESSION = Backup.model_fields["safety_compression"].default  # as the `restore` command
BLOB_BYTES = 2048


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """Peak resident memory of this process during a block (VmHWM reset, VmRSS polled)."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, status_kib("VmRSS"))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakRss:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak_kib = max(self.peak_kib, status_kib("VmHWM"))

    @property
    def mib(self) -> float:
        return self.peak_kib / 1024


async def run(args: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {err.decode(errors='replace')[-500:]}")


async def timed(work: Awaitable[T]) -> tuple[float, T]:
    """Seconds the awaitable takes (a coroutine starts only when awaited)."""
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


def machine_busy_s() -> float:
    """CPU seconds this machine has spent busy (every process: ours, PostgreSQL's, the kernel's)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


async def busy(work: Awaitable[T]) -> tuple[float, float, T]:
    """(seconds, busy CPU seconds of the whole machine, result) of the awaitable."""
    cpu = machine_busy_s()
    seconds, result = await timed(work)
    return seconds, machine_busy_s() - cpu, result


async def database_exists(admin: str, name: str) -> bool:
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return await cur.fetchone() is not None


async def database_size(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute("SELECT pg_database_size(current_database())")).fetchone()
    return int(row[0]) if row else 0


async def build_database(admin: str, name: str, scale: int, blobs: int) -> None:
    """pgbench tables (compress well) plus random bytea (does not compress)."""
    print(f"building {name}: pgbench -s {scale} and {blobs} x {BLOB_BYTES} B random blobs", flush=True)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = dsn_for_database(admin, name)
    await run(["pgbench", "-i", "-q", "-s", str(scale)], child_env(dsn))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE bench_blobs (id int PRIMARY KEY, payload bytea NOT NULL)")
        async with conn.cursor() as cur, cur.copy("COPY bench_blobs FROM STDIN") as copy:
            for n in range(blobs):
                await copy.write_row((n, os.urandom(BLOB_BYTES)))
        await conn.execute("VACUUM ANALYZE")


async def restore_and_check(admin: str, name: str, backup: BackupFile, tools: PgTools) -> None:
    with open_backup(backup.path) as opened:
        await restore_into_new_database(admin_dsn=admin, backup=opened, new_name=name, tools=tools)
    _, differences = await check_restored_database(
        admin_dsn=admin, name=name, expected_rows=backup.row_counts
    )
    assert not differences, differences


async def measure(admin: str, name: str, tools: PgTools, folder: Path, rounds: int) -> dict[str, float]:
    dsn = dsn_for_database(admin, name)
    raw_dump: list[float] = []
    bot_dump: list[float] = []
    raw_restore: list[float] = []
    bot_restore: list[float] = []
    rss_backup: list[float] = []
    rss_restore: list[float] = []
    size = 0
    for n in range(rounds):
        raw_file = folder / f"raw-{n}.dump"
        seconds, _ = await timed(run([str(tools.pg_dump), "-Fc", "-f", str(raw_file)], child_env(dsn)))
        raw_dump.append(seconds)
        async with PeakRss() as rss:
            seconds, backup = await timed(
                take_backup(dsn=dsn, backup_dir=folder, tools=tools, file_name=f"bot-{n}.dump")
            )
        bot_dump.append(seconds)
        rss_backup.append(rss.mib)
        size = backup.size_bytes

        target = f"{name}_raw_{secrets.token_hex(3)}"
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
        try:
            seconds, _ = await timed(
                run(
                    [str(tools.pg_restore), "--exit-on-error", "-d", target, str(raw_file)],
                    child_env(admin),
                )
            )
            raw_restore.append(seconds)
        finally:
            await drop_database(admin, target)

        target = f"{name}_bot_{secrets.token_hex(3)}"

        try:
            async with PeakRss() as rss:
                seconds, _ = await timed(restore_and_check(admin, target, backup, tools))
            bot_restore.append(seconds)
            rss_restore.append(rss.mib)
        finally:
            await drop_database(admin, target)
        raw_file.unlink()
        backup.path.unlink()
        print(
            f"round {n + 1}: dump raw {raw_dump[-1]:.1f}s bot {bot_dump[-1]:.1f}s;"
            f" restore raw {raw_restore[-1]:.1f}s bot {bot_restore[-1]:.1f}s",
            flush=True,
        )
    return {
        "dump_raw": statistics.median(raw_dump),
        "dump_bot": statistics.median(bot_dump),
        "restore_raw": statistics.median(raw_restore),
        "restore_bot": statistics.median(bot_restore),
        "rss_backup": max(rss_backup),
        "rss_restore": max(rss_restore),
        "dump_bytes": size,
    }


async def raw_restore(admin: str, name: str, path: Path, tools: PgTools) -> tuple[float, float]:
    """Seconds and busy CPU seconds of a single-job `pg_restore -d` into a fresh database (dropped
    afterwards)."""
    target = f"{name}_raw_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    try:
        seconds, cpu, _ = await busy(
            run([str(tools.pg_restore), "--exit-on-error", "-d", target, str(path)], child_env(admin))
        )
    finally:
        await drop_database(admin, target)
    return seconds, cpu


async def bot_whole_restore(
    admin: str,
    name: str,
    backup: BackupFile,
    tools: PgTools,
    folder: Path,
    jobs: int,
    *,
    before: bool = False,
    safety_compression: int = SAFETY_COMPRESSION,
) -> tuple[float, float]:
    """Seconds and busy CPU seconds of the bot's whole restore over a copy of `name` (made and
    dropped outside the time).

    before=True: as it ran before, the safety dump (pg_dump's default compression) first, then a
    single-job restore.
    """
    live = f"{name}_live_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(live), sql.Identifier(name))
        )
    live_dsn = dsn_for_database(admin, live)
    safety = folder / f"safety-{live}.dump"

    def safety_dump() -> Awaitable[BackupFile]:
        return take_backup(
            dsn=live_dsn,
            backup_dir=folder,
            tools=tools,
            file_name=safety.name,
            expected_bytes=backup.size_bytes,
            compress=None if before else safety_compression,
        )

    async def whole(opened: OpenedBackup) -> RestoreOutcome:
        if before:
            await safety_dump()
        return await restore_backup(
            dsn=live_dsn,
            backup=opened,
            expected_sha256=backup.sha256,
            expected_rows=backup.row_counts,
            tools=tools,
            jobs=1 if before else jobs,
            alongside=None if before else safety_dump,
        )

    try:
        with open_backup(backup.path) as opened:
            seconds, cpu, outcome = await busy(whole(opened))
        await drop_database(admin, outcome.kept_as)
    finally:
        await drop_database(admin, live)
        safety.unlink(missing_ok=True)
    return seconds, cpu


async def measure_whole_restore(
    admin: str, name: str, tools: PgTools, folder: Path, rounds: int, *, before: bool, safety_compression: int
) -> dict[str, float]:
    """Raw single-job pg_restore vs the bot's whole restore (safety dump included), same file."""
    backup = await take_backup(
        dsn=dsn_for_database(admin, name), backup_dir=folder, tools=tools, file_name="whole.dump"
    )
    jobs = await parallel_jobs(admin)
    raw: list[tuple[float, float]] = []
    bot: list[tuple[float, float]] = []
    old: list[tuple[float, float]] = []
    try:
        for n in range(rounds):
            raw.append(await raw_restore(admin, name, backup.path, tools))
            bot.append(
                await bot_whole_restore(
                    admin, name, backup, tools, folder, jobs, safety_compression=safety_compression
                )
            )
            if before:
                old.append(await bot_whole_restore(admin, name, backup, tools, folder, jobs, before=True))
            print(
                f"whole restore round {n + 1}: raw -j1 {raw[-1][0]:.1f}s ({raw[-1][1]:.1f} CPU-s)"
                f" bot {bot[-1][0]:.1f}s ({bot[-1][1]:.1f} CPU-s)"
                + (f" bot before (one after the other) {old[-1][0]:.1f}s" if old else ""),
                flush=True,
            )
    finally:
        backup.path.unlink(missing_ok=True)
    return {
        "whole_raw": statistics.median(s for s, _ in raw),
        "whole_bot": statistics.median(s for s, _ in bot),
        "whole_raw_cpu": statistics.median(c for _, c in raw),
        "whole_bot_cpu": statistics.median(c for _, c in bot),
        "whole_jobs": jobs,
        "whole_before": statistics.median(s for s, _ in old) if old else 0.0,
        "dump_bytes": backup.size_bytes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--db", default="gardenbot_bench")
    parser.add_argument("--scale", type=int, default=12, help="pgbench scale of the big database")
    parser.add_argument("--blobs", type=int, default=64_000, help="2 KiB random rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where dumps go (same disk)")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    parser.add_argument("--restore-only", action="store_true", help="only the whole-restore figure")
    parser.add_argument(
        "--safety-compression", type=int, default=SAFETY_COMPRESSION, help="the safety dump's zlib level"
    )
    parser.add_argument(
        "--before", action="store_true", help="also the restore as it was: safety dump, then one job"
    )
    options = parser.parse_args()
    admin: str = options.admin_dsn
    tools = await find_pg_tools(None)
    folder = Path(tempfile.mkdtemp(prefix="gardenbot-bench-", dir=options.dir))
    small, big = f"{options.db}_small", options.db
    results: dict[str, dict[str, float]] = {}
    try:
        for name, scale, blobs in ((small, 1, 4_000), (big, options.scale, options.blobs)):
            if not await database_exists(admin, name):
                await build_database(admin, name, scale, blobs)
            results[name] = {"db_bytes": await database_size(dsn_for_database(admin, name))}
            if not options.restore_only:
                results[name] |= await measure(admin, name, tools, folder, options.rounds)
        results["whole"] = await measure_whole_restore(
            admin,
            big,
            tools,
            folder,
            options.rounds,
            before=options.before,
            safety_compression=options.safety_compression,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if not options.keep:
            for name in (small, big):
                await drop_database(admin, name)
    print()
    print(
        f"PostgreSQL tools {tools.version_text}; database {results[big]['db_bytes'] / 1e6:.0f} MB,"
        f" dump {results['whole']['dump_bytes'] / 1e6:.0f} MB; median of {options.rounds} rounds;"
        f" {os.cpu_count()} CPUs"
    )
    print()
    print("| measure | raw tool | bot | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    if not options.restore_only:
        report(results, small, big)
    w = results["whole"]
    print(
        f"| whole restore (pg_restore -d, 1 job vs restore incl. safety dump -Z{options.safety_compression}"
        " alongside,"
        f" --jobs={w['whole_jobs']:.0f}, checksum, row counts, swap) |"
        f" {w['whole_raw']:.2f} s | {w['whole_bot']:.2f} s |"
        f" {w['whole_bot'] / w['whole_raw']:.2f}x | <= 1.0x |"
    )
    cores = len(os.sched_getaffinity(0))
    floor = w["whole_bot_cpu"] / cores
    print(
        f"| busy CPU of the whole machine (median): raw {w['whole_raw_cpu']:.2f} CPU-s, bot"
        f" {w['whole_bot_cpu']:.2f} CPU-s; the bot's work on {cores} cores takes at least"
        f" {floor:.2f} s however it is scheduled | {w['whole_raw']:.2f} s | >= {floor:.2f} s |"
        f" >= {floor / w['whole_raw']:.2f}x | |"
    )
    if w["whole_before"]:
        print(
            f"| whole restore before (safety dump, then pg_restore 1 job) | {w['whole_raw']:.2f} s |"
            f" {w['whole_before']:.2f} s | {w['whole_before'] / w['whole_raw']:.2f}x | |"
        )
    sys.stdout.flush()


def report(results: dict[str, dict[str, float]], small: str, big: str) -> None:
    b, s = results[big], results[small]
    mb = 1e6
    print(
        f"| backup (pg_dump -Fc vs take_backup incl. sha256 + list check) |"
        f" {b['dump_raw']:.2f} s | {b['dump_bot']:.2f} s |"
        f" {b['dump_bot'] / b['dump_raw']:.2f}x | <= 1.10x |"
    )
    print(
        f"| restore (pg_restore -d vs restore_into_new_database + row counts) |"
        f" {b['restore_raw']:.2f} s | {b['restore_bot']:.2f} s |"
        f" {b['restore_bot'] / b['restore_raw']:.2f}x | <= 1.25x |"
    )
    print(
        f"| peak RSS during backup, {s['db_bytes'] / mb:.0f} MB db -> {b['db_bytes'] / mb:.0f} MB db |"
        f" | {s['rss_backup']:.0f} MiB -> {b['rss_backup']:.0f} MiB | | <= 150 MB, flat |"
    )
    print(
        f"| peak RSS during restore, {s['db_bytes'] / mb:.0f} MB db -> {b['db_bytes'] / mb:.0f} MB db |"
        f" | {s['rss_restore']:.0f} MiB -> {b['rss_restore']:.0f} MiB | | <= 150 MB, flat |"
    )


if __name__ == "__main__":
    asyncio.run(main())
