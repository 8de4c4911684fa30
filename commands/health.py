"""`health`: the morning check of the operated system, as one table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from commands.base import Context, NoArgs, Role
from commands.command import Command
from commands.db import read_database_url
from core.errors import StoreUnavailable
from core.formatting import format_time
from core.reply import Header, Note, Reply, Table
from core.secrets import mask_text
from runbooks import health as checks
from runbooks import prometheus_health as prometheus
from runbooks.db_admin import check_wal
from runbooks.health import CheckResult, HealthReport, NamedCheck
from runbooks.pg_tools import connect_target
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
    report, hosts = await asyncio.gather(
        checks.run_checks(planned, timeout=s.health.timeout_seconds), _garden_hosts(ctx)
    )
    return HealthReport(
        checks=(*_wal_line_if_useful(report.checks), *hosts, *skipped), checked_at=report.checked_at
    )


def _wal_line_if_useful(results: tuple[CheckResult, ...]) -> tuple[CheckResult, ...]:
    """The WAL line only where the target archives WAL or has standbys (check_wal says "info"
    otherwise), and not when the database line already says the database is failing."""
    database_failed = any(c.name == "database" and c.level == "fail" for c in results)
    return tuple(c for c in results if not (c.name == "wal" and (c.level == "info" or database_failed)))


async def _garden_hosts(ctx: Context) -> list[CheckResult]:
    """With GARDEN_PROMETHEUS_URL: every Garden DX host's disk and memory and the API's 5xx ratio."""
    s = ctx.services.settings
    url = s.target.prometheus_url
    if url is None:
        return []
    http, timeout = ctx.services.http, s.health.timeout_seconds
    errors = checks.NamedCheck("errors_5xx", lambda: prometheus.error_ratio_result(http, url))
    lines, ratio = await asyncio.gather(_host_lines(ctx, url), checks.run_checks([errors], timeout=timeout))
    return [*lines, *ratio.checks]


async def _host_lines(ctx: Context, url: str) -> list[CheckResult]:
    """One line per host and measure; Prometheus unreachable or slow is one failing line."""
    s = ctx.services.settings
    timeout = s.health.timeout_seconds
    warn = (s.thresholds.disk_percent, s.thresholds.memory_percent)
    fail = (s.health.disk_fail_percent, s.health.memory_fail_percent)
    try:
        return await asyncio.wait_for(
            prometheus.host_results(ctx.services.http, url, warn=warn, fail=fail), timeout
        )
    except TimeoutError:
        return [checks.result("hosts", "fail", "health.figure.timeout", seconds=f"{timeout:g}")]
    except Exception as exc:  # unreachable, or an answer that is not Prometheus's
        detail = mask_text(str(exc).strip() or type(exc).__name__)[:200]
        return [checks.result("hosts", "fail", "health.figure.unreachable", detail=detail)]


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
        planned.append(NamedCheck("wal", lambda: _wal(read_database_url(svc))))
    else:
        skipped.append(_not_configured("database", "GARDEN_DATABASE_URL"))
    if s.target.redis_url:
        url = s.target.redis_url.get_secret_value()
        planned.append(NamedCheck("cache", lambda: checks.check_cache(url, timeout=timeout)))
    else:
        skipped.append(_not_configured("cache", "GARDEN_REDIS_URL"))
    return planned, skipped


async def _wal(dsn: str) -> CheckResult:
    """WAL archiving and replication; "info" when the target has neither (the line is left out)."""
    async with connect_target(dsn) as conn:
        return await check_wal(conn=conn)


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
