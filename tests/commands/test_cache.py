"""`cache stats` and `cache flush` on the target Redis (database 13, test keys only)."""

from __future__ import annotations

from bot.runtime import Runtime
from core.reply import Fields
from tests.support.runtime import TARGET_REDIS_DB, BotWorld, closed_port, request, table_of, target_redis


async def test_cache_stats_counts_the_keys_and_their_families(
    bot_runtime: Runtime, target_keys: dict[str, str]
) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0INTERN", "cache stats"))

    assert reply.status == "succeeded", reply
    [fields] = [e for e in reply.elements if isinstance(e, Fields)]
    assert dict(fields.pairs)["keys"] == str(len(target_keys))
    families = {row[0]: row[1] for row in table_of(reply).rows}
    assert families == {"estimate": "2", "price": "1", "session": "1"}


async def test_cache_flush_asks_for_approval_and_names_what_it_will_remove(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0ADMIN", "cache flush"))

    assert reply.status == "pending"
    [(summary, args)] = bot_world.query("SELECT summary, args FROM approvals")
    assert f"{len(target_keys)} keys" in summary
    assert f"/{TARGET_REDIS_DB}" in summary
    assert args == {}
    assert target_redis().dbsize() == len(target_keys)


async def test_an_unreachable_target_cache_fails_stats_and_opens_no_approval(
    bot_world: BotWorld,
) -> None:
    bot_world.extra_env["GARDEN_REDIS_URL"] = f"redis://127.0.0.1:{closed_port()}/0"
    async with bot_world.runtime() as runtime:
        stats = await runtime.pipeline.handle(request("U0INTERN", "cache stats"))
        flush = await runtime.pipeline.handle(request("U0ADMIN", "cache flush"))

    assert stats.status == "failed"
    assert "cache is unreachable" in stats.summary
    assert flush.status == "failed"
    assert bot_world.query("SELECT count(*) FROM approvals") == [(0,)]
