"""Two-person approval in-process: `/garden cache flush`, then signed clicks on its buttons.

The risky action empties the target Redis (only these tests' keys). Each test opens its own
approval in a channel of its own on the module's bot and reads back the Web API calls, the bot's
store and the target.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.slack_api import SlackCall
from tests.support.slack_approvals import (
    PERCENT,
    approval_row,
    approved_flush,
    buttons,
    click,
    events,
    finished_updates,
    jobs_of,
    refusal_to,
    request_flush,
    says,
    updates_of,
)
from tests.support.slack_driver import SlackDriver, call_text
from tests.support.slack_scenario import SlackScenario


@pytest.fixture
def slack(module_slack: SlackScenario) -> SlackScenario:
    return module_slack


# --- the request --------------------------------------------------------------------------------


async def test_the_approval_message_has_approve_and_deny_with_confirm_dialogs(
    slack: SlackDriver, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(slack)

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
    assert await jobs_of(slack, pending) == []
    assert slack.target_key_count() == len(target_keys)


# --- who may not decide -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "deny"])
@pytest.mark.parametrize(
    ("user", "says"),
    [("U0ADMIN", "your own request"), ("U0OPS", "Only an approver")],
    ids=["the-requester", "a-non-approver"],
)
async def test_a_click_by_someone_who_may_not_decide_is_refused_to_them_alone(
    slack: SlackDriver, target_keys: dict[str, str], user: str, says: str, action: str
) -> None:
    pending = await request_flush(slack)
    await click(slack, pending, action, user)

    assert says in await refusal_to(slack, pending, user)
    assert updates_of(slack, pending) == []  # the message still offers its buttons to the others
    assert (await approval_row(slack, pending))["status"] == "pending"
    assert await jobs_of(slack, pending) == []
    assert "job_started" not in await events(slack, pending)
    assert slack.target_key_count() == len(target_keys)


# --- approved -----------------------------------------------------------------------------------


async def test_an_approver_runs_it_and_the_message_shows_decision_progress_and_result(
    slack: SlackDriver, target_keys: dict[str, str]
) -> None:
    pending, updates = await approved_flush(slack, "U0LEAD")

    decision, *during, result = updates
    assert says(str(decision.params["text"]), "approved by", "U0LEAD")
    assert buttons(decision) == []  # decided: nobody can click again
    progress = [int(p) for u in during for p in PERCENT.findall(call_text(u))]
    assert progress and max(progress) > 0, [call_text(u) for u in during]
    assert progress == sorted(progress)
    assert f"{len(target_keys)} keys removed" in call_text(result)
    assert buttons(result) == []
    assert slack.target_key_count() == 0
    [job] = await jobs_of(slack, pending)
    assert (job["status"], job["requested_by"], job["approved_by"]) == ("succeeded", "U0ADMIN", "U0LEAD")
    row = await approval_row(slack, pending)
    assert (row["status"], row["decided_by"], row["job_id"]) == ("approved", "U0LEAD", job["id"])
    assert slack.calls("chat.postEphemeral", channel=pending.channel) == []
    assert len(slack.calls("chat.postMessage", channel=pending.channel)) == 1  # all in place
    assert (await events(slack, pending)).count("job_started") == 1


async def test_a_second_click_after_the_decision_runs_nothing_and_says_why(
    slack: SlackDriver, target_keys: dict[str, str]
) -> None:
    pending, _ = await approved_flush(slack, "U0LEAD")
    await click(slack, pending, "approve", "U0LEAD")

    assert says(await refusal_to(slack, pending, "U0LEAD"), "already approved by", "U0LEAD")
    assert len(await jobs_of(slack, pending)) == 1
    assert (await events(slack, pending)).count("job_started") == 1


@pytest.mark.parametrize(
    "clickers", [("U0LEAD", "U0LEAD"), ("U0LEAD", "U0LEAD2")], ids=["double-click", "two-approvers"]
)
async def test_simultaneous_clicks_run_the_action_once(
    slack: SlackDriver, target_keys: dict[str, str], clickers: tuple[str, str]
) -> None:
    pending = await request_flush(slack)
    await asyncio.gather(*(click(slack, pending, "approve", user) for user in clickers))
    updates = await finished_updates(slack, pending)

    [job] = await jobs_of(slack, pending)
    winner = job["approved_by"]
    loser = clickers[1] if winner == clickers[0] else clickers[0]
    assert says(str(updates[0].params["text"]), "approved by", winner)
    assert says(await refusal_to(slack, pending, loser), "already approved by", winner)
    assert (await events(slack, pending)).count("job_started") == 1
    assert (await approval_row(slack, pending))["decided_by"] == winner
    assert slack.target_key_count() == 0


# --- denied and expired -------------------------------------------------------------------------


async def test_deny_updates_the_message_with_who_denied_and_runs_nothing(
    slack: SlackDriver, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(slack)
    await click(slack, pending, "deny", "U0LEAD2")

    def denied() -> list[SlackCall]:
        return updates_of(slack, pending)

    [update] = await slack.wait_for(denied, what="the denial in the approval message")
    assert says(str(update.params["text"]), "denied by", "U0LEAD2")
    assert buttons(update) == []
    row = await approval_row(slack, pending)
    assert (row["status"], row["decided_by"], row["job_id"]) == ("denied", "U0LEAD2", None)
    assert await jobs_of(slack, pending) == []
    trail = [(r["event"], r["outcome"]) for r in await slack.audit(pending.channel)]
    assert ("approval_denied", "denied") in trail
    assert not [event for event, outcome in trail if outcome == "refused"], trail  # a valid deny is taken
    assert slack.calls("chat.postEphemeral", channel=pending.channel) == []  # nobody was told "no"
    assert slack.target_key_count() == len(target_keys)


async def test_an_expired_approval_clicked_is_refused_and_nothing_runs(
    slack: SlackDriver, target_keys: dict[str, str]
) -> None:
    pending = await request_flush(slack)
    await slack.query(
        "UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = %s",
        (pending.approval_id,),
    )
    await click(slack, pending, "approve", "U0LEAD")

    assert "expired" in await refusal_to(slack, pending, "U0LEAD")
    assert (await approval_row(slack, pending))["status"] == "expired"
    assert await jobs_of(slack, pending) == []
    assert "job_started" not in await events(slack, pending)
    assert slack.target_key_count() == len(target_keys)
