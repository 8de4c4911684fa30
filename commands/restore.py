"""`restore <backup-id>`: admin, approved by a second person, safety backup first, atomic swap."""

from __future__ import annotations

from commands.backup import BACKUP_LOCK, BackupIdArgs, good_backup, pg_tools, take_catalogued_backup
from commands.base import ApprovalText, Command, Context, Role
from core.errors import Conflict, RunbookFailed
from core.formatting import format_bytes, format_duration, format_time
from core.reply import Fields, Reply, Text
from core.secrets import mask_dsn
from runbooks.health import check_database
from runbooks.pg_tools import admin_dsn, count_rows, database_name
from runbooks.restore import prune_old_databases, restore_backup

KEEP_BEFORE_DAYS = 7


async def describe_restore(ctx: Context, args: BackupIdArgs) -> ApprovalText:
    """What the approver must know: which backup, how big, its checksum, and what gets replaced."""
    svc = ctx.services
    record = await good_backup(svc, args.id)
    dsn = svc.target_database_url()
    current = await count_rows(dsn)
    summary = ctx.t(
        "restore.describe",
        backup_id=record.id,
        taken=format_time(record.finished_at, svc.settings.zone),
        size=format_bytes(record.size_bytes),
        sha=(record.sha256 or "")[:16],
        database=database_name(dsn),
        where=mask_dsn(dsn),
        tables=len(current),
        rows=sum(current.values()),
    )
    # The approval is bound to this file: a changed file is refused when it is approved.
    return ApprovalText(summary=summary, binding={"sha256": record.sha256, "file_name": record.file_name})


async def run_restore(ctx: Context, args: BackupIdArgs) -> Reply:
    t = ctx.t
    svc = ctx.services
    record = await good_backup(svc, args.id)
    if ctx.binding and (
        ctx.binding.get("sha256") != record.sha256 or ctx.binding.get("file_name") != record.file_name
    ):
        raise Conflict("restore.binding_changed", backup_id=record.id)
    path = svc.settings.backup_dir / record.file_name
    if record.size_bytes is not None and path.stat().st_size != record.size_bytes:
        # Cheap check before the safety backup; the full checksum is checked before restoring.
        raise RunbookFailed("restore.checksum_mismatch", file=record.file_name)
    expected_sha = str(ctx.binding.get("sha256") or record.sha256)
    tools = await pg_tools(svc)
    dsn = svc.target_database_url()

    async def safety_progress(percent: int, text: str) -> None:
        await ctx.progress(max(0, percent) * 30 // 100, t("restore.step_safety") + f" — {text}")

    async def restore_progress(percent: int, text: str) -> None:
        await ctx.progress(30 + max(0, percent) * 65 // 100, t("restore.step_restore") + f" — {text}")

    safety_id, _safety = await take_catalogued_backup(ctx, kind="safety", progress=safety_progress)
    outcome = await restore_backup(
        dsn=dsn,
        path=path,
        expected_sha256=expected_sha,
        expected_rows=record.row_counts,
        tools=tools,
        progress=restore_progress,
        before_swap=ctx.fence,
    )
    # Earlier restores' `_before_` copies are kept a week, then dropped.
    await prune_old_databases(admin_dsn=admin_dsn(dsn), live=outcome.live, keep_days=KEEP_BEFORE_DAYS)
    await ctx.progress(97, t("restore.step_health"))
    try:
        health = await check_database(dsn, timeout=svc.settings.health.timeout_seconds)
        health_line = t("restore.health_ok", figure=health.figure)
    except Exception as exc:  # the swap is done; report, do not undo
        health_line = t("restore.health_failed", detail=type(exc).__name__)
    summary = t("restore.done", backup_id=record.id, database=outcome.live)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(
            Text(summary),
            Fields(
                (
                    (t("restore.kept_as"), outcome.kept_as),
                    (t("restore.safety_backup"), str(safety_id)),
                    (t("restore.rows"), str(sum(outcome.row_counts.values()))),
                    (t("backup.duration"), format_duration(outcome.duration_ms / 1000)),
                )
            ),
            Text(health_line),
        ),
        ids={"backup_id": record.id, "safety_backup_id": safety_id},
    )


COMMANDS = (
    Command(
        name="restore",
        usage="restore <backup-id>",
        help_key="restore.help",
        role=Role.ADMIN,
        args=BackupIdArgs,
        run=run_restore,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_restore,
        lock=BACKUP_LOCK,
    ),
)
