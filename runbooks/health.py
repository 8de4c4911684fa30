"""The morning health check: every check at once, each bounded by its own timeout."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import psycopg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.formatting import format_age, format_bytes
from core.secrets import mask_text

Level = Literal["ok", "warn", "fail", "info"]
LEVEL_ORDER: dict[str, int] = {"info": 0, "ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class CheckResult:
    name: str  # api, database, cache, disk, memory, backup, tls:<host>
    level: Level
    figure: str  # "200 in 35 ms", "42% used"
    detail: str = ""
    duration_ms: int = 0


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
        result = await asyncio.wait_for(check.run(), timeout)
    except TimeoutError:
        result = CheckResult(check.name, "fail", f"no answer in {timeout:g} s", "timeout")
    except Exception as exc:  # a check's failure is its result, never the report's
        result = CheckResult(check.name, "fail", "unreachable", _describe(exc))
    elapsed = int((time.monotonic() - started) * 1000)
    return CheckResult(result.name, result.level, result.figure, result.detail, elapsed)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(text)[:200]


async def check_api(http: httpx.AsyncClient, base_url: str, *, slow_ms: int = 2000) -> CheckResult:
    """GET {base}/health: 2xx is ok; slower than the KPI (2 s) is a warning."""
    started = time.monotonic()
    response = await http.get(f"{base_url}/health")
    ms = int((time.monotonic() - started) * 1000)
    figure = f"HTTP {response.status_code} in {ms} ms"
    if response.status_code >= 400:
        return CheckResult("api", "fail", figure, response.reason_phrase)
    return CheckResult("api", "warn" if ms > slow_ms else "ok", figure)


async def check_database(dsn: str, *, timeout: float) -> CheckResult:
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(
        dsn, connect_timeout=max(1, int(timeout)), autocommit=True
    ) as conn:
        cur = await conn.execute(
            "SELECT current_setting('server_version') AS v,"
            " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS n"
        )
        row = await cur.fetchone()
    ms = int((time.monotonic() - started) * 1000)
    version, connections = (row[0], row[1]) if row else ("?", 0)
    return CheckResult("database", "ok", f"PostgreSQL {version}, {connections} conn, {ms} ms")


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
        return CheckResult("cache", "fail", "unreachable", _describe(exc))
    finally:
        await client.aclose()
    used = format_bytes(int(info.get("used_memory", 0)))
    return CheckResult("cache", "ok", f"PING {ms} ms, {used} used")


def check_disk(path: Path, *, warn_percent: int, fail_percent: int) -> CheckResult:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    percent = round(usage.used * 100 / usage.total) if usage.total else 0
    level: Level = "fail" if percent >= fail_percent else "warn" if percent >= warn_percent else "ok"
    return CheckResult("disk", level, f"{percent}% used, {format_bytes(usage.free)} free", str(probe))


def check_memory(
    *, warn_percent: int, fail_percent: int, meminfo: Path = Path("/proc/meminfo")
) -> CheckResult:
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0]) * 1024 if rest.split() else 0
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    percent = round((total - available) * 100 / total) if total else 0
    level: Level = "fail" if percent >= fail_percent else "warn" if percent >= warn_percent else "ok"
    return CheckResult("memory", level, f"{percent}% used, {format_bytes(available)} available")


def check_backup_age(
    newest: datetime | None, *, now: datetime, warn_after: timedelta, fail_after: timedelta
) -> CheckResult:
    if newest is None:
        return CheckResult("backup", "warn", "no good backup yet")
    age = now - newest
    level: Level = "fail" if age > fail_after else "warn" if age > warn_after else "ok"
    return CheckResult("backup", level, f"newest {format_age(age)} ago")


async def check_tls(host_port: str, *, warn_days: int = 21, fail_days: int = 7) -> CheckResult:
    """Days until the certificate served at host:port expires."""
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
        return CheckResult(f"tls:{host_port}", "fail", "no certificate")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC)
    days = (expires - datetime.now(UTC)).days
    level: Level = "fail" if days < fail_days else "warn" if days < warn_days else "ok"
    return CheckResult(f"tls:{host_port}", level, f"{days} days left")
