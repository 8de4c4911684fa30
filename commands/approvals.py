"""`approvals sweep`: pending approvals past their time become expired, and their messages say so.

The scheduler runs it every minute. Each expired approval's message (where it was shown) is edited
in place through `Reply.edits`: the buttons go and the message says it expired. A scheduled sweep
that expired nothing is not audited (its schedule run is recorded all the same).
"""

from __future__ import annotations

from commands.base import Context, NoArgs, Role
from commands.command import Command
from core.formatting import format_time
from core.i18n import Translator
from core.reply import Edit, Fields, Header, Reply, Text, mention
from store.approvals import Approval, expire_overdue


async def sweep_approvals(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    expired = await expire_overdue(ctx.services.store)
    edits = tuple(
        Edit(
            ref={"channel": str(a.message_ref["channel"]), "ts": str(a.message_ref["ts"])},
            reply=expired_message(a, t, ctx),
        )
        for a in expired
        if a.message_ref.get("channel") and a.message_ref.get("ts")
    )
    ids = ", ".join(str(a.id) for a in expired) or "-"
    text = t("approvals.swept", count=len(expired), ids=ids)
    return Reply(
        status="succeeded", summary=text, elements=(Text(text),), edits=edits, uneventful=not expired
    )


def expired_message(approval: Approval, t: Translator, ctx: Context) -> Reply:
    """The approval's message once expired: what was asked, by whom, and that nothing ran; no buttons."""
    zone = ctx.services.settings.zone
    text = t("approval.expired", approval_id=approval.id)
    return Reply(
        status="refused",
        summary=text,
        elements=(
            Header(t("approval.header_expired", command=approval.command)),
            Text(approval.summary),
            Fields(
                (
                    (t("approval.requested_by"), mention(approval.requester)),
                    (t("approval.expired_at"), format_time(approval.expires_at, zone)),
                    (t("approval.id"), str(approval.id)),
                )
            ),
            Text(text),
        ),
        ids={"approval_id": approval.id},
    )


COMMANDS = (Command(name="approvals sweep", role=Role.ADMIN, run=sweep_approvals, mutates=True),)
