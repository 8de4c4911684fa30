"""Two-person approval over real HTTP: `/garden cache flush`, then signed clicks on its buttons.

The risky action empties the target Redis (database 12, only these tests' keys). Each test opens
its own approval in a channel of its own and reads back the Web API calls, the bot's store and
the target.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.serve import BotServer, call_text, new_channel, serving, target_redis
from tests.support.slack_api import SlackCall

TARGET_KEYS = {"estimate:1": "見積", "estimate:2": "quote", "price:master": "v42"}
PERCENT = re.compile(r"[▓░]{10} (\d+)%")


def says(text: str, words: str, user: str) -> bool:
    """`words` followed by the user, shown as a Slack mention (<@U…>) or as the bare id."""
    return re.search(rf"{re.escape(words)} (?:<@{user}>|{user}\b)", text) is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotServer]:
    with serving(tmp_path_factory.mktemp("serve-approvals")) as running:
        yield running


@pytest.fixture
def target_keys() -> Iterator[dict[str, str]]:
    client = target_redis()
    client.flushdb()
    client.mset(TARGET_KEYS)
    try:
        yield dict(TARGET_KEYS)
    finally:
        client.flushdb()
        client.close()


def target_key_count() -> int:
    client = target_redis()
    try:
        return int(client.dbsize())
    finally:
        client.close()


@dataclass
class Pending:
    """An approval message as posted: its channel, its ts and the approval id on its buttons."""

    channel: str
    ts: str
    approval_id: int
    message: SlackCall


async def request_flush(server: BotServer) -> Pending:
    channel = new_channel()
    ack = await server.slash("cache flush", user="U0ADMIN", channel=channel)
    assert ack.status_code == 200
    [message] = await server.wait_calls("chat.postMessage", channel=channel)

    async def remembered() -> list[dict[str, Any]]:
        return await server.query(
            "SELECT id, message_ref FROM approvals WHERE channel = %s AND message_ref ? 'ts'", (channel,)
        )

    rows: list[dict[str, Any]] = []
    for _ in range(200):
        rows = await remembered()
        if rows:
            break
        await asyncio.sleep(0.05)
    assert rows, f"the approval message was not remembered\n{server.log_tail()}"
    [row] = rows
    assert row["message_ref"]["channel"] == channel
    return Pending(channel, str(row["message_ref"]["ts"]), int(row["id"]), message)


async def click(server: BotServer, pending: Pending, action_id: str, user: str) -> None:
    response = await server.click(
        action_id, str(pending.approval_id), user=user, channel=pending.channel, message_ts=pending.ts
    )
    assert response.status_code == 200, response.text


def updates_of(server: BotServer, pending: Pending) -> list[SlackCall]:
    return [
        c for c in server.calls("chat.update", channel=pending.channel) if c.params.get("ts") == pending.ts
    ]


def buttons(call: SlackCall) -> list[dict[str, Any]]:
    blocks = call.json_param("blocks") or []
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def jobs_of(server: BotServer, pending: Pending) -> list[dict[str, Any]]:
    return await server.query(
        "SELECT id, status, requested_by, approved_by FROM jobs WHERE approval_id = %s",
        (pending.approval_id,),
    )


async def approval_row(server: BotServer, pending: Pending) -> dict[str, Any]:
    [row] = await server.query(
        "SELECT status, decided_by, job_id FROM approvals WHERE id = %s", (pending.approval_id,)
    )
    return row


async def events(server: BotServer, pending: Pending) -> list[str]:
    return [r["event"] for r in await server.audit(pending.channel)]


async def refusal_to(server: BotServer, pending: Pending, user: str) -> str:
    def found() -> list[SlackCall]:
        return [
            c for c in server.calls("chat.postEphemeral", channel=pending.channel) if c.params["user"] == user
        ]

    [refusal] = await server.wait_for(found, what=f"an ephemeral answer to {user}")
    return call_text(refusal)


async def finished_updates(server: BotServer, pending: Pending) -> list[SlackCall]:
    """The message's updates, once the last one shows the flush's result."""

    def done() -> list[SlackCall]:
        updates = updates_of(server, pending)
        return updates if updates and "Cache emptied" in str(updates[-1].params.get("text")) else []

    result: list[SlackCall] = await server.wait_for(done, what="the flush's result in the approval message")
    return result


# --- the request --------------------------------------------------------------------------------


async def test_the_approval_message_has_approve_and_deny_with_confirm_dialogs(
    server: BotServer, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(server)

    message = pending.message
    assert "approval" in str(message.params["text"])
    approve, deny = buttons(message)
    assert (approve["action_id"], deny["action_id"]) == ("approve", "deny")
    assert approve["value"] == deny["value"] == str(pending.approval_id)
    for button in (approve, deny):
        confirm = button["confirm"]
        assert confirm["title"]["text"] and confirm["text"]["text"]
        assert confirm["confirm"]["text"] and confirm["deny"]["text"]
    shown = call_text(message)
    assert f"{len(target_keys)} keys" in shown  # the approver sees what will happen
    assert "U0ADMIN" in shown and "&lt;@U0ADMIN&gt;" not in shown  # and who asked, not as escaped markup
    assert await jobs_of(server, pending) == []
    assert target_key_count() == len(target_keys)


# --- who may not decide -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "deny"])
@pytest.mark.parametrize(
    ("user", "says"),
    [("U0ADMIN", "your own request"), ("U0OPS", "Only an approver")],
    ids=["the-requester", "a-non-approver"],
)
async def test_a_click_by_someone_who_may_not_decide_is_refused_to_them_alone(
    server: BotServer, target_keys: dict[str, str], user: str, says: str, action: str
) -> None:
    pending = await request_flush(server)
    await click(server, pending, action, user)

    assert says in await refusal_to(server, pending, user)
    assert updates_of(server, pending) == []  # the message still offers its buttons to the others
    assert (await approval_row(server, pending))["status"] == "pending"
    assert await jobs_of(server, pending) == []
    assert "job_started" not in await events(server, pending)
    assert target_key_count() == len(target_keys)


# --- approved -----------------------------------------------------------------------------------


async def test_an_approver_runs_it_and_the_message_shows_decision_progress_and_result(
    server: BotServer, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(server)
    await click(server, pending, "approve", "U0LEAD")
    updates = await finished_updates(server, pending)

    decision, *during, result = updates
    assert says(str(decision.params["text"]), "approved by", "U0LEAD")
    assert buttons(decision) == []  # decided: nobody can click again
    progress = [int(p) for u in during for p in PERCENT.findall(call_text(u))]
    assert progress and max(progress) > 0, [call_text(u) for u in during]
    assert progress == sorted(progress)
    assert f"{len(target_keys)} keys removed" in call_text(result)
    assert buttons(result) == []
    assert target_key_count() == 0
    [job] = await jobs_of(server, pending)
    assert (job["status"], job["requested_by"], job["approved_by"]) == ("succeeded", "U0ADMIN", "U0LEAD")
    row = await approval_row(server, pending)
    assert (row["status"], row["decided_by"], row["job_id"]) == ("approved", "U0LEAD", job["id"])
    assert server.calls("chat.postEphemeral", channel=pending.channel) == []
    assert len(server.calls("chat.postMessage", channel=pending.channel)) == 1  # all in place
    assert (await events(server, pending)).count("job_started") == 1


async def test_a_second_click_after_the_decision_runs_nothing_and_says_why(
    server: BotServer, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(server)
    await click(server, pending, "approve", "U0LEAD")
    await finished_updates(server, pending)
    await click(server, pending, "approve", "U0LEAD")

    assert says(await refusal_to(server, pending, "U0LEAD"), "already approved by", "U0LEAD")
    assert len(await jobs_of(server, pending)) == 1
    assert (await events(server, pending)).count("job_started") == 1


@pytest.mark.parametrize(
    "clickers", [("U0LEAD", "U0LEAD"), ("U0LEAD", "U0LEAD2")], ids=["double-click", "two-approvers"]
)
async def test_simultaneous_clicks_run_the_action_once(
    server: BotServer, target_keys: dict[str, str], clickers: tuple[str, str]
) -> None:
    pending = await request_flush(server)
    await asyncio.gather(*(click(server, pending, "approve", user) for user in clickers))
    updates = await finished_updates(server, pending)

    [job] = await jobs_of(server, pending)
    winner = job["approved_by"]
    loser = clickers[1] if winner == clickers[0] else clickers[0]
    assert says(str(updates[0].params["text"]), "approved by", winner)
    assert says(await refusal_to(server, pending, loser), "already approved by", winner)
    assert (await events(server, pending)).count("job_started") == 1
    assert (await approval_row(server, pending))["decided_by"] == winner
    assert target_key_count() == 0


# --- denied and expired -------------------------------------------------------------------------


async def test_deny_updates_the_message_with_who_denied_and_runs_nothing(
    server: BotServer, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(server)
    await click(server, pending, "deny", "U0LEAD2")

    def denied() -> list[SlackCall]:
        return updates_of(server, pending)

    [update] = await server.wait_for(denied, what="the denial in the approval message")
    assert says(str(update.params["text"]), "denied by", "U0LEAD2")
    assert buttons(update) == []
    row = await approval_row(server, pending)
    assert (row["status"], row["decided_by"], row["job_id"]) == ("denied", "U0LEAD2", None)
    assert await jobs_of(server, pending) == []
    trail = [(r["event"], r["outcome"]) for r in await server.audit(pending.channel)]
    assert ("approval_denied", "denied") in trail
    assert not [event for event, outcome in trail if outcome == "refused"], trail  # a valid deny is taken
    assert server.calls("chat.postEphemeral", channel=pending.channel) == []  # nobody was told "no"
    assert target_key_count() == len(target_keys)


async def test_an_expired_approval_clicked_is_refused_and_nothing_runs(
    server: BotServer, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(server)
    await server.query(
        "UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = %s",
        (pending.approval_id,),
    )
    await click(server, pending, "approve", "U0LEAD")

    assert "expired" in await refusal_to(server, pending, "U0LEAD")
    assert (await approval_row(server, pending))["status"] == "expired"
    assert await jobs_of(server, pending) == []
    assert "job_started" not in await events(server, pending)
    assert target_key_count() == len(target_keys)
