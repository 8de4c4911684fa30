"""Slash commands in-process: signed requests dispatched to the Bolt app, Web API calls out.

Each test speaks in a channel of its own, so the answers of one test are told apart from the
others' on the module's bot. The Web API is the local stand-in (tests/support/slack_api.py).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from core.i18n import Translator
from tests.support.runtime import BotWorld
from tests.support.signing import new_channel, new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.slack_driver import SlackDriver, call_text
from tests.support.slack_scenario import SlackScenario, slack_scenario

MAX_BLOCKS = 50
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def assert_renderable(call: SlackCall) -> list[dict[str, Any]]:
    """What Slack itself insists on: a fallback text, and at most 50 blocks."""
    assert str(call.params.get("text", "")).strip(), f"{call.method} without fallback text"
    blocks: list[dict[str, Any]] = call.json_param("blocks") or []
    assert 0 < len(blocks) <= MAX_BLOCKS
    return blocks


async def ack(slack: SlackDriver, text: str, *, user: str, channel: str) -> None:
    response = await slack.slash(text, user=user, channel=channel)
    assert response.status == 200, response.text
    assert response.text == ""  # the ack says nothing; the answer comes through the Web API


# --- answers in the channel, refusals to the asker -------------------------------------------


async def test_health_and_jobs_are_answered_in_the_channel(module_slack: SlackScenario) -> None:
    slack, channel = module_slack, new_channel()
    await ack(slack, "health", user="U0INTERN", channel=channel)
    [health] = await slack.wait_calls("chat.postMessage", channel=channel)
    await ack(slack, "jobs", user="U0OPS", channel=channel)
    _, jobs = await slack.wait_calls("chat.postMessage", channel=channel, count=2)

    health_blocks = assert_renderable(health)
    assert health_blocks[0]["type"] == "header"
    shown = call_text(health)
    for check in ("database", "disk", "memory"):  # the target checks, one row each
        assert check in shown.lower()
    assert_renderable(jobs)
    assert slack.calls("chat.postEphemeral", channel=channel) == []
    audit = await slack.audit(channel)
    assert [(r["command"], r["event"], r["actor"]) for r in audit] == [
        ("health", "request", "U0INTERN"),
        ("jobs", "request", "U0OPS"),
    ]


async def test_help_is_shown_to_the_asker_only(module_slack: SlackScenario) -> None:
    # Help lists what this asker may run, so it goes to them alone (chat.postEphemeral).
    slack, channel = module_slack, new_channel()
    await ack(slack, "help", user="U0INTERN", channel=channel)
    [answer] = await slack.wait_calls("chat.postEphemeral", channel=channel)

    assert answer.params["user"] == "U0INTERN"
    assert_renderable(answer)
    shown = call_text(answer)
    assert "/garden health" in shown
    assert "cache flush" not in shown  # a viewer is not shown what they may not run
    assert slack.calls("chat.postMessage", channel=channel) == []


@pytest.mark.parametrize(
    ("user", "text", "says"),
    [
        ("U0OPS", "frobnicate now", "Unknown sub-command `frobnicate`"),
        ("U0NOBODY", "health", "no role in this bot"),
        ("U0INTERN", "cache flush", "needs the admin role"),
    ],
    ids=["unknown-sub-command", "unknown-user", "viewer-flushing-the-cache"],
)
async def test_refusals_go_to_the_asker_only_and_nothing_runs(
    module_slack: SlackScenario, user: str, text: str, says: str
) -> None:
    slack, channel = module_slack, new_channel()
    await ack(slack, text, user=user, channel=channel)
    [refusal] = await slack.wait_calls("chat.postEphemeral", channel=channel)

    assert refusal.params["user"] == user
    assert_renderable(refusal)
    assert says in call_text(refusal)
    assert slack.calls("chat.postMessage", channel=channel) == []
    assert slack.calls("chat.update", channel=channel) == []
    audit = await slack.audit(channel)
    assert [(r["event"], r["outcome"], r["actor"]) for r in audit] == [("request", "refused", user)]
    assert await slack.query("SELECT id FROM approvals WHERE channel = %s", (channel,)) == []
    assert await slack.query("SELECT id FROM jobs WHERE channel = %s", (channel,)) == []


async def test_usage_for_an_unknown_sub_command_names_help(module_slack: SlackScenario) -> None:
    slack, channel = module_slack, new_channel()
    await ack(slack, "restart everything", user="U0OPS", channel=channel)
    [refusal] = await slack.wait_calls("chat.postEphemeral", channel=channel)

    assert "`/garden help`" in call_text(refusal)


# --- retries and rate limits -----------------------------------------------------------------


async def test_a_redelivered_slash_command_runs_once(module_slack: SlackScenario) -> None:
    slack, channel = module_slack, new_channel()
    body = slash_body(
        "jobs",
        user="U0OPS",
        channel=channel,
        trigger_id=new_trigger_id(),
        response_url=slack.standin.response_url(channel),
    )
    # Slack's retry: the very same body, signed again, marked as a retry; sent before the answer came.
    retry_headers = {**signed_headers(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    first, retry = await asyncio.gather(
        slack.deliver(body, signed_headers(body)), slack.deliver(body, retry_headers)
    )
    assert (first.status, retry.status) == (200, 200)

    assert len(slack.calls("chat.postMessage", channel=channel)) == 1
    assert [c for c in slack.calls("response_url") if c.params.get("_hook") == channel] == []
    audit = await slack.audit(channel)
    assert [(r["command"], r["event"]) for r in audit] == [("jobs", "request")]


async def test_rate_limited_messages_arrive_after_retry_after(module_slack: SlackScenario) -> None:
    slack, channel = module_slack, new_channel()
    slack.standin.rate_limit(2, retry_after=1, method="chat.postMessage")
    await ack(slack, "jobs", user="U0OPS", channel=channel)
    await slack.wait_calls("chat.postMessage", channel=channel, timeout=20)

    calls = slack.calls("chat.postMessage", channel=channel)
    assert [c.status for c in calls] == [429, 429, 200]
    assert len({call_text(c) for c in calls}) == 1  # the same message, sent again until it went
    audit = await slack.audit(channel)
    assert [(r["command"], r["event"], r["outcome"]) for r in audit] == [("jobs", "request", "succeeded")]


async def test_nothing_is_lost_when_several_answers_meet_a_rate_limit(module_slack: SlackScenario) -> None:
    slack, channels = module_slack, [new_channel() for _ in range(3)]
    slack.standin.rate_limit(3, retry_after=1, method="chat.postMessage")
    await asyncio.gather(*(ack(slack, "jobs", user="U0OPS", channel=c) for c in channels))
    for channel in channels:
        await slack.wait_calls("chat.postMessage", channel=channel, timeout=20)

    statuses = [c.status for channel in channels for c in slack.calls("chat.postMessage", channel=channel)]
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    for channel in channels:
        assert [c.status for c in slack.calls("chat.postMessage", channel=channel)][-1] == 200


# --- the configured locale -------------------------------------------------------------------


async def test_usage_is_japanese_with_the_ja_locale(bot_world: BotWorld, standin: SlackApiStandIn) -> None:
    async with slack_scenario(bot_world, standin, GARDENBOT_LOCALE="ja") as slack:
        channel = new_channel()
        await ack(slack, "frobnicate", user="U0OPS", channel=channel)
        [refusal] = await slack.wait_calls("chat.postEphemeral", channel=channel)

    shown = call_text(refusal)
    assert Translator("ja")("usage.unknown_command", word="frobnicate") in shown
    assert JAPANESE.search(str(refusal.params["text"]))
    assert Translator("en")("usage.unknown_command", word="frobnicate") not in shown
