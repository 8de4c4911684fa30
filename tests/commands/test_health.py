"""`health` against a real target: all well, database unreachable, database hanging; the thresholds.

The bot host's disk, memory and certificate figures are handed in (services.bot_host), so a line's
level depends on the configuration under test, not on this machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.runtime import Runtime
from core.reply import Reply
from runbooks.health import BotHost, DiskUsage, MemoryUsage
from tests.support.runtime import (
    BotWorld,
    closed_port,
    hanging_listener,
    health_api,
    request,
    row_named,
    table_of,
)

TLS_HOST = "garden.example.com:443"


async def expires_in_45_days(host_port: str) -> datetime:
    return datetime.now(UTC) + timedelta(days=45, hours=12)


# 60 % of the disk and of the memory used, a certificate with 45 days left: all ok at the manual's numbers.
QUIET_HOST = BotHost(
    name="bot-01.example",
    disk=lambda _path: DiskUsage(total=1000, used=600, free=400),
    memory=lambda: MemoryUsage(total=1000, available=400),
    certificate_expiry=expires_in_45_days,
)


async def health_of(world: BotWorld, user: str = "U0OPS", locale: str = "en") -> Reply:
    async with world.runtime() as runtime:
        runtime.services.bot_host = QUIET_HOST
        ask = dataclasses.replace(request(user, "health"), locale=locale)
        return await runtime.pipeline.handle(ask)


async def test_all_well_succeeds_with_every_target_check_ok(bot_runtime: Runtime) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0INTERN", "health"))

    assert reply.status == "succeeded", reply
    for name in ("API /health", "database", "cache (Redis)"):
        level, row = row_named(reply, name)
        assert level == "ok", row
    assert row_named(reply, "API /health")[1][2].startswith("HTTP 200")
    assert "fail" not in table_of(reply).levels


async def test_unreachable_target_database_fails_naming_the_database_check(bot_world: BotWorld) -> None:
    bot_world.target_database_url = f"postgresql://garden@127.0.0.1:{closed_port()}/garden_dx"

    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0OPS", "health"))

    assert reply.status == "failed"
    assert "database" in reply.summary
    assert row_named(reply, "database")[0] == "fail"
    assert row_named(reply, "cache (Redis)")[0] == "ok"
    assert row_named(reply, "API /health")[0] == "ok"


async def test_hanging_target_database_times_out_and_the_report_completes(bot_world: BotWorld) -> None:
    bot_world.configure(health={"timeout_seconds": 1})
    with hanging_listener() as port:
        bot_world.target_database_url = f"postgresql://garden@127.0.0.1:{port}/garden_dx"
        async with bot_world.runtime() as runtime:
            # A guard against a hang, not the assertion: the report itself must come back.
            reply = await asyncio.wait_for(runtime.pipeline.handle(request("U0OPS", "health")), 30)

    level, row = row_named(reply, "database")
    assert (level, row[2]) == ("fail", "no answer in 1 s"), row
    assert reply.status == "failed"
    assert reply.summary == "Unhealthy: database."  # only the database is named as failing
    for other in ("API /health", "cache (Redis)"):
        assert row_named(reply, other)[0] == "ok", other


# --- the thresholds -----------------------------------------------------------------------------


@pytest.fixture
def slow_api(bot_world: BotWorld) -> Iterator[None]:
    """The API answers healthy after 50 ms: ok at 2000 ms, a warning at 10."""
    with health_api(delay=0.05) as url:
        bot_world.api_url = url
        yield


def backup_finished_hours_ago(world: BotWorld, hours: int) -> None:
    world.query(
        "INSERT INTO backups (kind, database_name, file_name, created_by, status, finished_at)"
        " VALUES ('regular', 'garden_dx', 'garden_dx-test.dump', 'U0OPS', 'good',"
        " now() - make_interval(hours => %s))",
        (hours,),
    )


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("disk_percent", 60, "disk (bot host bot-01.example)"),  # 60 % used
        ("memory_percent", 60, "memory (bot host bot-01.example)"),  # 60 % used
        ("tls_days", 46, f"TLS {TLS_HOST}"),  # 45 days left
        ("backup_age_hours", 19, "newest backup"),  # 20 hours old
        ("api_ms", 10, "API /health"),  # 50 ms or more
    ],
)
async def test_each_thresholds_key_moves_its_warning(
    bot_world: BotWorld, slow_api: None, key: str, value: int, line: str
) -> None:
    bot_world.configure(tls_hosts=[TLS_HOST])
    async with bot_world.runtime():
        pass  # migrate the store before the backup row goes in
    backup_finished_hours_ago(bot_world, 20)

    before = await health_of(bot_world)
    bot_world.configure(thresholds={key: value})
    after = await health_of(bot_world)

    assert row_named(before, line)[0] == "ok", row_named(before, line)
    assert row_named(after, line)[0] == "warn", row_named(after, line)
    assert (before.status, after.status) == ("succeeded", "succeeded")
    assert after.summary == "Healthy, with warnings."
    assert [level for level in table_of(after).levels if level == "warn"] == ["warn"]  # that line alone


async def test_disk_and_memory_lines_name_the_bot_host_in_both_languages(bot_world: BotWorld) -> None:
    english = await health_of(bot_world)
    japanese = await health_of(bot_world, locale="ja")

    assert row_named(english, "disk (bot host bot-01.example)")[1][1:3] == ("ok", "60% used, 400 B free")
    assert row_named(english, "memory (bot host bot-01.example)")[1][2] == "60% used, 400 B available"
    assert row_named(japanese, "ディスク (Bot ホスト bot-01.example)")[1][1:3] == (
        "正常",
        "使用率 60%、空き 400 B",
    )
    assert row_named(japanese, "メモリ (Bot ホスト bot-01.example)")[0] == "ok"


async def test_a_full_disk_is_named_with_its_machine_in_the_summary(bot_world: BotWorld) -> None:
    bot_world.configure(health={"disk_fail_percent": 60})

    reply = await health_of(bot_world)

    assert reply.status == "failed"
    assert reply.summary == "Unhealthy: disk (bot host bot-01.example)."


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b'{"status":"degraded"}'), (500, b'{"status":"healthy"}')],
    ids=["200-degraded", "500-healthy"],
)
async def test_an_api_that_is_not_healthy_fails_the_report(
    bot_world: BotWorld, status: int, body: bytes
) -> None:
    with health_api(status, body) as url:
        bot_world.api_url = url
        reply = await health_of(bot_world)

    level, row = row_named(reply, "API /health")
    assert level == "fail", row
    assert row[2].startswith(f"HTTP {status} in ")
    assert reply.status == "failed"
    assert reply.summary == "Unhealthy: API /health."
