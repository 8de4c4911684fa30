"""An approval over Slack, step by step, for either test tier (in-process or over HTTP).

`/garden cache flush` asked by U0ADMIN in a channel of its own opens an approval; clicks on its
buttons decide it. The helpers read back the Web API calls and the bot's store through a
`SlackDriver` (tests/support/slack_driver.py).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from tests.support.signing import new_channel
from tests.support.slack_api import SlackCall
from tests.support.slack_driver import SlackDriver, call_text

PERCENT = re.compile(r"[▓░]{10} (\d+)%")


def says(text: str, words: str, user: str) -> bool:
    """`words` followed by the user, shown as a Slack mention (<@U…>) or as the bare id."""
    return re.search(rf"{re.escape(words)} (?:<@{user}>|{user}\b)", text) is not None


@dataclass
class Pending:
    """An approval message as posted: its channel, its ts and the approval id on its buttons."""

    channel: str
    ts: str
    approval_id: int
    message: SlackCall


async def request_flush(slack: SlackDriver, *, timeout: float = 15.0) -> Pending:
    channel = new_channel()
    ack = await slack.slash("cache flush", user="U0ADMIN", channel=channel)
    assert ack.status == 200
    [message] = await slack.wait_calls("chat.postMessage", channel=channel, timeout=timeout)

    async def remembered() -> list[dict[str, Any]]:
        return await slack.query(
            "SELECT id, message_ref FROM approvals WHERE channel = %s AND message_ref ? 'ts'", (channel,)
        )

    rows: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not (rows := await remembered()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert rows, f"the approval message was not remembered\n{slack.log_tail()}"
    [row] = rows
    assert row["message_ref"]["channel"] == channel
    return Pending(channel, str(row["message_ref"]["ts"]), int(row["id"]), message)


async def click(slack: SlackDriver, pending: Pending, action_id: str, user: str) -> None:
    response = await slack.click(
        action_id, str(pending.approval_id), user=user, channel=pending.channel, message_ts=pending.ts
    )
    assert response.status == 200, response.text


def updates_of(slack: SlackDriver, pending: Pending) -> list[SlackCall]:
    return [
        c for c in slack.calls("chat.update", channel=pending.channel) if c.params.get("ts") == pending.ts
    ]


def buttons(call: SlackCall) -> list[dict[str, Any]]:
    blocks = call.json_param("blocks") or []
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def jobs_of(slack: SlackDriver, pending: Pending) -> list[dict[str, Any]]:
    return await slack.query(
        "SELECT id, status, requested_by, approved_by FROM jobs WHERE approval_id = %s",
        (pending.approval_id,),
    )


async def approval_row(slack: SlackDriver, pending: Pending) -> dict[str, Any]:
    [row] = await slack.query(
        "SELECT status, decided_by, job_id FROM approvals WHERE id = %s", (pending.approval_id,)
    )
    return row


async def events(slack: SlackDriver, pending: Pending) -> list[str]:
    return [r["event"] for r in await slack.audit(pending.channel)]


async def refusal_to(slack: SlackDriver, pending: Pending, user: str) -> str:
    def found() -> list[SlackCall]:
        return [
            c for c in slack.calls("chat.postEphemeral", channel=pending.channel) if c.params["user"] == user
        ]

    [refusal] = await slack.wait_for(found, what=f"an ephemeral answer to {user}")
    return call_text(refusal)


async def finished_updates(slack: SlackDriver, pending: Pending) -> list[SlackCall]:
    """The message's updates, once the last one shows the flush's result."""

    def done() -> list[SlackCall]:
        updates = updates_of(slack, pending)
        return updates if updates and "Cache emptied" in str(updates[-1].params.get("text")) else []

    result: list[SlackCall] = await slack.wait_for(done, what="the flush's result in the approval message")
    return result


async def approved_flush(slack: SlackDriver, approver: str) -> tuple[Pending, list[SlackCall]]:
    """A flush asked for, approved by `approver` with a click, and run: the approval and its updates."""
    pending = await request_flush(slack)
    await click(slack, pending, "approve", approver)
    return pending, await finished_updates(slack, pending)
