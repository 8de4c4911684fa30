"""`db stats` (viewer), `db maintain [--vacuum]` (operator), `db reindex <index>` (admin, approved).

Reads go through `target.monitor_database_url` (a pg_monitor login) when it is set; maintenance and
reindex need the owner's `target.database_url`. Maintenance and reindex take one lock between them:
VACUUM and REINDEX CONCURRENTLY would wait on each other's table locks anyway.
"""

from __future__ import annotations

from pydantic import Field

from commands.base import ApprovalText, Args, Context, NoArgs, Role
from commands.command import Command
from commands.services import Services
from core.formatting import format_bytes, format_duration
from core.i18n import Translator
from core.reply import Element, Fields, Header, Note, Reply, Table, Text
from core.secrets import mask_dsn
from runbooks.db_admin import DatabaseStats, database_stats, find_index, maintain_database, reindex_index
from runbooks.pg_tools import connect_target

DB_LOCK = "db-maintenance"


class MaintainArgs(Args):
    vacuum: bool = False


class IndexArgs(Args):
    index: str = Field(title="index")


def read_database_url(svc: Services) -> str:
    """The least-privileged login that can read the statistics: the monitor's when configured."""
    monitor = svc.settings.target.monitor_database_url
    return monitor.get_secret_value() if monitor is not None else svc.target_database_url()


async def show_db_stats(ctx: Context, args: NoArgs) -> Reply:
    async with connect_target(read_database_url(ctx.services)) as conn:
        stats = await database_stats(conn=conn)
    return render_stats(ctx.t, stats)


def render_stats(t: Translator, stats: DatabaseStats) -> Reply:
    connections = ", ".join(f"{state} {n}" for state, n in stats.connections) or "0"
    summary = t("db.stats_summary", database=stats.database, size=format_bytes(stats.size_bytes))
    elements: list[Element] = [
        Header(t("db.stats_header", database=stats.database)),
        Text(summary),
        Fields(
            (
                (t("db.size"), format_bytes(stats.size_bytes)),
                (t("db.connections"), connections),
                (t("db.archiving"), _archiving(t, stats)),
                (t("db.standbys"), _standbys(stats)),
            )
        ),
    ]
    columns: tuple[str, ...]
    if stats.long_queries:
        rows = tuple((str(q.pid), q.user, q.state, f"{q.seconds:.1f}", q.query) for q in stats.long_queries)
        columns = ("pid", t("db.user"), t("db.state"), t("db.seconds"), t("db.query"))
        elements += [Text(t("db.long_queries")), Table(columns=columns, rows=rows)]
    elements += _slow_statements(t, stats)
    tables = tuple((x.table, format_bytes(x.total_bytes), str(x.live_rows)) for x in stats.largest_tables)
    if tables:
        columns = (t("db.table"), t("db.size"), t("db.live_rows"))
        elements += [Text(t("db.largest_tables")), Table(columns=columns, rows=tables)]
    dead = tuple((x.table, str(x.dead_rows), str(x.live_rows)) for x in stats.dead_tuples)
    if dead:
        columns = (t("db.table"), t("db.dead_rows"), t("db.live_rows"))
        elements += [Text(t("db.dead_tuples")), Table(columns=columns, rows=dead)]
    unused = tuple((i.index, i.table, format_bytes(i.size_bytes)) for i in stats.unused_indexes)
    if unused:
        columns = (t("db.index"), t("db.table"), t("db.size"))
        elements += [Text(t("db.unused_indexes")), Table(columns=columns, rows=unused)]
    return Reply(status="succeeded", summary=summary, elements=tuple(elements))


def _slow_statements(t: Translator, stats: DatabaseStats) -> list[Element]:
    if stats.slow_statements is None:
        return [Note(t("db.no_pg_stat_statements", detail=stats.slow_statements_missing or "?"))]
    if not stats.slow_statements:
        return []
    rows = tuple((s.query, str(s.calls), f"{s.mean_ms:.0f}") for s in stats.slow_statements)
    return [Text(t("db.slow_statements")), Table(columns=(t("db.query"), t("db.calls"), "ms"), rows=rows)]


def _archiving(t: Translator, stats: DatabaseStats) -> str:
    a = stats.archiving
    if a.mode == "off":
        return t("db.archiving_off")
    if a.failing:
        return t("db.archiving_failing", failed=a.failed, wal=a.last_failed_wal or "?")
    return t("db.archiving_on", archived=a.archived, wal=a.last_archived_wal or "-")


def _standbys(stats: DatabaseStats) -> str:
    if not stats.standbys:
        return "-"
    shown = []
    for standby in stats.standbys:
        lag = "-" if standby.lag_bytes is None else format_bytes(standby.lag_bytes)
        shown.append(f"{standby.name or standby.address or '?'} {standby.state} {lag}")
    return ", ".join(shown)


async def run_maintain(ctx: Context, args: MaintainArgs) -> Reply:
    t = ctx.t
    await ctx.progress(5, t("db.maintaining_vacuum" if args.vacuum else "db.maintaining"))
    async with connect_target(ctx.services.target_database_url()) as conn:
        result = await maintain_database(conn=conn, vacuum=args.vacuum)
    steps = " + ".join(step.name for step in result.steps)
    summary = t("db.maintained", steps=steps)
    rows = tuple((step.name, format_duration(step.seconds)) for step in result.steps)
    table = Table(columns=(t("db.step"), t("db.duration")), rows=rows)
    return Reply(status="succeeded", summary=summary, elements=(Text(summary), table))


async def preflight_reindex(ctx: Context, args: IndexArgs) -> None:
    async with connect_target(ctx.services.target_database_url()) as conn:
        await find_index(conn=conn, index=args.index)


async def describe_reindex(ctx: Context, args: IndexArgs) -> ApprovalText:
    dsn = ctx.services.target_database_url()
    async with connect_target(dsn) as conn:
        ref = await find_index(conn=conn, index=args.index)
    summary = ctx.t(
        "db.reindex_describe",
        index=ref.qualified,
        table=ref.table,
        size=format_bytes(ref.size_bytes),
        where=mask_dsn(dsn),
    )
    return ApprovalText(summary=summary, binding={"index": ref.qualified})


async def run_reindex(ctx: Context, args: IndexArgs) -> Reply:
    t = ctx.t
    index = str(ctx.binding.get("index") or args.index)  # exactly the index the approver saw
    await ctx.progress(5, t("db.reindexing", index=index))
    async with connect_target(ctx.services.target_database_url()) as conn:  # autocommit: CONCURRENTLY
        result = await reindex_index(conn=conn, index=index)
    summary = t(
        "db.reindexed",
        index=result.index.qualified,
        before=format_bytes(result.size_before),
        after=format_bytes(result.size_after),
        duration=format_duration(result.seconds),
    )
    return Reply(status="succeeded", summary=summary, elements=(Text(summary),))


COMMANDS = (
    Command(name="db stats", role=Role.VIEWER, run=show_db_stats),
    Command(
        name="db maintain",
        role=Role.OPERATOR,
        args=MaintainArgs,
        run=run_maintain,
        mutates=True,
        background=True,
        lock=DB_LOCK,
    ),
    Command(
        name="db reindex",
        role=Role.ADMIN,
        args=IndexArgs,
        run=run_reindex,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_reindex,
        preflight=preflight_reindex,
        lock=DB_LOCK,
    ),
)
