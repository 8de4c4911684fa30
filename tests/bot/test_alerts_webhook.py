"""`POST /alerts/alertmanager` in-process: the app `serve` runs (create_app, lifespan and all) on a
throwaway store, its Slack Web API calls going to the local stand-in. Alertmanager's payloads are
the ones captured from a real Alertmanager (tests/fixtures/alertmanager/).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.alert_message import declare_value
from commands.base import parse_args, split_words
from commands.registry import build_registry
from core.alerts import parse_alert_group
from tests.support.asgi import served_app
from tests.support.runtime import BotWorld
from tests.support.serve import SIGNING_SECRET
from tests.support.signing import block_action_body, signed_headers
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.slack_driver import call_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"
TOKEN = "alert-token-for-tests"
ALERTS = "C0ALERTS"
PATH = "/alerts/alertmanager"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DISK_KEY = '{}:{alertname="GardenDiskSpaceLow", service="node", severity="warning"}'
T = TypeVar("T")


def payload(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def with_fields(name: str, **changes: Any) -> bytes:
    data = json.loads(payload(name))
    data.update(changes)
    return json.dumps(data).encode()


async def wait_until(check: Callable[[], T], *, timeout: float = 15.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


@pytest.fixture
def world(bot_world: BotWorld, standin: SlackApiStandIn) -> BotWorld:
    bot_world.extra_env.update(
        {
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": standin.url,
            "GARDENBOT_ALERT_TOKEN": TOKEN,
        }
    )
    return bot_world


def running(world: BotWorld) -> Any:
    """One replica of `serve`, lifespan run, over this world's store."""
    return served_app(world.settings())


def posts(standin: SlackApiStandIn) -> list[SlackCall]:
    return [c for c in standin.calls_to("chat.postMessage") if c.params.get("channel") == ALERTS]


def updates(standin: SlackApiStandIn) -> list[SlackCall]:
    return [c for c in standin.calls_to("chat.update") if c.params.get("channel") == ALERTS]


def threads(world: BotWorld) -> list[tuple[Any, ...]]:
    return world.query(
        "SELECT id, group_key, status, channel, ts, notifications FROM alert_threads ORDER BY id"
    )


# --- what is refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_a_notification_without_the_bearer_token_is_refused_401_and_nothing_is_kept(
    world: BotWorld, standin: SlackApiStandIn, headers: dict[str, str]
) -> None:
    async with running(world) as app:
        response = await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert threads(world) == []
    assert posts(standin) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"version": "4", "groupKey": ', "not JSON"),
        (b"[1, 2]", "JSON list"),
        (with_fields("GardenDiskSpaceLow-firing", version="3"), "version '3'"),
        (with_fields("GardenDiskSpaceLow-firing", groupKey=""), "no groupKey"),
        (with_fields("GardenDiskSpaceLow-firing", status="exploded"), "status"),
    ],
    ids=["truncated", "list", "version-3", "no-group-key", "bad-status"],
)
async def test_a_malformed_payload_is_refused_400_saying_what_is_wrong(
    world: BotWorld, standin: SlackApiStandIn, body: bytes, says: str
) -> None:
    async with running(world) as app:
        response = await app.post(PATH, content=body, headers=AUTH)

    assert response.status_code == 400
    assert says in response.text
    assert threads(world) == []


async def test_a_body_over_1_mb_is_refused_413(world: BotWorld, standin: SlackApiStandIn) -> None:
    data = json.loads(payload("GardenDiskSpaceLow-firing"))
    data["commonAnnotations"]["description"] = "x" * 1_000_001
    async with running(world) as app:
        response = await app.post(PATH, content=json.dumps(data).encode(), headers=AUTH)

    assert response.status_code == 413
    assert threads(world) == []


async def test_unknown_fields_are_tolerated(world: BotWorld, standin: SlackApiStandIn) -> None:
    body = with_fields("GardenDiskSpaceLow-firing", futureField={"nested": [1]}, anotherOne="x")
    async with running(world) as app:
        response = await app.post(PATH, content=body, headers=AUTH)
        await wait_until(lambda: posts(standin), what="the alert message")

    assert response.status_code == 200


# --- one message per group ----------------------------------------------------------------------


async def test_a_firing_group_is_one_message_in_the_alerts_channel_with_what_matters(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        response = await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [post] = await wait_until(lambda: posts(standin), what="the alert message")

    assert response.status_code == 200
    shown = call_text(post)
    for expected in (
        "FIRING",
        "warning",
        "GardenDiskSpaceLow",
        "2 of 3 firing",  # one alert cut off by max_alerts still counts
        "Disk / on app1.garden.internal:9100 is 91 % full",  # summary
        "Less than 15 %",  # description
        "service=node",  # a label that matters
        "instance=db1.garden.internal:9100",  # what tells the alerts apart
        "2026-11-29 07:00 JST",  # started, in the configured zone
        "http://prometheus.garden.internal:9090/graph",  # generator link
        "/#/silences/new?filter=",  # silence link
        "Acknowledge",
        "Run health check",
    ):
        assert expected in shown, expected
    [(thread_id, key, status, channel, ts, count)] = threads(world)
    assert (key, status, channel, count) == (DISK_KEY, "firing", ALERTS, 1)
    assert ts is not None
    assert f'"value": "{thread_id}"' in shown  # the Acknowledge button names the thread


async def test_the_receipt_is_audited_as_the_webhook(world: BotWorld, standin: SlackApiStandIn) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        rows = await wait_until(
            lambda: world.query(
                "SELECT actor, source, command, event, outcome, detail->>'group_key' FROM audit_log"
                " WHERE event = 'alert_received'"
            ),
            what="the audit record",
        )

    assert rows == [("webhook", "webhook", "alert", "alert_received", "firing", DISK_KEY)]


async def test_a_repeat_updates_the_same_message(world: BotWorld, standin: SlackApiStandIn) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        await wait_until(lambda: posts(standin), what="the first message")
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [update] = await wait_until(lambda: updates(standin), what="the update")

    assert len(posts(standin)) == 1
    assert update.params["ts"] == threads(world)[0][4]
    assert "2 notifications" in call_text(update)


async def test_resolution_updates_the_message_to_resolved_with_how_long_it_lasted(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        await wait_until(lambda: posts(standin), what="the first message")
        await app.post(PATH, content=payload("GardenDiskSpaceLow-resolved"), headers=AUTH)
        [update] = await wait_until(lambda: updates(standin), what="the update")

    shown = call_text(update)
    assert "RESOLVED" in shown and "FIRING" not in shown
    assert "1 h 43 min" in shown  # 22:00:00 to 23:43:08
    assert "Acknowledge" not in shown  # nothing left to acknowledge
    assert len(posts(standin)) == 1
    assert threads(world)[0][2] == "resolved"


async def test_two_groups_are_two_messages(world: BotWorld, standin: SlackApiStandIn) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        await app.post(PATH, content=payload("GardenPostgresDown-firing"), headers=AUTH)
        found = await wait_until(lambda: len(posts(standin)) == 2 and posts(standin), what="two messages")

    assert {"GardenDiskSpaceLow" in call_text(p) for p in found} == {True, False}
    assert len(threads(world)) == 2


async def test_replicas_on_one_store_share_the_thread_and_it_survives_a_restart(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as first, running(world) as second:
        await first.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        await wait_until(lambda: posts(standin), what="the first message")
        await second.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        await wait_until(lambda: updates(standin), what="the other replica's update")
    async with running(world) as restarted:
        await restarted.post(PATH, content=payload("GardenDiskSpaceLow-resolved"), headers=AUTH)
        await wait_until(lambda: len(updates(standin)) == 2, what="the update after the restart")

    assert len(posts(standin)) == 1
    ts = threads(world)[0][4]
    assert [u.params["ts"] for u in updates(standin)] == [ts, ts]
    assert "RESOLVED" in call_text(updates(standin)[-1])


async def test_replicas_receiving_a_new_group_at_once_post_one_message(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as first, running(world) as second:
        for app in (first, second):
            await app.post(PATH, content=payload("GardenPostgresDown-firing"), headers=AUTH)
        await wait_until(
            lambda: posts(standin) and len(posts(standin)) + len(updates(standin)) >= 2, what="sends"
        )

    assert len(posts(standin)) == 1
    assert threads(world)[0][5] == 2


# --- the buttons ----------------------------------------------------------------------------------


async def click(app: Any, standin: SlackApiStandIn, action_id: str, value: str, user: str, ts: str) -> None:
    body = block_action_body(
        action_id, value, user=user, channel=ALERTS, message_ts=ts, response_url=standin.response_url("act")
    )
    ack = await app.post("/slack/events", content=body, headers=signed_headers(body))
    assert ack.status_code == 200


async def posted(world: BotWorld) -> list[tuple[Any, ...]]:
    """The threads once the first one's message is posted and its ts stored."""

    def with_ts() -> list[tuple[Any, ...]]:
        rows = threads(world)
        return rows if rows and rows[0][4] else []

    return await wait_until(with_ts, what="the message ts")


def ephemerals(standin: SlackApiStandIn, user: str) -> list[SlackCall]:
    return [c for c in standin.calls_to("chat.postEphemeral") if c.params.get("user") == user]


async def test_acknowledge_records_who_and_when_updates_the_message_and_is_audited(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(thread_id, *_, ts, _)] = await posted(world)
        await click(app, standin, "alert_ack", str(thread_id), "U0OPS", ts)
        [update] = await wait_until(lambda: updates(standin), what="the acknowledged message")
        [told] = await wait_until(lambda: ephemerals(standin, "U0OPS"), what="the clicker's answer")
        await click(app, standin, "alert_ack", str(thread_id), "U0LEAD", ts)
        [refused] = await wait_until(lambda: ephemerals(standin, "U0LEAD"), what="the second click's answer")

    shown = call_text(update)
    assert update.params["ts"] == ts
    assert "Acknowledged" in shown and "<@U0OPS>" in shown
    assert '"alert_ack"' not in shown  # the button is gone once acknowledged
    assert "You acknowledged alert group" in call_text(told)
    assert "already acknowledged by U0OPS" in call_text(refused)
    [(acked_by, acked_at)] = world.query("SELECT acked_by, acked_at FROM alert_threads")
    assert acked_by == "U0OPS" and acked_at is not None
    audited = world.query(
        "SELECT actor, source, outcome FROM audit_log WHERE command = 'alert ack' ORDER BY id"
    )
    assert audited == [("U0OPS", "slack", "succeeded"), ("U0LEAD", "slack", "refused")]
    assert len(updates(standin)) == 1  # the refused click changed nothing


def firing_only(*fingerprints: str) -> bytes:
    """The disk group firing with only the alerts of these fingerprints."""
    data = json.loads(payload("GardenDiskSpaceLow-firing"))
    data["alerts"] = [a for a in data["alerts"] if a["fingerprint"] in fingerprints]
    return json.dumps(data).encode()


APP1, DB1 = "b92a4bedcbbf7f70", "b0bb9a96c439bad9"  # the disk group's two alerts


async def acknowledged(app: Any, world: BotWorld, standin: SlackApiStandIn, first: bytes) -> str:
    """Post `first`, acknowledge it as U0OPS; the message's ts once its update shows the ack."""
    await app.post(PATH, content=first, headers=AUTH)
    [(thread_id, *_, ts, _)] = await posted(world)
    await click(app, standin, "alert_ack", str(thread_id), "U0OPS", ts)
    await wait_until(lambda: updates(standin), what="the acknowledged message")
    return str(ts)


def acks(world: BotWorld) -> list[tuple[Any, ...]]:
    return world.query("SELECT acked_by FROM alert_threads")


@pytest.mark.parametrize(
    "again",
    ["resolved-then-firing", "a-new-alert-joins"],
)
async def test_a_group_that_fires_anew_after_its_acknowledgement_asks_for_one_again(
    world: BotWorld, standin: SlackApiStandIn, again: str
) -> None:
    async with running(world) as app:
        if again == "resolved-then-firing":
            ts = await acknowledged(app, world, standin, payload("GardenDiskSpaceLow-firing"))
            await app.post(PATH, content=payload("GardenDiskSpaceLow-resolved"), headers=AUTH)
            await wait_until(lambda: len(updates(standin)) == 2, what="the resolution")
            await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
            [*_, last] = await wait_until(
                lambda: len(updates(standin)) == 3 and updates(standin), what="refire"
            )
        else:
            ts = await acknowledged(app, world, standin, firing_only(APP1))
            await app.post(PATH, content=firing_only(APP1, DB1), headers=AUTH)
            [*_, last] = await wait_until(lambda: len(updates(standin)) == 2 and updates(standin), what="db1")

    shown = call_text(last)
    assert last.params["ts"] == ts and len(posts(standin)) == 1
    assert "FIRING" in shown
    assert "Acknowledged" not in shown and "U0OPS" not in shown  # the old acknowledgement is gone
    assert '"alert_ack"' in shown  # and the button is back
    assert acks(world) == [(None,)]


async def test_a_repeat_or_a_partial_resolution_keeps_the_acknowledgement(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        await acknowledged(app, world, standin, payload("GardenDiskSpaceLow-firing"))
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)  # repeat
        await wait_until(lambda: len(updates(standin)) == 2, what="the repeat")
        data = json.loads(payload("GardenDiskSpaceLow-firing"))
        data["alerts"][1]["status"] = "resolved"  # db1 recovers, app1 still fires
        await app.post(PATH, content=json.dumps(data).encode(), headers=AUTH)
        [*_, last] = await wait_until(lambda: len(updates(standin)) == 3 and updates(standin), what="db1 ok")

    shown = call_text(last)
    assert "Acknowledged" in shown and "<@U0OPS>" in shown
    assert '"alert_ack"' not in shown
    assert acks(world) == [("U0OPS",)]


async def test_a_viewer_cannot_acknowledge(world: BotWorld, standin: SlackApiStandIn) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(thread_id, *_, ts, _)] = await posted(world)
        await click(app, standin, "alert_ack", str(thread_id), "U0INTERN", ts)
        await wait_until(lambda: ephemerals(standin, "U0INTERN"), what="the refusal")

    assert world.query("SELECT acked_by FROM alert_threads") == [(None,)]
    assert updates(standin) == []


async def test_run_health_check_answers_in_the_alert_thread_and_leaves_the_alert_as_it_is(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(*_, ts, _)] = await posted(world)
        await click(app, standin, "run_health", "", "U0INTERN", ts)
        replies = await wait_until(
            lambda: [p for p in posts(standin) if p.params.get("thread_ts") == ts], what="the health answer"
        )

    assert "Garden DX health" in call_text(replies[0])
    assert updates(standin) == []  # the alert message itself is untouched


async def test_declare_incident_from_an_alert_opens_one_prefilled_from_the_alert(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(*_, ts, _)] = await posted(world)
        [alert_post] = [p for p in posts(standin) if p.params.get("channel") == "C0ALERTS"]
        [declare] = [
            b
            for block in alert_post.json_param("blocks") or []
            for b in block.get("elements", [])
            if b.get("action_id") == "declare_incident"
        ]
        await click(app, standin, "declare_incident", str(declare["value"]), "U0OPS", ts)
        rows = await wait_until(
            lambda: world.query("SELECT severity, title, declared_by FROM incidents"), what="the incident"
        )

    [(severity, title, declared_by)] = rows
    assert declare["confirm"]  # a click that pages people asks first
    assert (severity, declared_by) == ("P3", "U0OPS")  # a warning alert: a minor fault
    assert title and title in str(declare["value"])


@pytest.mark.parametrize(
    "summary",
    [
        "disk full\u201d --severity P1 \u201cx",
        'disk full" --severity P1 "x',
        "--severity P1",
        "disk full' --impact 'everything",
        '\\" --severity P1 \\"',
    ],
)
def test_alert_text_can_never_change_the_declared_severity_or_add_options(summary: str) -> None:
    group = parse_alert_group(
        with_fields("GardenDiskSpaceLow-firing", commonAnnotations={"summary": summary})
    )
    registry = build_registry()
    command, rest = registry.find(split_words("incident declare " + declare_value(group)))
    args = parse_args(command.args, rest, usage=command.usage)

    assert args.model_dump()["severity"] == "P3"  # a warning alert, whatever its text says
    assert args.model_dump().get("impact") in (None, "")
