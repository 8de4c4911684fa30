"""`help [sub-command]`: what the asker may run, and how (a dry run of the access rule)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from commands.base import Args, Context, Role
from commands.command import Command
from core.errors import UsageError
from core.reply import Header, Reply, Table, Text

if TYPE_CHECKING:
    from commands.registry import Registry


class HelpArgs(Args):
    topic: str | None = None
    rest_field = "topic"


def help_command(registry: Registry) -> Command:
    """`help`, answering from this registry."""

    async def show_help(ctx: Context, args: HelpArgs) -> Reply:
        access = ctx.services.access
        allowed = [c for c in registry if access.may_run(ctx.actor, c).allowed]
        if args.topic:
            word = args.topic.split()[0].lower()
            allowed = [c for c in registry.family(word) if c in allowed]
            if not allowed:
                raise UsageError("usage.unknown_command", usage="help", word=word[:40])
        return help_reply(ctx, allowed)

    return Command(name="help", usage="help [sub-command]", role=Role.VIEWER, args=HelpArgs, run=show_help)


def help_reply(ctx: Context, commands: Iterable[Command]) -> Reply:
    t = ctx.t
    rows = tuple(
        (f"/garden {c.usage}", t(c.help_key) + (f" ({t('help.needs_approval')})" if c.risky else ""))
        for c in commands
    )
    elements: list[Header | Text | Table] = [Header(t("help.header"))]
    elements.append(Table(columns=(t("help.command"), t("help.what")), rows=rows))
    if ctx.services.access.is_approver(ctx.actor):
        elements.append(Text(t("help.approver_note")))
    return Reply(
        status="succeeded",
        summary=t("help.summary", count=len(rows)),
        elements=tuple(elements),
        visibility="asker",
    )
