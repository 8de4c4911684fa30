"""`help [sub-command]`: what the asker may run, and how."""

from __future__ import annotations

from commands.base import Args, Command, Context, Role
from core.errors import UsageError
from core.reply import Header, Reply, Table, Text


class HelpArgs(Args):
    topic: str | None = None
    rest_field = "topic"


async def show_help(ctx: Context, args: HelpArgs) -> Reply:
    t = ctx.t
    assert ctx.registry is not None
    role = ctx.services.policy.role_of(ctx.actor)
    allowed = [c for c in ctx.registry if c.role <= role]
    if args.topic:
        word = args.topic.split()[0].lower()
        family = [c for c in ctx.registry.family(word) if c.role <= role]
        if not family:
            raise UsageError("usage.unknown_command", usage="help", word=word[:40])
        allowed = family
    rows = tuple(
        (
            f"/garden {c.usage}",
            t(c.help_key) + (f" ({t('help.needs_approval')})" if c.risky else ""),
        )
        for c in allowed
    )
    elements: list[Header | Text | Table] = [Header(t("help.header"))]
    elements.append(Table(columns=(t("help.command"), t("help.what")), rows=rows))
    if ctx.services.policy.is_approver(ctx.actor):
        elements.append(Text(t("help.approver_note")))
    return Reply(
        status="succeeded",
        summary=t("help.summary", count=len(rows)),
        elements=tuple(elements),
        visibility="asker",
    )


COMMANDS = (
    Command(
        name="help",
        usage="help [sub-command]",
        help_key="help.help",
        role=Role.VIEWER,
        args=HelpArgs,
        run=show_help,
    ),
)
