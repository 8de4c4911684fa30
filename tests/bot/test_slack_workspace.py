"""Requests signed for this app but sent from another Slack team or enterprise are refused.

The Bolt app runs in-process with signature checking on; its Web API client talks to the local
stand-in, whose auth.test names the workspace T0GARDEN. Requests are signed and dispatched as
Slack sends them; the background work is drained before looking at what happened.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.runtime import BotWorld, request, target_redis
from tests.support.signing import block_action_body, new_trigger_id, slash_body
from tests.support.slack_api import TEAM_ID, SlackApiStandIn, SlackCall
from tests.support.slack_scenario import SlackScenario, slack_scenario

CHANNEL = "C0OPS"
REFUSAL = "a request from another team or enterprise is refused"


async def deliver(slack: SlackScenario, body: bytes) -> int:
    """Dispatch a signed request as Slack sends it; return the ack's status once its work is done."""
    return (await slack.send(body)).status


def slash(
    standin: SlackApiStandIn, text: str, *, user: str, team: str, enterprise: str | None = None
) -> bytes:
    return slash_body(
        text,
        user=user,
        channel=CHANNEL,
        trigger_id=new_trigger_id(),
        response_url=standin.response_url("cmd"),
        team=team,
        enterprise=enterprise,
    )


def shown(calls: list[SlackCall]) -> str:
    return "\n".join(str(c.params.get("text", "")) + json.dumps(c.params, default=str) for c in calls)


def audit_rows(world: BotWorld) -> list[tuple[Any, ...]]:
    return world.query("SELECT event, outcome, actor, source, detail->>'reason' FROM audit_log ORDER BY id")


async def test_a_slash_command_from_another_team_is_refused_audited_and_runs_nothing(
    bot_world: BotWorld, standin: SlackApiStandIn, target_keys: dict[str, str]
) -> None:
    async with slack_scenario(bot_world, standin) as slack:
        status = await deliver(slack, slash(standin, "cache flush", user="U0ADMIN", team="T0OTHER"))

    assert status == 200
    assert REFUSAL in shown(standin.calls_to("chat.postEphemeral"))
    assert standin.calls_to("chat.postMessage") == []
    assert bot_world.query("SELECT count(*) FROM approvals") == [(0,)]
    assert target_redis().dbsize() == len(target_keys)
    [(event, outcome, actor, source, reason)] = audit_rows(bot_world)
    assert (event, outcome, actor, source) == ("request", "refused", "U0ADMIN", "slack")
    assert REFUSAL in reason


async def test_a_slash_command_from_another_enterprise_is_refused(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_scenario(
        bot_world, standin, SLACK_TEAM_ID=TEAM_ID, SLACK_ENTERPRISE_ID="E0GARDEN"
    ) as slack:
        status = await deliver(
            slack, slash(standin, "jobs", user="U0OPS", team=TEAM_ID, enterprise="E0OTHER")
        )

    assert status == 200
    assert REFUSAL in shown(standin.calls_to("chat.postEphemeral"))
    assert standin.calls_to("chat.postMessage") == []
    assert [row[:3] for row in audit_rows(bot_world)] == [("request", "refused", "U0OPS")]


async def test_an_approve_click_from_another_team_decides_nothing(
    bot_world: BotWorld, standin: SlackApiStandIn, target_keys: dict[str, str]
) -> None:
    async with slack_scenario(bot_world, standin) as slack:
        asked = await slack.runtime.pipeline.handle(request("U0ADMIN2", "cache flush"))
        approval_id = asked.ids["approval_id"]
        body = block_action_body(
            "approve",
            str(approval_id),
            user="U0LEAD",
            channel=CHANNEL,
            message_ts="1700000000.000100",
            response_url=standin.response_url("act"),
            team="T0OTHER",
        )
        status = await deliver(slack, body)

    assert status == 200
    assert bot_world.query("SELECT status, decided_by FROM approvals") == [("pending", None)]
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]
    assert target_redis().dbsize() == len(target_keys)
    assert ("request", "refused", "U0LEAD") in [row[:3] for row in audit_rows(bot_world)]
    assert standin.calls_to("chat.update") == []


async def test_the_bots_own_team_learned_from_auth_test_is_served(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_scenario(bot_world, standin) as slack:
        status = await deliver(slack, slash(standin, "jobs", user="U0OPS", team=TEAM_ID))

    assert status == 200
    assert REFUSAL not in shown(standin.calls)
    assert [row[:3] for row in audit_rows(bot_world)] == [("request", "succeeded", "U0OPS")]
