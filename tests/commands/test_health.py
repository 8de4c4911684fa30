"""`health` against a real target: all well, database unreachable, database hanging."""

from __future__ import annotations

import asyncio

from bot.runtime import Runtime
from tests.support.runtime import (
    BotWorld,
    closed_port,
    hanging_listener,
    request,
    row_named,
    table_of,
)


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
    assert level == "fail"
    assert "timeout" in " ".join(row[2:]).lower() or "no answer" in row[2], row
    assert reply.status == "failed"
    assert reply.summary.count(",") == 0  # only the database is named as failing
    for other in ("API /health", "cache (Redis)", "disk", "memory"):
        assert row_named(reply, other)[0] in ("ok", "warn"), other
