"""bot/slack_pacing.py against the Slack Web API stand-in: pace per channel, 429 Retry-After
honoured, nothing lost, waiting updates of one alert group merged (latest wins), order per group
kept, at most one waiting item per group."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_pacing import SlackPacer, retry_after_of
from core.alerts import AlertGroup, parse_alert_group
from tests.support.alert_messages import GroupMessages, state_number
from tests.support.fixtures import FIXTURES
from tests.support.slack_api import SlackApiStandIn
from tests.support.slack_api_paced import PacedSlackApiStandIn

CHANNEL = "C0ALERTS"
BASE = json.loads((FIXTURES / "alertmanager" / "GardenDiskSpaceLow-firing.json").read_bytes())


def group(key: str, firing: int = 1) -> AlertGroup:
    data: dict[str, Any] = json.loads(json.dumps(BASE))
    data["groupKey"] = key
    data["alerts"] = [dict(data["alerts"][0], fingerprint=f"{key}-{i}") for i in range(firing)]
    data["truncatedAlerts"] = 0
    return parse_alert_group(json.dumps(data))


@pytest.fixture
async def standin() -> AsyncIterator[SlackApiStandIn]:
    with SlackApiStandIn() as running:
        yield running


@pytest.fixture
def messages(standin: SlackApiStandIn) -> GroupMessages:
    # the SDK's default retry handlers do not retry 429: the pacer sees it
    return GroupMessages(AsyncWebClient(token="xoxb-test", base_url=standin.url), CHANNEL)


def shown(standin: SlackApiStandIn, messages: GroupMessages) -> dict[str, int]:
    """The state number each group's message ends up showing in Slack."""
    result = {}
    for key, ts in messages.ts.items():
        message = standin.message(CHANNEL, ts)
        assert message is not None
        result[key] = state_number(message["text"])
    return result


def sent_states(messages: GroupMessages) -> dict[str, list[int]]:
    """Per group, the state numbers Slack accepted, in the order it accepted them."""
    per_key: dict[str, list[int]] = {}
    for key, number in messages.accepted:
        per_key.setdefault(key, []).append(number)
    return per_key


async def test_nothing_is_lost_through_429s_and_every_group_shows_its_latest_state(
    standin: SlackApiStandIn, messages: GroupMessages
) -> None:
    standin.rate_limit(3, retry_after=1)
    pacer = SlackPacer(per_second=20)
    keys = [f"group-{n}" for n in range(5)]
    for firing in range(1, 5):
        for key in keys:
            messages.submit(pacer, group(key, firing))
    await asyncio.wait_for(pacer.drain(), timeout=30)
    assert shown(standin, messages) == dict.fromkeys(keys, 4)
    assert len(standin.calls_to("chat.postMessage")) - pacer.stats.rate_limited <= len(keys)
    assert pacer.stats.rate_limited == 3
    assert [c.status for c in standin.calls].count(429) == 3
    assert (pacer.stats.failed, pacer.pending()) == (0, 0)


async def test_waiting_updates_of_a_group_merge_and_the_queue_holds_one_item_per_group(
    standin: SlackApiStandIn, messages: GroupMessages
) -> None:
    pacer = SlackPacer(per_second=5)
    keys = ["disk", "memory", "postgres"]
    for firing in range(1, 41):
        for key in keys:
            messages.submit(pacer, group(key, firing))
            assert pacer.pending(CHANNEL) <= len(keys)
    await asyncio.wait_for(pacer.drain(), timeout=30)
    assert shown(standin, messages) == dict.fromkeys(keys, 40)
    # the first state of the first group went out at once; every other wait merged
    assert pacer.stats.sent <= 2 * len(keys)
    assert pacer.stats.merged >= 40 * len(keys) - 2 * len(keys)


async def test_a_group_waiting_out_a_429_is_sent_in_its_newest_state_and_states_never_go_back(
    standin: SlackApiStandIn, messages: GroupMessages
) -> None:
    pacer = SlackPacer(per_second=50)
    messages.submit(pacer, group("disk", 1))
    await asyncio.wait_for(pacer.drain(), timeout=10)
    standin.rate_limit(2, retry_after=1)
    for firing in range(2, 12):
        messages.submit(pacer, group("disk", firing))
        messages.submit(pacer, group("memory", firing))
        await asyncio.sleep(0.05)  # states arrive while the 429s are waited out
    await asyncio.wait_for(pacer.drain(), timeout=30)
    assert shown(standin, messages) == {"disk": 11, "memory": 10}
    for key, states in sent_states(messages).items():
        assert states == sorted(states), key
        assert len(states) == len(set(states)), key


async def test_a_429s_retry_after_is_waited_before_the_next_send(
    standin: SlackApiStandIn, messages: GroupMessages
) -> None:
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    pacer = SlackPacer(per_second=50)

    async def send() -> None:
        starts.append(loop.time())
        await messages.client.chat_postMessage(channel=CHANNEL, text="hello #1")

    standin.rate_limit(1, retry_after=2)
    pacer.submit(CHANNEL, "only", send)
    await asyncio.wait_for(pacer.drain(), timeout=10)
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.95
    assert [c.status for c in standin.calls_to("chat.postMessage")] == [429, 200]


async def test_sends_to_one_channel_keep_its_pace_and_other_channels_do_not_wait(
    standin: SlackApiStandIn,
) -> None:
    loop = asyncio.get_running_loop()
    starts: dict[str, list[float]] = {"C0A": [], "C0B": []}
    pacer = SlackPacer(per_second=10)

    def sender(channel: str) -> Any:
        async def send() -> None:
            starts[channel].append(loop.time())

        return send

    for n in range(6):
        pacer.submit("C0A", f"a{n}", sender("C0A"))
    pacer.submit("C0B", "b0", sender("C0B"))
    await asyncio.wait_for(pacer.drain(), timeout=10)
    gaps = [later - earlier for earlier, later in zip(starts["C0A"], starts["C0A"][1:], strict=False)]
    assert len(gaps) == 5 and min(gaps) >= 0.095
    assert starts["C0B"][0] < starts["C0A"][1]


async def test_a_failing_send_is_retried_and_one_that_keeps_failing_is_given_up(
    standin: SlackApiStandIn, messages: GroupMessages
) -> None:
    pacer = SlackPacer(per_second=50, max_attempts=3, backoff_s=0.05)
    standin.fail(2, method="chat.postMessage")
    messages.submit(pacer, group("disk", 1))
    await asyncio.wait_for(pacer.drain(), timeout=10)
    assert shown(standin, messages) == {"disk": 1}
    assert (pacer.stats.retried, pacer.stats.sent) == (2, 1)
    standin.fail(5, method="chat.postMessage")
    messages.submit(pacer, group("memory", 1))
    await asyncio.wait_for(pacer.drain(), timeout=10)
    assert pacer.stats.failed == 1
    assert "memory" not in messages.ts


async def test_retry_after_is_read_from_slacks_429_answer(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=standin.url)
    standin.rate_limit(1, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert retry_after_of(caught.value) == 7.0
    standin.fail(1, error="channel_not_found")
    with pytest.raises(SlackApiError) as other:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert retry_after_of(other.value) is None
    assert retry_after_of(RuntimeError("boom")) is None


async def test_paced_sends_draw_no_429_from_a_slack_that_counts_on_arrival() -> None:
    """Spacing runs from the end of each call, so network jitter never brings two messages
    closer than the pace at Slack's end."""
    with PacedSlackApiStandIn(per_second=10) as strict:
        messages = GroupMessages(AsyncWebClient(token="xoxb-test", base_url=strict.url), CHANNEL)
        pacer = SlackPacer(per_second=10)
        for n in range(20):
            messages.submit(pacer, group(f"group-{n}"))
        await asyncio.wait_for(pacer.drain(), timeout=30)
        assert [c.status for c in strict.calls].count(429) == 0
        assert len(messages.ts) == 20


async def test_a_state_that_arrives_while_its_prepared_item_waits_is_prepared_again_and_sent_alone() -> None:
    """Preparation (reading the latest state) runs before the pace wait; a newer state of the key
    arriving during the wait is prepared again, so the one send shows it."""
    pacer = SlackPacer(per_second=2)
    prepared: list[str] = []
    sent: list[str] = []

    def prepare(key: str, state: int) -> Any:
        async def run() -> Any:
            prepared.append(f"{key}#{state}")

            async def send() -> None:
                sent.append(f"{key}#{state}")

            return send

        return run

    pacer.submit_prepared(CHANNEL, "a", prepare("a", 1))
    pacer.submit_prepared(CHANNEL, "b", prepare("b", 1))
    while "b#1" not in prepared:  # b is prepared while it waits for the channel's turn
        await asyncio.sleep(0.01)
    assert sent == ["a#1"]
    pacer.submit_prepared(CHANNEL, "b", prepare("b", 2))
    await asyncio.wait_for(pacer.drain(), timeout=10)
    assert prepared == ["a#1", "b#1", "b#2"]
    assert sent == ["a#1", "b#2"]
    assert pacer.stats.merged == 1


async def test_a_failing_preparation_is_retried_like_a_failing_send() -> None:
    pacer = SlackPacer(per_second=50, backoff_s=0.01)
    tries: list[int] = []
    sent: list[int] = []

    async def prepare() -> Any:
        tries.append(len(tries) + 1)
        if len(tries) < 3:
            raise ConnectionError("store down")

        async def send() -> None:
            sent.append(len(tries))

        return send

    pacer.submit_prepared(CHANNEL, "a", prepare)
    await asyncio.wait_for(pacer.drain(), timeout=10)
    assert sent == [3]
    assert (pacer.stats.retried, pacer.stats.failed, pacer.stats.sent) == (2, 0, 1)
