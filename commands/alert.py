"""`alert ack <id>`: acknowledge an Alertmanager alert group (the Acknowledge button's command).

The acknowledgement (who, when) is stored on the group's thread; the bot shows it on the group's
Slack message through `Services.alert_messages`. The request is audited by the pipeline.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field

from commands.base import Args, Context, Role
from commands.command import Command
from core.reply import Reply, Text
from store import alerts as alert_store


class AlertAckArgs(Args):
    alert_id: int = Field(ge=1, le=2**63 - 1)


async def acknowledge_alert(ctx: Context, args: AlertAckArgs) -> Reply:
    thread = await alert_store.acknowledge(
        ctx.services.store, args.alert_id, by=ctx.actor.user_id, at=datetime.now(UTC)
    )
    if ctx.services.alert_messages is not None:
        ctx.services.alert_messages.refresh(thread.id)
    summary = ctx.t("alert.acknowledged", alert=thread.id, summary=thread.group.summary)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Text(summary),),
        visibility="asker",  # the group's own message shows it to everyone
        ids={"alert_id": thread.id},
    )


COMMANDS = (
    Command(name="alert ack", role=Role.OPERATOR, run=acknowledge_alert, args=AlertAckArgs, mutates=True),
)
