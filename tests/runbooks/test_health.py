"""The health checks at the manual's thresholds: each level at its edge, and the API's body rule.

Disk and memory figures are handed in (a BotHost with its own measuring functions), never made by
filling a disk; the API is a local HTTP stand-in answering what each case needs.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Health, Thresholds
from runbooks.health import (
    BotHost,
    CheckResult,
    DiskUsage,
    MemoryUsage,
    check_api,
    check_backup_age,
    check_disk,
    check_memory,
    check_tls,
    judge_certificate,
    says_healthy,
)
from tests.support.runtime import health_api

MANUAL = Thresholds()  # the defaults are the manual's numbers
LIMITS = Health()
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


LOW_DISK = DiskUsage(100, 1, 99)
LOW_MEMORY = MemoryUsage(100, 99)


def host_with(*, disk: DiskUsage = LOW_DISK, memory: MemoryUsage = LOW_MEMORY) -> BotHost:
    return BotHost(name="bot-01.example", disk=lambda _path: disk, memory=lambda: memory)


def test_the_defaults_are_the_manuals_numbers() -> None:
    assert (MANUAL.disk_percent, MANUAL.memory_percent, MANUAL.api_ms) == (85, 90, 2000)
    assert (MANUAL.tls_days, MANUAL.backup_age_hours) == (30, 26)


@pytest.mark.parametrize(
    ("used_per_mille", "level"),
    [(849, "ok"), (850, "warn"), (899, "warn"), (900, "fail")],
    ids=["84.9%", "85.0%", "89.9%", "90.0%"],
)
def test_disk_warns_from_85_percent_used(used_per_mille: int, level: str) -> None:
    host = host_with(disk=DiskUsage(1000, used_per_mille, 1000 - used_per_mille))

    result = check_disk(
        Path("/var/backups"),
        warn_percent=MANUAL.disk_percent,
        fail_percent=LIMITS.disk_fail_percent,
        host=host,
    )

    assert result.level == level, result
    assert result.figure.startswith(f"{used_per_mille // 10}% used")


@pytest.mark.parametrize(
    ("used_per_mille", "level"),
    [(899, "ok"), (900, "warn"), (949, "warn"), (950, "fail")],
    ids=["89.9%", "90.0%", "94.9%", "95.0%"],
)
def test_memory_warns_from_90_percent_used(used_per_mille: int, level: str) -> None:
    host = host_with(memory=MemoryUsage(1000, 1000 - used_per_mille))

    result = check_memory(
        warn_percent=MANUAL.memory_percent, fail_percent=LIMITS.memory_fail_percent, host=host
    )

    assert result.level == level, result


def test_disk_and_memory_results_name_the_machine_they_measured() -> None:
    host = host_with()

    disk = check_disk(Path("/var/backups"), warn_percent=85, fail_percent=90, host=host)
    memory = check_memory(warn_percent=90, fail_percent=95, host=host)

    assert (disk.host, memory.host) == ("bot-01.example", "bot-01.example")


def test_the_default_bot_host_measures_this_machine(tmp_path: Path) -> None:
    host = BotHost()

    assert host.name == socket.gethostname()
    assert host.disk(tmp_path / "not-yet").total > 0  # a missing backup dir: its nearest parent
    assert host.memory().total > 0


@pytest.mark.parametrize(
    ("left", "level"),
    [
        (timedelta(days=30), "ok"),
        (timedelta(days=30) - timedelta(seconds=1), "warn"),
        (timedelta(days=7), "warn"),
        (timedelta(days=7) - timedelta(seconds=1), "fail"),
    ],
    ids=["30d", "30d-1s", "7d", "7d-1s"],
)
def test_tls_warns_under_30_days_left(left: timedelta, level: str) -> None:
    result = judge_certificate(
        "garden.example.com:443",
        NOW + left,
        now=NOW,
        warn_days=MANUAL.tls_days,
        fail_days=LIMITS.tls_fail_days,
    )

    assert result.level == level, result
    assert result.name == "tls:garden.example.com:443"


async def test_check_tls_reads_the_expiry_through_the_host_and_warns_at_tls_days() -> None:
    def expiring_in(days: int) -> Callable[[str], Awaitable[datetime]]:
        async def expiry(host_port: str) -> datetime:
            return datetime.now(UTC) + timedelta(days=days, hours=12)

        return expiry

    near = BotHost(name="bot", certificate_expiry=expiring_in(29))
    far = BotHost(name="bot", certificate_expiry=expiring_in(30))

    assert (await check_tls("garden.example.com:443", host=near)).level == "warn"
    assert (await check_tls("garden.example.com:443", host=far)).level == "ok"


@pytest.mark.parametrize(
    ("age", "level"),
    [
        (timedelta(hours=26), "ok"),
        (timedelta(hours=26, seconds=1), "warn"),
        (timedelta(hours=50), "warn"),
        (timedelta(hours=50, seconds=1), "fail"),
    ],
    ids=["26h", "26h+1s", "50h", "50h+1s"],
)
def test_backup_warns_when_the_newest_is_older_than_26_hours(age: timedelta, level: str) -> None:
    result = check_backup_age(
        NOW - age,
        now=NOW,
        warn_after=timedelta(hours=MANUAL.backup_age_hours),
        fail_after=timedelta(hours=LIMITS.backup_fail_hours),
    )

    assert result.level == level, result


# --- the API --------------------------------------------------------------------------------------


async def ask_api(base_url: str, **options: Any) -> CheckResult:
    async with httpx.AsyncClient(timeout=5, follow_redirects=False) as http:
        return await check_api(http, base_url, **options)


@pytest.mark.parametrize(
    ("status", "body", "level"),
    [
        pytest.param(200, b'{"status":"healthy"}', "ok", id="200-healthy"),
        pytest.param(204, b"", "fail", id="204-empty"),
        pytest.param(200, b"healthy", "ok", id="200-plain-healthy"),
        pytest.param(200, b'{"status":"degraded"}', "fail", id="200-degraded"),
        pytest.param(200, b'{"status":"unhealthy"}', "fail", id="200-unhealthy"),
        pytest.param(200, b'{"status":"ok"}', "fail", id="200-ok-is-not-healthy"),
        pytest.param(200, b'{"status":"degraded","db":"healthy"}', "fail", id="200-status-decides"),
        pytest.param(200, b"", "fail", id="200-empty"),
        pytest.param(500, b'{"status":"healthy"}', "fail", id="500-healthy"),
        pytest.param(503, b'{"status":"unhealthy"}', "fail", id="503-unhealthy"),
        pytest.param(301, b"healthy", "fail", id="301-healthy"),
        pytest.param(404, b"healthy", "fail", id="404-healthy"),
    ],
)
async def test_the_api_is_healthy_only_with_2xx_and_healthy_in_the_body(
    status: int, body: bytes, level: str
) -> None:
    with health_api(status, body) as base_url:
        result = await ask_api(base_url)

    assert result.level == level, result
    assert result.figure.startswith(f"HTTP {status} in ")


async def test_a_2xx_that_does_not_say_healthy_says_why() -> None:
    with health_api(200, b'{"status":"degraded"}') as base_url:
        result = await ask_api(base_url)

    assert (result.level, result.detail) == ("fail", "the answer does not say healthy")
    assert result.detail_key == "health.detail.not_healthy"


@pytest.mark.parametrize(("seconds", "level"), [(2.0, "ok"), (2.001, "warn")], ids=["2000ms", "2001ms"])
async def test_the_api_warns_when_slower_than_2000_ms(seconds: float, level: str) -> None:
    ticks = iter([100.0, 100.0 + seconds])  # the check reads the clock before and after the GET
    with health_api() as base_url:
        result = await ask_api(base_url, slow_ms=MANUAL.api_ms, clock=lambda: next(ticks))

    assert result.level == level, result
    assert result.figure == f"HTTP 200 in {round(seconds * 1000)} ms"


@pytest.mark.parametrize(
    ("body", "healthy"),
    [
        ('{"status": "Healthy"}', True),
        ('{"status": "healthy ", "version": "1.4"}', True),
        ("OK - healthy", True),
        ("unhealthy", False),
        ("status=not_healthy", False),
        ("[]", False),
        ('["healthy"]', True),
    ],
)
def test_says_healthy_reads_the_word_not_a_part_of_another(body: str, healthy: bool) -> None:
    assert says_healthy(body) is healthy
