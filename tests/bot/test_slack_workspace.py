"""Requests signed for this app but sent from another Slack team or enterprise are refused.

The Bolt app runs in-process with signature checking on; its Web API client talks to the local
stand-in, whose auth.test names the workspace T0GARDEN. Requests are signed and dispatched as
Slack sends them; the background work is drained before looking at what happened.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.background import AckGate, BackgroundWork
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.server import learn_identity
from bot.slack_app import BotIdentity, build_slack_app, build_web_client
from tests.support.runtime import BotWorld, request, target_redis
from tests.support.serve import SIGNING_SECRET, block_action_body, new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import TEAM_ID, SlackApiStandIn, SlackCall

CHANNEL = "C0OPS"
REFUSAL = "a request from another team or enterprise is refused"


@pytest.fixture
def standin() -> Iterator[SlackApiStandIn]:
    with SlackApiStandIn() as api:
        api.set_usergroup("S0ONCALL", ["U0ONCALL"])
        yield api


@asynccontextmanager
async def slack_bot(
    world: BotWorld, standin: SlackApiStandIn, **env: str
) -> AsyncIterator[tuple[AsyncApp, BackgroundWork, Runtime]]:
    """The app as `serve` builds it, having learned its workspace from auth.test as at start-up."""
    world.extra_env.update(
        {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": standin.url}
    )
    world.extra_env.update(env)
    async with world.runtime() as runtime:
        client = build_web_client(runtime)
        identity = BotIdentity()
        work = BackgroundWork(AckGate())
        app = build_slack_app(runtime, client=client, work=work, metrics=Metrics(), identity=identity)
        await learn_identity(client, identity)
        try:
            yield app, work, runtime
        finally:
            await work.close()


async def deliver(app: AsyncApp, work: BackgroundWork, body: bytes) -> int:
    """Dispatch a signed request as Slack sends it; return the ack's status once its work is done."""
    response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=signed_headers(body)))
    await work.drain()
    return response.status


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
    async with slack_bot(bot_world, standin) as (app, work, _):
        status = await deliver(app, work, slash(standin, "cache flush", user="U0ADMIN", team="T0OTHER"))

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
    async with slack_bot(bot_world, standin, SLACK_TEAM_ID=TEAM_ID, SLACK_ENTERPRISE_ID="E0GARDEN") as (
        app,
        work,
        _,
    ):
        status = await deliver(
            app, work, slash(standin, "jobs", user="U0OPS", team=TEAM_ID, enterprise="E0OTHER")
        )

    assert status == 200
    assert REFUSAL in shown(standin.calls_to("chat.postEphemeral"))
    assert standin.calls_to("chat.postMessage") == []
    assert [row[:3] for row in audit_rows(bot_world)] == [("request", "refused", "U0OPS")]


async def test_an_approve_click_from_another_team_decides_nothing(
    bot_world: BotWorld, standin: SlackApiStandIn, target_keys: dict[str, str]
) -> None:
    async with slack_bot(bot_world, standin) as (app, work, runtime):
        asked = await runtime.pipeline.handle(request("U0ADMIN2", "cache flush"))
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
        status = await deliver(app, work, body)

    assert status == 200
    assert bot_world.query("SELECT status, decided_by FROM approvals") == [("pending", None)]
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]
    assert target_redis().dbsize() == len(target_keys)
    assert ("request", "refused", "U0LEAD") in [row[:3] for row in audit_rows(bot_world)]
    assert standin.calls_to("chat.update") == []


async def test_the_bots_own_team_learned_from_auth_test_is_served(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_bot(bot_world, standin) as (app, work, _):
        status = await deliver(app, work, slash(standin, "jobs", user="U0OPS", team=TEAM_ID))

    assert status == 200
    assert REFUSAL not in shown(standin.calls)
    assert [row[:3] for row in audit_rows(bot_world)] == [("request", "succeeded", "U0OPS")]
