"""`health`: the morning check of the operated system, as one table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.base import Command, Context, NoArgs, Role
from core.errors import StoreUnavailable
from core.formatting import format_time
from core.reply import Header, Note, Reply, Table
from runbooks import health as checks
from runbooks.health import CheckResult, HealthReport, NamedCheck
from store.backups import newest_good_backup


async def run_health(ctx: Context, args: NoArgs) -> Reply:
    report = await take_health_report(ctx)
    return render_health(ctx, report)


async def take_health_report(ctx: Context) -> HealthReport:
    """Build the checks from the configuration and run them all at once."""
    svc = ctx.services
    s = svc.settings
    timeout = s.health.timeout_seconds
    planned: list[NamedCheck] = []
    skipped: list[CheckResult] = []

    api_url = s.target.api_url
    if api_url:
        planned.append(NamedCheck("api", lambda: checks.check_api(svc.http, api_url)))
    else:
        skipped.append(CheckResult("api", "info", "not configured", "GARDEN_API_URL"))
    if s.target.database_url:
        dsn = s.target.database_url.get_secret_value()
        planned.append(NamedCheck("database", lambda: checks.check_database(dsn, timeout=timeout)))
    else:
        skipped.append(CheckResult("database", "info", "not configured", "GARDEN_DATABASE_URL"))
    if s.target.redis_url:
        url = s.target.redis_url.get_secret_value()
        planned.append(NamedCheck("cache", lambda: checks.check_cache(url, timeout=timeout)))
    else:
        skipped.append(CheckResult("cache", "info", "not configured", "GARDEN_REDIS_URL"))

    async def disk() -> CheckResult:
        return checks.check_disk(
            s.backup_dir,
            warn_percent=s.health.disk_warn_percent,
            fail_percent=s.health.disk_fail_percent,
        )

    async def memory() -> CheckResult:
        return checks.check_memory(
            warn_percent=s.health.memory_warn_percent, fail_percent=s.health.memory_fail_percent
        )

    async def backup() -> CheckResult:
        try:
            newest = await newest_good_backup(svc.store)
        except StoreUnavailable:
            return CheckResult("backup", "warn", "unknown", "bot store unreachable")
        return checks.check_backup_age(
            newest.finished_at if newest else None,
            now=datetime.now(UTC),
            warn_after=timedelta(hours=s.health.backup_warn_hours),
            fail_after=timedelta(hours=s.health.backup_fail_hours),
        )

    planned += [
        NamedCheck("disk", disk),
        NamedCheck("memory", memory),
        NamedCheck("backup", backup),
    ]
    for host in s.tls_hosts:
        planned.append(NamedCheck(f"tls:{host}", lambda h=host: checks.check_tls(h)))  # type: ignore[misc]
    report = await checks.run_checks(planned, timeout=timeout)
    return HealthReport(checks=(*report.checks, *skipped), checked_at=report.checked_at)


def render_health(ctx: Context, report: HealthReport) -> Reply:
    t = ctx.t
    rows = tuple(
        (
            _check_name(ctx, c.name),
            t(f"health.level.{c.level}"),
            c.figure,
            c.detail,
        )
        for c in report.checks
    )
    failing = report.failing()
    if failing:
        summary = t("health.summary_fail", names=", ".join(_check_name(ctx, c.name) for c in failing))
    elif report.level == "warn":
        summary = t("health.summary_warn")
    else:
        summary = t("health.summary_ok")
    return Reply(
        status="failed" if failing else "succeeded",
        summary=summary,
        elements=(
            Header(t("health.header")),
            Table(
                columns=(
                    t("health.col.check"),
                    t("health.col.status"),
                    t("health.col.figure"),
                    t("health.col.detail"),
                ),
                rows=rows,
                levels=tuple(c.level for c in report.checks),
            ),
            Note(
                t(
                    "health.checked_at",
                    at=format_time(report.checked_at, ctx.services.settings.zone),
                )
            ),
        ),
    )


def _check_name(ctx: Context, name: str) -> str:
    if name.startswith("tls:"):
        return ctx.t("health.check.tls", host=name[4:])
    return ctx.t(f"health.check.{name}")


COMMANDS = (Command(name="health", usage="health", help_key="health.help", role=Role.VIEWER, run=run_health),)
