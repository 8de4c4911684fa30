"""`audit [@user] [--since 7d]`: who did what. Admins see everyone; others their own actions."""

from __future__ import annotations

import re

from pydantic import field_validator

from commands.base import Args, Context, Role
from commands.command import Command
from core.formatting import format_time
from core.reply import Header, Reply, Table, Text
from core.timespan import parse_since

MENTION = re.compile(r"^@([UW][A-Z0-9]{2,})$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


class AuditArgs(Args):
    user: str | None = None
    since: str = "7d"
    options = ("since",)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is None:
            return None
        match = MENTION.match(v)
        if match:
            return match.group(1)
        if USER_ID.match(v):
            return v
        raise ValueError("a user mention like @name or a user ID like U0123ABC")

    @field_validator("since")
    @classmethod
    def _since(cls, v: str) -> str:
        parse_since(v)
        return v


async def show_audit(ctx: Context, args: AuditArgs) -> Reply:
    t = ctx.t
    who = args.user
    verdict = ctx.services.access.may_read_audit_of(ctx.actor, who)
    if who is not None:
        verdict.require()
    elif not verdict.allowed:
        who = ctx.actor.user_id  # everyone's trail is for admins; others see their own
    since = parse_since(args.since)
    entries = await ctx.services.audit.entries(actor=who, since=since, limit=30)
    zone = ctx.services.settings.zone
    if not entries:
        return Reply(
            status="succeeded",
            summary=t("audit.none"),
            elements=(Text(t("audit.none")),),
            visibility="asker",
        )
    rows = tuple(
        (
            str(e.id),
            format_time(e.at, zone),
            e.actor,
            e.command,
            e.event,
            e.outcome,
            e.approver or "",
        )
        for e in entries
    )
    return Reply(
        status="succeeded",
        summary=t("audit.summary", count=len(rows), since=args.since),
        elements=(
            Header(t("audit.header")),
            Table(
                columns=(
                    "#",
                    t("audit.col.at"),
                    t("audit.col.actor"),
                    t("audit.col.command"),
                    t("audit.col.event"),
                    t("audit.col.outcome"),
                    t("audit.col.approver"),
                ),
                rows=rows,
            ),
        ),
        visibility="asker",
    )


COMMANDS = (
    Command(
        name="audit",
        usage="audit [@user] [--since 7d]",
        role=Role.VIEWER,
        args=AuditArgs,
        run=show_audit,
    ),
)
