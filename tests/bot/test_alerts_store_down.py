"""Alertmanager notifications that arrive while the bot's store is down (stopped) or frozen: the
alert is in Slack anyway, and once the store is back the notification is stored, the group has one
message (the one posted meanwhile, or its own, the copy deleted), and nothing is posted twice.

The app `serve` runs in-process over a PostgreSQL of the test's own (tests/support/serve.py), which
the test really stops or freezes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.bot import test_alerts_webhook
from tests.bot.test_alerts_webhook import (
    ALERTS,
    AUTH,
    PATH,
    click,
    ephemerals,
    payload,
    posted,
    posts,
    running,
    threads,
    updates,
    wait_until,
)
from tests.support.runtime import BotWorld
from tests.support.serve import PrivatePostgres
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.slack_driver import call_text

world = test_alerts_webhook.world  # the fixture: the world of `serve` (tests/conftest.py has `standin`)
STORED_AGAIN_S = 30.0  # the store's own restart, then the desk's next reconcile round


def stored_with_ts(world: BotWorld) -> list[tuple[Any, ...]]:
    rows = threads(world)
    return rows if rows and rows[0][4] else []


def deletes(standin: SlackApiStandIn) -> list[SlackCall]:
    return standin.calls_to("chat.delete")


async def test_a_new_group_while_the_store_is_stopped_is_posted_then_stored_with_that_message(
    world: BotWorld, standin: SlackApiStandIn, private_pg: PrivatePostgres
) -> None:
    world.database_url = private_pg.url
    async with running(world) as app:
        private_pg.stop()
        answer = await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [first] = await wait_until(lambda: posts(standin), what="the alert posted with the store down")
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)  # a repeat
        [repeat] = await wait_until(lambda: updates(standin), what="the repeat shown")
        shown_down, repeat_down = call_text(first), call_text(repeat)

        private_pg.start()
        [(thread_id, _, status, channel, ts, notifications)] = await wait_until(
            lambda: stored_with_ts(world), timeout=STORED_AGAIN_S, what="the notification stored"
        )
        [*_, settled] = await wait_until(
            lambda: len(updates(standin)) >= 2 and updates(standin), what="the message with its id"
        )
        await click(app, standin, "alert_ack", str(thread_id), "U0OPS", ts)
        await wait_until(lambda: ephemerals(standin, "U0OPS"), what="the acknowledgement")

    assert answer.status_code == 200
    assert "FIRING" in shown_down and "Not stored yet" in shown_down
    assert '"alert_ack"' not in shown_down  # no id to acknowledge until the store is back
    assert "2 notifications" in repeat_down
    assert (status, channel, ts, notifications) == ("firing", ALERTS, repeat.params["ts"], 2)
    assert settled.params["ts"] == ts
    assert f"Alert group {thread_id}" in call_text(settled) and '"alert_ack"' in call_text(settled)
    assert len(posts(standin)) == 1 and deletes(standin) == []  # one message, never posted twice
    assert world.query("SELECT acked_by FROM alert_threads") == [("U0OPS",)]


async def test_a_group_resolved_while_the_store_is_frozen_updates_its_message_then_is_stored(
    world: BotWorld, standin: SlackApiStandIn, private_pg: PrivatePostgres
) -> None:
    world.database_url = private_pg.url
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(_, _, _, _, ts, _)] = await posted(world)
        private_pg.freeze()
        try:
            answer = await app.post(PATH, content=payload("GardenDiskSpaceLow-resolved"), headers=AUTH)
            [during] = await wait_until(lambda: updates(standin), what="the resolution shown, store frozen")
        finally:
            private_pg.thaw()
        await wait_until(
            lambda: threads(world)[0][2] == "resolved", timeout=STORED_AGAIN_S, what="the resolution stored"
        )

    assert answer.status_code == 200
    assert during.params["ts"] == ts and "RESOLVED" in call_text(during)
    [(_, _, status, channel, stored_ts, notifications)] = threads(world)
    assert (status, channel, stored_ts, notifications) == ("resolved", ALERTS, ts, 2)
    assert len(posts(standin)) == 1 and deletes(standin) == []
    assert all(u.params["ts"] == ts for u in updates(standin))
    assert "RESOLVED" in call_text(updates(standin)[-1])


async def test_a_replica_that_did_not_know_the_groups_message_deletes_its_copy_when_the_store_is_back(
    world: BotWorld, standin: SlackApiStandIn, private_pg: PrivatePostgres
) -> None:
    world.database_url = private_pg.url
    resolved = json.loads(payload("GardenDiskSpaceLow-resolved"))
    async with running(world) as first, running(world) as second:
        await first.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        [(thread_id, _, _, _, ts, _)] = await posted(world)
        private_pg.stop()
        await second.post(PATH, content=json.dumps(resolved).encode(), headers=AUTH)
        [_, copy] = await wait_until(lambda: len(posts(standin)) == 2 and posts(standin), what="the copy")
        private_pg.start()
        [deleted] = await wait_until(
            lambda: deletes(standin), timeout=STORED_AGAIN_S, what="the copy deleted"
        )
        [*_, last] = await wait_until(lambda: updates(standin), what="the group's message updated")

    assert "RESOLVED" in call_text(copy) and "Not stored yet" in call_text(copy)
    assert deleted.params["channel"] == ALERTS and deleted.params["ts"] != ts
    assert standin.message(ALERTS, str(deleted.params["ts"])) is None  # the copy is gone
    kept = standin.message(ALERTS, ts)
    assert kept is not None and "RESOLVED" in json.dumps(kept, ensure_ascii=False)
    assert last.params["ts"] == ts and "RESOLVED" in call_text(last)
    assert f"Alert group {thread_id}" in call_text(last)
    [(_, _, status, _, stored_ts, notifications)] = threads(world)
    assert (status, stored_ts, notifications) == ("resolved", ts, 2)


PACER_GIVES_UP_S = 1 + 2 + 4 + 8 + 5  # its retries' back-off (5 attempts), and some margin


async def test_a_stored_group_whose_first_post_meets_the_store_down_is_posted_once_when_it_returns(
    world: BotWorld, standin: SlackApiStandIn, private_pg: PrivatePostgres
) -> None:
    """The group is stored, its first post draws 429s, and the store stops meanwhile for longer
    than the pacer's retries would last: the post is not given up, and happens once."""
    world.database_url = private_pg.url
    standin.rate_limit(2, retry_after=2, method="chat.postMessage")
    async with running(world) as app:
        await app.post(PATH, content=payload("GardenPostgresDown-firing"), headers=AUTH)
        await wait_until(lambda: standin.calls_to("chat.postMessage"), what="the first try (429)")
        private_pg.stop()
        await asyncio.sleep(PACER_GIVES_UP_S)
        private_pg.start()
        [(thread_id, *_, ts, _)] = await wait_until(
            lambda: stored_with_ts(world), timeout=STORED_AGAIN_S + 30, what="the message posted and stored"
        )
        [*_, last] = await wait_until(
            lambda: [c for c in standin.calls if c.status == 200 and c.method.startswith("chat.")],
            what="the message shown",
        )

    [post] = [c for c in posts(standin) if c.status == 200]
    assert f"Alert group {thread_id}" in call_text(last) and '"alert_ack"' in call_text(last)
    assert "GardenPostgresDown" in call_text(post)
    assert standin.message(ALERTS, ts) is not None and deletes(standin) == []
