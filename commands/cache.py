"""`cache stats` and `cache flush` on the operated system's Redis."""

from __future__ import annotations

from commands.base import ApprovalText, Context, NoArgs, Role
from commands.command import Command
from core.formatting import format_bytes
from core.reply import Fields, Header, Reply, Table, Text
from core.secrets import mask_dsn
from runbooks.cache import cache_stats, flush_cache


async def show_cache_stats(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    client = ctx.services.target_redis()
    try:
        stats = await cache_stats(client)
    finally:
        await client.aclose()
    rate = f"{stats.hit_rate * 100:.1f}%" if stats.hit_rate is not None else "-"
    elements: list[Header | Fields | Table | Text] = [
        Header(t("cache.header")),
        Fields(
            (
                (t("cache.keys"), f"{stats.keys:,}"),
                (
                    t("cache.memory"),
                    f"{format_bytes(stats.used_memory)} "
                    f"({t('cache.peak')} {format_bytes(stats.peak_memory)})",
                ),
                (t("cache.hit_rate"), rate),
                (t("cache.evicted"), f"{stats.evicted:,}"),
                (t("cache.clients"), str(stats.clients)),
                (t("cache.version"), stats.version),
            )
        ),
    ]
    if stats.families:
        elements.append(
            Table(
                columns=(t("cache.family"), t("cache.count")),
                rows=tuple((name, str(count)) for name, count in stats.families),
            )
        )
    return Reply(
        status="succeeded",
        summary=t("cache.summary", keys=stats.keys, memory=format_bytes(stats.used_memory)),
        elements=tuple(elements),
    )


async def describe_flush(ctx: Context, args: NoArgs) -> ApprovalText:
    client = ctx.services.target_redis()
    try:
        stats = await cache_stats(client)
    finally:
        await client.aclose()
    where = mask_dsn(ctx.services.settings.target.redis_url.get_secret_value())  # type: ignore[union-attr]
    return ApprovalText(summary=ctx.t("cache.flush_describe", keys=stats.keys, where=where))


async def run_flush(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    await ctx.progress(10, t("cache.flushing"))
    client = ctx.services.target_redis()
    try:
        removed = await flush_cache(client)
    finally:
        await client.aclose()
    await ctx.progress(100, t("cache.flushed", keys=removed))
    summary = t("cache.flushed", keys=removed)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Text(summary),),
        ids={"keys_removed": removed},
    )


COMMANDS = (
    Command(
        name="cache stats",
        role=Role.VIEWER,
        run=show_cache_stats,
    ),
    Command(
        name="cache flush",
        role=Role.ADMIN,
        run=run_flush,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_flush,
    ),
)
