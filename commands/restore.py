"""`restore <backup-id>`: admin, approved by a second person, safety backup first, atomic swap."""

from __future__ import annotations

import logging

from commands.backup import (
    BACKUP_LOCK,
    BackupIdArgs,
    good_backup,
    pg_tools,
    take_catalogued_backup,
    worded_progress,
)
from commands.base import ApprovalText, Context, Role
from commands.command import Command
from core.errors import Conflict, GardenBotError, RunbookFailed
from core.formatting import format_bytes, format_duration, format_time
from core.reply import Fields, Reply, Text
from core.secrets import mask_dsn, mask_text
from runbooks.backups import open_backup
from runbooks.health import check_database
from runbooks.pg_tools import admin_dsn, database_name, estimate_rows
from runbooks.restore import check_checksum, prune_old_databases, restore_backup, wait_for_api

log = logging.getLogger(__name__)

KEEP_BEFORE_DAYS = 7


async def describe_restore(ctx: Context, args: BackupIdArgs) -> ApprovalText:
    """What the approver must know: which backup, how big, its checksum, and what gets replaced."""
    svc = ctx.services
    record = await good_backup(svc, args.id)
    dsn = svc.target_database_url()
    # Catalog estimates, not count(*): a table locked by another session must not hold up the request.
    current = await estimate_rows(dsn)
    summary = ctx.t(
        "restore.describe",
        backup_id=record.id,
        taken=format_time(record.finished_at, svc.settings.zone),
        size=format_bytes(record.size_bytes),
        sha=(record.sha256 or "")[:16],
        database=database_name(dsn),
        where=mask_dsn(dsn),
        tables=current.tables,
        rows=current.rows,
    )
    # The approval is bound to this file: a changed file is refused when it is approved.
    return ApprovalText(summary=summary, binding={"sha256": record.sha256, "file_name": record.file_name})


async def run_restore(ctx: Context, args: BackupIdArgs) -> Reply:
    svc = ctx.services
    record = await good_backup(svc, args.id)
    if ctx.binding and (
        ctx.binding.get("sha256") != record.sha256 or ctx.binding.get("file_name") != record.file_name
    ):
        raise Conflict("restore.binding_changed", backup_id=record.id)
    expected_sha = str(ctx.binding.get("sha256") or record.sha256)
    with open_backup(svc.settings.backup_dir / record.file_name) as backup:
        if record.size_bytes is not None and backup.size_bytes != record.size_bytes:
            raise RunbookFailed("restore.checksum_mismatch", file=record.file_name)
        # Checked before the safety backup, on the open file that pg_restore will read.
        await check_checksum(backup, expected_sha, progress=worded_progress(ctx, span=5))
        tools = await pg_tools(svc)
        safety_id, _safety = await take_catalogued_backup(
            ctx,
            kind="safety",
            progress=worded_progress(ctx, start=5, span=25, stage_key="restore.step_safety"),
        )
        outcome = await restore_backup(
            dsn=svc.target_database_url(),
            backup=backup,
            expected_sha256=expected_sha,
            expected_rows=record.row_counts,
            tools=tools,
            progress=worded_progress(ctx, start=30, span=65, stage_key="restore.step_restore"),
            before_swap=ctx.fence,
        )
    lines = await _after_swap(ctx, live=outcome.live)
    summary = ctx.t("restore.done", backup_id=record.id, database=outcome.live)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(
            Text(summary),
            Fields(
                (
                    (ctx.t("restore.kept_as"), outcome.kept_as),
                    (ctx.t("restore.safety_backup"), str(safety_id)),
                    (ctx.t("restore.rows"), str(sum(outcome.row_counts.values()))),
                    (ctx.t("backup.duration"), format_duration(outcome.duration_ms / 1000)),
                )
            ),
            *(Text(line) for line in lines),
        ),
        ids={"backup_id": record.id, "safety_backup_id": safety_id},
    )


async def _after_swap(ctx: Context, *, live: str) -> list[str]:
    """The swap is done: nothing after it fails the restore; it is reported, not undone."""
    t = ctx.t
    svc = ctx.services
    dsn = svc.target_database_url()
    lines: list[str] = []
    try:
        # Earlier restores' `_before_` copies are kept a week, then dropped.
        await prune_old_databases(admin_dsn=admin_dsn(dsn), live=live, keep_days=KEEP_BEFORE_DAYS)
    except Exception as exc:
        log.warning("restore: old copies of %s not pruned", live, exc_info=True)
        lines.append(t("restore.prune_failed", detail=_short(ctx, exc)))
    await ctx.progress(97, t("restore.step_health"))
    try:
        health = await check_database(dsn, timeout=svc.settings.health.timeout_seconds)
        lines.append(t("restore.health_ok", figure=health.figure))
    except Exception as exc:
        lines.append(t("restore.health_failed", detail=type(exc).__name__))
    lines.append(await _api_line(ctx))
    return lines


async def _api_line(ctx: Context) -> str:
    """The API's /health after the swap, polled until healthy within the configured wait."""
    svc = ctx.services
    api_url = svc.settings.target.api_url
    if api_url is None:
        return ctx.t("restore.api_not_configured")
    await ctx.progress(98, ctx.t("restore.step_api"))
    wait = svc.settings.backup.restore_health_wait_seconds
    api = await wait_for_api(svc.http, api_url, limit_s=wait)
    seconds = f"{api.waited_ms / 1000:.1f}"
    if api.healthy:
        return ctx.t("restore.api_healthy", seconds=seconds)
    return ctx.t("restore.api_unhealthy", seconds=seconds, figure=api.figure)


def _short(ctx: Context, exc: Exception) -> str:
    if isinstance(exc, GardenBotError):
        return mask_text(ctx.t(exc.message_key, **exc.params))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(text)[:200]


COMMANDS = (
    Command(
        name="restore",
        usage="restore <backup-id>",
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
