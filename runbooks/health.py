"""The morning health check: every check at once, each bounded by its own timeout.

The warning levels are the manual's (`thresholds` in the configuration); what the bot's own machine
measures (disk, memory) and what a certificate says are read through a BotHost the caller may replace.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, NamedTuple

import httpx
import psycopg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.formatting import format_age, format_bytes
from core.i18n import Translator
from core.secrets import mask_text
from runbooks.pg_tools import admin_dsn, database_name

Level = Literal["ok", "warn", "fail", "info"]
LEVEL_ORDER: dict[str, int] = {"info": 0, "ok": 0, "warn": 1, "fail": 2}
ENGLISH = Translator("en")
HTTP = "health.figure.http"
# The API's own word for "all is well", as a whole word ("unhealthy" is not it).
HEALTHY_WORD = re.compile(r"(?<![A-Za-z_-])healthy(?![A-Za-z_-])", re.IGNORECASE)


@dataclass(frozen=True)
class CheckResult:
    """One line of the report.

    figure and detail are English, for logs and callers without a translator; a renderer says them in
    the asker's language from figure_key and detail_key (messages under health.*) with params.
    """

    name: str  # api, database, cache, disk, memory, backup, tls:<host>
    level: Level
    figure: str  # "HTTP 200 in 35 ms", "42% used, 9.1 GB free"
    detail: str = ""
    duration_ms: int = 0
    host: str = ""  # the machine a disk or memory figure describes
    figure_key: str = ""
    detail_key: str = ""
    params: Mapping[str, object] = field(default_factory=dict)


def result(
    name: str,
    level: Level,
    figure_key: str,
    *,
    detail: str = "",
    detail_key: str = "",
    host: str = "",
    **params: object,
) -> CheckResult:
    """A CheckResult whose figure (and detail, when keyed) are messages, English filled in."""
    return CheckResult(
        name,
        level,
        ENGLISH(figure_key, **params),
        ENGLISH(detail_key, **params) if detail_key else detail,
        host=host,
        figure_key=figure_key,
        detail_key=detail_key,
        params=params,
    )


@dataclass(frozen=True)
class HealthReport:
    checks: tuple[CheckResult, ...]
    checked_at: datetime

    @property
    def level(self) -> Level:
        worst: Level = max((c.level for c in self.checks), key=LEVEL_ORDER.__getitem__, default="ok")
        return "ok" if worst == "info" else worst

    def failing(self) -> list[CheckResult]:
        return [c for c in self.checks if c.level == "fail"]


Check = Callable[[], Awaitable[CheckResult]]


@dataclass(frozen=True)
class NamedCheck:
    name: str
    run: Check


async def run_checks(checks: Sequence[NamedCheck], *, timeout: float) -> HealthReport:
    """Run every check concurrently; one that hangs costs its timeout and no more."""
    results = await asyncio.gather(*(_bounded(c, timeout) for c in checks))
    return HealthReport(checks=tuple(results), checked_at=datetime.now(UTC))


async def _bounded(check: NamedCheck, timeout: float) -> CheckResult:
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(check.run(), timeout)
    except TimeoutError:
        outcome = result(check.name, "fail", "health.figure.timeout", seconds=f"{timeout:g}")
    except Exception as exc:  # a check's failure is its result, never the report's
        outcome = result(check.name, "fail", "health.figure.unreachable", detail=_describe(exc))
    return replace(outcome, duration_ms=int((time.monotonic() - started) * 1000))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(text)[:200]


def says_healthy(body: str) -> bool:
    """The manual's rule: "healthy" in the body. A JSON status field, when there is one, decides."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("status"), str):
        return str(data["status"]).strip().lower() == "healthy"
    return HEALTHY_WORD.search(body) is not None


async def check_api(
    http: httpx.AsyncClient,
    base_url: str,
    *,
    slow_ms: int = 2000,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """GET {base}/health: healthy only with a 2xx that says "healthy"; slower than slow_ms warns."""
    started = clock()
    response = await http.get(f"{base_url}/health")
    ms = round((clock() - started) * 1000)
    status = response.status_code
    if not response.is_success:
        return result("api", "fail", HTTP, detail=response.reason_phrase, status=status, ms=ms)
    if not says_healthy(response.text):
        return result("api", "fail", HTTP, detail_key="health.detail.not_healthy", status=status, ms=ms)
    if ms > slow_ms:
        return result(
            "api", "warn", HTTP, detail_key="health.detail.slow", limit=slow_ms, status=status, ms=ms
        )
    return result("api", "ok", HTTP, status=status, ms=ms)


async def check_database(dsn: str, *, timeout: float) -> CheckResult:
    started = time.monotonic()
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, connect_timeout=max(1, int(timeout)), autocommit=True
        )
    except psycopg.OperationalError:
        if await _refuses_connections(dsn, timeout=timeout):
            name = database_name(dsn)
            return result(
                "database",
                "fail",
                "health.figure.connections_refused",
                detail_key="health.detail.allow_connections_false",
                database=name,
            )
        raise
    async with conn:
        cur = await conn.execute(
            "SELECT current_setting('server_version') AS v,"
            " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS n"
        )
        row = await cur.fetchone()
    ms = int((time.monotonic() - started) * 1000)
    version, connections = (row[0], row[1]) if row else ("?", 0)
    return result("database", "ok", "health.figure.database", version=version, connections=connections, ms=ms)


async def _refuses_connections(dsn: str, *, timeout: float) -> bool:
    """Whether the database is set to refuse every login (ALLOW_CONNECTIONS false), as a restore
    swap killed while it drained sessions leaves it; asked on the maintenance database."""
    try:
        async with await psycopg.AsyncConnection.connect(
            admin_dsn(dsn), connect_timeout=max(1, int(timeout)), autocommit=True
        ) as conn:
            cur = await conn.execute(
                "SELECT NOT datallowconn FROM pg_database WHERE datname = %s", (database_name(dsn),)
            )
            row = await cur.fetchone()
    except psycopg.Error:
        return False
    return row is not None and bool(row[0])


async def check_cache(url: str, *, timeout: float) -> CheckResult:
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        started = time.monotonic()
        await client.ping()
        info = await client.info("memory")
        ms = int((time.monotonic() - started) * 1000)
    except (RedisError, OSError) as exc:
        return result("cache", "fail", "health.figure.unreachable", detail=_describe(exc))
    finally:
        await client.aclose()
    used = format_bytes(int(info.get("used_memory", 0)))
    return result("cache", "ok", "health.figure.cache", ms=ms, used=used)


# --- the bot's own machine -----------------------------------------------------------------------


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


class MemoryUsage(NamedTuple):
    total: int
    available: int


def measure_disk(path: Path) -> DiskUsage:
    """The file system holding path (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return DiskUsage(usage.total, usage.used, usage.free)


def measure_memory(meminfo: Path = Path("/proc/meminfo")) -> MemoryUsage:
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0]) * 1024 if rest.split() else 0
    total = fields.get("MemTotal", 0)
    return MemoryUsage(total, fields.get("MemAvailable", fields.get("MemFree", 0)))


async def fetch_certificate_expiry(host_port: str) -> datetime:
    """When the certificate served at host:port (port 443 if none) stops being valid."""
    host, _, port = host_port.rpartition(":")
    if not host:
        host, port = port, "443"
    context = ssl.create_default_context()
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=context, server_hostname=host)
    try:
        transport_ssl = writer.get_extra_info("ssl_object")
        cert = transport_ssl.getpeercert() if transport_ssl else None
    finally:
        writer.close()
    if not cert or "notAfter" not in cert:
        raise ssl.SSLError("no certificate")
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC)


@dataclass(frozen=True)
class BotHost:
    """The machine the bot runs on, named in its disk and memory lines, and how it measures."""

    name: str = field(default_factory=socket.gethostname)
    disk: Callable[[Path], DiskUsage] = measure_disk
    memory: Callable[[], MemoryUsage] = measure_memory
    certificate_expiry: Callable[[str], Awaitable[datetime]] = fetch_certificate_expiry


def _percent_level(percent: int, warn_percent: int, fail_percent: int) -> Level:
    return "fail" if percent >= fail_percent else "warn" if percent >= warn_percent else "ok"


def check_disk(
    path: Path, *, warn_percent: int, fail_percent: int, host: BotHost | None = None
) -> CheckResult:
    """Warns from warn_percent used (whole percent, rounded down), fails from fail_percent."""
    host = host or BotHost()
    usage = host.disk(path)
    percent = usage.used * 100 // usage.total if usage.total else 0
    return result(
        "disk",
        _percent_level(percent, warn_percent, fail_percent),
        "health.figure.disk",
        detail=str(path),
        host=host.name,
        percent=percent,
        free=format_bytes(usage.free),
    )


def check_memory(*, warn_percent: int, fail_percent: int, host: BotHost | None = None) -> CheckResult:
    """Used is what is not available (MemAvailable), as `free` counts it."""
    host = host or BotHost()
    usage = host.memory()
    percent = (usage.total - usage.available) * 100 // usage.total if usage.total else 0
    return result(
        "memory",
        _percent_level(percent, warn_percent, fail_percent),
        "health.figure.memory",
        host=host.name,
        percent=percent,
        available=format_bytes(usage.available),
    )


def check_backup_age(
    newest: datetime | None, *, now: datetime, warn_after: timedelta, fail_after: timedelta
) -> CheckResult:
    if newest is None:
        return result("backup", "warn", "health.figure.no_backup")
    age = now - newest
    level: Level = "fail" if age > fail_after else "warn" if age > warn_after else "ok"
    return result("backup", level, "health.figure.backup_age", age=format_age(age))


def judge_certificate(
    host_port: str, expires: datetime, *, now: datetime, warn_days: int, fail_days: int
) -> CheckResult:
    """Whole days left (rounded down): under warn_days warns, under fail_days fails."""
    days = (expires - now).days
    level: Level = "fail" if days < fail_days else "warn" if days < warn_days else "ok"
    return result(f"tls:{host_port}", level, "health.figure.tls_days", days=days)


async def check_tls(
    host_port: str, *, warn_days: int = 30, fail_days: int = 7, host: BotHost | None = None
) -> CheckResult:
    """Days until the certificate served at host:port expires."""
    expires = await (host or BotHost()).certificate_expiry(host_port)
    return judge_certificate(
        host_port, expires, now=datetime.now(UTC), warn_days=warn_days, fail_days=fail_days
    )
