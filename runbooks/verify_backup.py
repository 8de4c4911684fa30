"""Prove a backup restores: restore it into a scratch database, compare row counts, drop it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import NotFound, RunbookFailed
from runbooks.backups import OpenedBackup, open_backup
from runbooks.pg_tools import PgTools
from runbooks.progress import ProgressCallback, Step, report
from runbooks.restore import (
    VERIFY_SCRATCH_PREFIX,
    RowCountDifference,
    check_restored_database,
    drop_database,
    restore_into_new_database,
)


@dataclass(frozen=True)
class VerifyOutcome:
    """passed is False with a problem key when the backup would not give back what it recorded."""

    passed: bool
    problem: str | None  # checksum_mismatch, file_missing, restore_failed, row_counts_differ
    detail: str
    differences: tuple[RowCountDifference, ...]
    row_counts: dict[str, int]
    duration_ms: int

    def as_detail(self) -> dict[str, object]:
        """For the catalog's verify_detail column."""
        return {
            "problem": self.problem,
            "detail": self.detail,
            "tables": len(self.row_counts),
            "differences": [
                {"table": d.table, "expected": d.expected, "actual": d.actual} for d in self.differences
            ],
            "duration_ms": self.duration_ms,
        }


def scratch_database_name() -> str:
    return f"{VERIFY_SCRATCH_PREFIX}{secrets.token_hex(4)}"  # what sweep_scratch_databases matches


async def verify_backup(
    *,
    admin_dsn: str,
    path: Path,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    expected_sha256: str | None = None,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
) -> VerifyOutcome:
    """Restore into a throwaway database on the target server and count; always drops it.

    A backup that is not as recorded is a failed outcome; an unreachable server raises.
    """
    started = time.monotonic()

    def outcome(
        problem: str | None,
        detail: str = "",
        differences: tuple[RowCountDifference, ...] = (),
        rows: dict[str, int] | None = None,
    ) -> VerifyOutcome:
        return VerifyOutcome(
            passed=problem is None,
            problem=problem,
            detail=detail,
            differences=differences,
            row_counts=rows or {},
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    try:
        with open_backup(path) as backup:
            return await _verify_open(
                backup,
                admin_dsn=admin_dsn,
                expected_rows=expected_rows,
                tools=tools,
                expected_sha256=expected_sha256,
                jobs=jobs,
                progress=progress,
                outcome=outcome,
            )
    except NotFound:
        return outcome("file_missing", path.name)
    except RunbookFailed as exc:
        if exc.message_key != "backup.not_a_regular_file":
            raise
        return outcome("restore_failed", str(exc))


async def _verify_open(
    backup: OpenedBackup,
    *,
    admin_dsn: str,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    expected_sha256: str | None,
    jobs: int,
    progress: ProgressCallback | None,
    outcome: Callable[..., VerifyOutcome],
) -> VerifyOutcome:
    """Hash and restore the same open file, so the checked bytes are the restored bytes."""
    if expected_sha256 is not None:
        await report(progress, Step("checking_checksum", 0))
        if await asyncio.to_thread(backup.sha256) != expected_sha256:
            return outcome("checksum_mismatch", backup.path.name)
    scratch = scratch_database_name()
    try:
        await restore_into_new_database(
            admin_dsn=admin_dsn,
            backup=backup,
            new_name=scratch,
            tools=tools,
            jobs=jobs,
            progress=progress,
        )
    except RunbookFailed as exc:
        return outcome("restore_failed", str(exc))
    try:
        await report(progress, Step("counting_rows", 99))
        rows, differences = await check_restored_database(
            admin_dsn=admin_dsn, name=scratch, expected_rows=expected_rows
        )
    finally:
        await asyncio.shield(drop_database(admin_dsn, scratch))
    await report(progress, Step("verified" if not differences else "verify_rows_differ", 100))
    return outcome("row_counts_differ" if differences else None, "", differences, rows)
