"""Incidents in Slack: signed requests dispatched in-process to the Bolt app (Web API stand-in),
the notice's Acknowledge and Resolve buttons, and the escalation tick that `serve` runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.escalation import TICK_S, escalate_forever, escalation_once
from tests.support.clock import Clock
from tests.support.runtime import BotWorld, closed_port, request
from tests.support.signing import block_action_body, new_trigger_id, slash_body
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.slack_scenario import SlackScenario, slack_scenario
from tests.support.smtp import Inbox

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
LEVELS: dict[str, Any] = {
    "level1": [{"name": "On duty", "slack": "U0OPS", "email": "duty@example.com"}],
    "level2": [{"name": "System admin", "slack": "U0ADMIN", "email": "sysadmin@example.com"}],
    "level3": [{"name": "Dev lead", "slack": "U0LEAD", "email": "lead@example.com"}],
    "level4": [{"name": "Architect", "slack": "U0ARCH", "email": "arch@example.com"}],
}


@asynccontextmanager
async def slack_bot(
    world: BotWorld, standin: SlackApiStandIn, smtp_url: str
) -> AsyncIterator[tuple[SlackScenario, Clock]]:
    """The bot in-process (tests/support/slack_scenario.py) with escalation, mail and the test's clock."""
    world.configure(escalation=LEVELS, mail={"url": smtp_url, "from": "gardenbot@example.com"})
    clock = Clock(T0)
    async with slack_scenario(world, standin) as slack:
        slack.runtime.services.clock = clock
        yield slack, clock


async def deliver(slack: SlackScenario, body: bytes) -> int:
    return (await slack.send(body)).status


def click(standin: SlackApiStandIn, action_id: str, value: str, user: str, ts: str) -> bytes:
    return block_action_body(
        action_id,
        value,
        user=user,
        channel="C0INC",
        message_ts=ts,
        response_url=standin.response_url("click"),
    )


def action_ids(call: SlackCall) -> list[str]:
    blocks = call.json_param("blocks") or []
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_a_declared_incident_is_acknowledged_then_resolved_by_its_notice_buttons(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with slack_bot(bot_world, standin, inbox.url) as (slack, clock):
        body = slash_body(
            "incident declare P2 Quotes PDF fails",
            user="U0OPS",
            channel="C0OPS",
            trigger_id=new_trigger_id(),
            response_url=standin.response_url("cmd"),
        )
        assert await deliver(slack, body) == 200
        [notice] = [c for c in standin.calls_to("chat.postMessage") if c.params["channel"] == "C0INC"]
        [(incident_id, message_ref)] = bot_world.query("SELECT id, message_ref FROM incidents")
        ts = message_ref["ts"]
        clock.now += timedelta(minutes=3)
        assert await deliver(slack, click(standin, "incident_ack", str(incident_id), "U0LEAD", ts)) == 200
        acked = bot_world.query("SELECT status, acked_by FROM incidents")
        clock.now += timedelta(minutes=7)
        assert await deliver(slack, click(standin, "incident_resolve", str(incident_id), "U0LEAD", ts)) == 200

    assert action_ids(notice) == ["incident_ack", "incident_resolve"]
    assert acked == [("acknowledged", "U0LEAD")]
    updates = [c for c in standin.calls_to("chat.update") if c.params["ts"] == ts]
    assert action_ids(updates[0]) == ["incident_resolve"]  # acknowledged: only Resolve stays
    assert "resolved by" in str(updates[-1].params.get("text"))
    assert bot_world.query("SELECT status, resolved_by FROM incidents") == [("resolved", "U0LEAD")]
    assert len(standin.calls_to("file_upload")) == 1


async def test_a_second_acknowledge_click_is_told_only_to_the_clicker(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with slack_bot(bot_world, standin, inbox.url) as (slack, _):
        declared = await slack.runtime.pipeline.handle(request("U0OPS", "incident declare P3 Slow export"))
        incident_id = str(declared.ids["incident_id"])
        await deliver(slack, click(standin, "incident_ack", incident_id, "U0LEAD", "1.000001"))
        standin.reset()
        await deliver(slack, click(standin, "incident_ack", incident_id, "U0OPS", "1.000001"))

    assert standin.calls_to("chat.update") == []
    [told] = standin.calls_to("chat.postEphemeral")
    assert told.params["user"] == "U0OPS" and "already acknowledged" in str(told.params.get("text"))


# --- escalation -----------------------------------------------------------------------------------


async def test_an_unacknowledged_p1_pages_level_4_once_in_the_incidents_channel_and_by_mail(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with slack_bot(bot_world, standin, inbox.url) as (slack, clock):
        await slack.runtime.pipeline.handle(request("U0OPS", "incident declare P1 Everything is down"))
        standin.reset()
        inbox.received.clear()
        early = await escalation_once(slack.runtime.services, T0 + timedelta(minutes=14))
        posted_early = len(standin.calls_to("chat.postMessage"))
        clock.now = T0 + timedelta(minutes=16)
        await escalation_once(slack.runtime.services, clock.now)
        await escalation_once(slack.runtime.services, clock.now)  # the same tick again: no second page

    assert posted_early == 0 and 0 < early <= TICK_S
    [page] = standin.calls_to("chat.postMessage")
    assert page.params["channel"] == "C0INC"
    assert "<@U0ARCH>" in json.dumps(page.json_param("blocks")) and "not acknowledged" in page.params["text"]
    [mail] = inbox.received
    assert "arch@example.com" in mail.rcpt_tos
    assert bot_world.query("SELECT level, paged_at IS NOT NULL FROM incident_pages WHERE level = 4") == [
        (4, True)
    ]


async def test_a_page_that_reaches_neither_slack_nor_mail_is_recorded_and_made_again_later(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with slack_bot(bot_world, standin, f"smtp://127.0.0.1:{closed_port()}") as (slack, _):
        await slack.runtime.pipeline.handle(request("U0OPS", "incident declare P1 Everything is down"))
        standin.fail(1, "chat.postMessage", error="channel_not_found")
        await escalation_once(slack.runtime.services, T0 + timedelta(minutes=16))
        failed = bot_world.query("SELECT kind FROM incident_timeline WHERE kind = 'page_failed'")
        await escalation_once(slack.runtime.services, T0 + timedelta(minutes=19))  # past the page's lease

    assert failed == [("page_failed",)]
    assert bot_world.query("SELECT paged_at IS NOT NULL, attempts FROM incident_pages WHERE level = 4") == [
        (True, 2)
    ]


async def test_the_serve_loop_ticks_with_the_injected_clock_and_sleeps_at_most_a_tick(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise asyncio.CancelledError

    async with slack_bot(bot_world, standin, inbox.url) as (slack, _):
        await slack.runtime.pipeline.handle(request("U0OPS", "incident declare P1 Everything is down"))
        standin.reset()
        with pytest.raises(asyncio.CancelledError):
            await escalate_forever(
                slack.runtime.services, clock=lambda: T0 + timedelta(minutes=16), sleep=sleep
            )

    assert len(slept) == 2 and all(0 <= s <= TICK_S for s in slept)
    assert len(standin.calls_to("chat.postMessage")) == 1  # level 4, once over two ticks
