"""`health`: the morning check of the operated system, as one table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.base import Context, NoArgs, Role
from commands.command import Command
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
    planned, skipped = _target_checks(ctx)
    planned += _host_checks(ctx)
    report = await checks.run_checks(planned, timeout=s.health.timeout_seconds)
    return HealthReport(checks=(*report.checks, *skipped), checked_at=report.checked_at)


def _target_checks(ctx: Context) -> tuple[list[NamedCheck], list[CheckResult]]:
    """The operated system's API, database and cache; a missing URL is a line, not a failure."""
    svc = ctx.services
    s = svc.settings
    timeout = s.health.timeout_seconds
    planned: list[NamedCheck] = []
    skipped: list[CheckResult] = []
    api_url = s.target.api_url
    if api_url:
        slow_ms = s.thresholds.api_ms
        planned.append(NamedCheck("api", lambda: checks.check_api(svc.http, api_url, slow_ms=slow_ms)))
    else:
        skipped.append(_not_configured("api", "GARDEN_API_URL"))
    if s.target.database_url:
        dsn = s.target.database_url.get_secret_value()
        planned.append(NamedCheck("database", lambda: checks.check_database(dsn, timeout=timeout)))
    else:
        skipped.append(_not_configured("database", "GARDEN_DATABASE_URL"))
    if s.target.redis_url:
        url = s.target.redis_url.get_secret_value()
        planned.append(NamedCheck("cache", lambda: checks.check_cache(url, timeout=timeout)))
    else:
        skipped.append(_not_configured("cache", "GARDEN_REDIS_URL"))
    return planned, skipped


def _not_configured(name: str, variable: str) -> CheckResult:
    return checks.result(name, "info", "health.figure.not_configured", detail=variable)


def _host_checks(ctx: Context) -> list[NamedCheck]:
    """The bot's own machine, the newest backup and the certificates, at the manual's thresholds."""
    svc = ctx.services
    s = svc.settings
    host = svc.bot_host
    limits = s.thresholds

    async def disk() -> CheckResult:
        return checks.check_disk(
            s.backup_dir,
            warn_percent=limits.disk_percent,
            fail_percent=s.health.disk_fail_percent,
            host=host,
        )

    async def memory() -> CheckResult:
        return checks.check_memory(
            warn_percent=limits.memory_percent, fail_percent=s.health.memory_fail_percent, host=host
        )

    async def backup() -> CheckResult:
        try:
            newest = await newest_good_backup(svc.store)
        except StoreUnavailable:
            return checks.result(
                "backup", "warn", "health.figure.unknown", detail_key="health.detail.store_unreachable"
            )
        return checks.check_backup_age(
            newest.finished_at if newest else None,
            now=datetime.now(UTC),
            warn_after=timedelta(hours=limits.backup_age_hours),
            fail_after=timedelta(hours=s.health.backup_fail_hours),
        )

    def tls(host_port: str) -> NamedCheck:
        return NamedCheck(
            f"tls:{host_port}",
            lambda: checks.check_tls(
                host_port, warn_days=limits.tls_days, fail_days=s.health.tls_fail_days, host=host
            ),
        )

    planned = [NamedCheck("disk", disk), NamedCheck("memory", memory), NamedCheck("backup", backup)]
    return planned + [tls(host_port) for host_port in s.tls_hosts]


async def run_tls_check(ctx: Context, args: NoArgs) -> Reply:
    """Only the certificates of `tls_hosts` (the TLS schedule), in the health table's shape."""
    tls = [c for c in _host_checks(ctx) if c.name.startswith("tls:")]
    if not tls:
        unset = _not_configured("tls:-", "tls_hosts")
        return render_health(ctx, HealthReport(checks=(unset,), checked_at=datetime.now(UTC)))
    report = await checks.run_checks(tls, timeout=ctx.services.settings.health.timeout_seconds)
    return render_health(ctx, report)


def render_health(ctx: Context, report: HealthReport) -> Reply:
    t = ctx.t
    rows = tuple(
        (
            _check_name(ctx, c),
            t(f"health.level.{c.level}"),
            t(c.figure_key, **c.params) if c.figure_key else c.figure,
            t(c.detail_key, **c.params) if c.detail_key else c.detail,
        )
        for c in report.checks
    )
    failing = report.failing()
    if failing:
        summary = t("health.summary_fail", names=", ".join(_check_name(ctx, c) for c in failing))
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


def _check_name(ctx: Context, check: CheckResult) -> str:
    """The line's label; disk and memory say which machine they measured."""
    if check.name.startswith("tls:"):
        return ctx.t("health.check.tls", host=check.name[4:])
    return ctx.t(f"health.check.{check.name}", host=check.host)


COMMANDS = (
    Command(name="health", role=Role.VIEWER, run=run_health),
    Command(name="health tls", role=Role.VIEWER, run=run_tls_check),
)
