"""`gardenbot serve` over real HTTP: signed slash commands in, Web API calls out.

Each test speaks in a channel of its own, so the answers of one test are told apart from the
others' on the module's server. The Web API is the local stand-in (tests/support/slack_api.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.i18n import Translator
from store.audit import AuditRecord, record_as_json
from tests.support.serve import (
    BotServer,
    PrivatePostgres,
    PrivatePostgresUnavailable,
    call_text,
    new_channel,
    new_trigger_id,
    private_postgres,
    serving,
    signed_headers,
    slash_body,
)
from tests.support.slack_api import SlackCall

MAX_BLOCKS = 50
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
FROZEN_COMMANDS = 20
FROZEN_ACK_TIMEOUT_S = 3.0
FROZEN_ANSWER_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotServer]:
    with serving(tmp_path_factory.mktemp("serve-e2e")) as running:
        yield running


def assert_renderable(call: SlackCall) -> list[dict[str, Any]]:
    """What Slack itself insists on: a fallback text, and at most 50 blocks."""
    assert str(call.params.get("text", "")).strip(), f"{call.method} without fallback text"
    blocks: list[dict[str, Any]] = call.json_param("blocks") or []
    assert 0 < len(blocks) <= MAX_BLOCKS
    return blocks


async def ack(server: BotServer, text: str, *, user: str, channel: str) -> None:
    response = await server.slash(text, user=user, channel=channel)
    assert response.status_code == 200, response.text
    assert response.text == ""  # the ack says nothing; the answer comes through the Web API


# --- answers in the channel, refusals to the asker -------------------------------------------


async def test_health_and_jobs_are_answered_in_the_channel(server: BotServer) -> None:
    channel = new_channel()
    await ack(server, "health", user="U0INTERN", channel=channel)
    [health] = await server.wait_calls("chat.postMessage", channel=channel)
    await ack(server, "jobs", user="U0OPS", channel=channel)
    _, jobs = await server.wait_calls("chat.postMessage", channel=channel, count=2)

    health_blocks = assert_renderable(health)
    assert health_blocks[0]["type"] == "header"
    shown = call_text(health)
    for check in ("database", "disk", "memory"):  # the target checks, one row each
        assert check in shown.lower()
    assert_renderable(jobs)
    assert server.calls("chat.postEphemeral", channel=channel) == []
    audit = await server.audit(channel)
    assert [(r["command"], r["event"], r["actor"]) for r in audit] == [
        ("health", "request", "U0INTERN"),
        ("jobs", "request", "U0OPS"),
    ]


async def test_help_is_shown_to_the_asker_only(server: BotServer) -> None:
    # Help lists what this asker may run, so it goes to them alone (chat.postEphemeral).
    channel = new_channel()
    await ack(server, "help", user="U0INTERN", channel=channel)
    [answer] = await server.wait_calls("chat.postEphemeral", channel=channel)

    assert answer.params["user"] == "U0INTERN"
    assert_renderable(answer)
    shown = call_text(answer)
    assert "/garden health" in shown
    assert "cache flush" not in shown  # a viewer is not shown what they may not run
    assert server.calls("chat.postMessage", channel=channel) == []


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
    server: BotServer, user: str, text: str, says: str
) -> None:
    channel = new_channel()
    await ack(server, text, user=user, channel=channel)
    [refusal] = await server.wait_calls("chat.postEphemeral", channel=channel)

    assert refusal.params["user"] == user
    assert_renderable(refusal)
    assert says in call_text(refusal)
    assert server.calls("chat.postMessage", channel=channel) == []
    assert server.calls("chat.update", channel=channel) == []
    audit = await server.audit(channel)
    assert [(r["event"], r["outcome"], r["actor"]) for r in audit] == [("request", "refused", user)]
    assert await server.query("SELECT id FROM approvals WHERE channel = %s", (channel,)) == []
    assert await server.query("SELECT id FROM jobs WHERE channel = %s", (channel,)) == []


async def test_usage_for_an_unknown_sub_command_names_help(server: BotServer) -> None:
    channel = new_channel()
    await ack(server, "restart everything", user="U0OPS", channel=channel)
    [refusal] = await server.wait_calls("chat.postEphemeral", channel=channel)

    assert "`/garden help`" in call_text(refusal)


# --- retries and rate limits -----------------------------------------------------------------


async def test_a_redelivered_slash_command_runs_once(server: BotServer) -> None:
    channel = new_channel()
    body = slash_body(
        "jobs",
        user="U0OPS",
        channel=channel,
        trigger_id=new_trigger_id(),
        response_url=server.standin.response_url(channel),
    )
    first = await server.post(body, signed_headers(body))
    # Slack's retry: the very same body, signed again, marked as a retry; sent before the answer came.
    retry_headers = {**signed_headers(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    retry = await server.post(body, retry_headers)
    assert (first.status_code, retry.status_code) == (200, 200)
    await server.wait_calls("chat.postMessage", channel=channel)
    # A later command, answered after the retry was taken off the queue and dropped.
    later = new_channel()
    await ack(server, "jobs", user="U0OPS", channel=later)
    await server.wait_calls("chat.postMessage", channel=later)

    assert len(server.calls("chat.postMessage", channel=channel)) == 1
    assert [c for c in server.calls("response_url") if c.params.get("_hook") == channel] == []
    audit = await server.audit(channel)
    assert [(r["command"], r["event"]) for r in audit] == [("jobs", "request")]


async def test_rate_limited_messages_arrive_after_retry_after(server: BotServer) -> None:
    channel = new_channel()
    server.standin.rate_limit(2, retry_after=1, method="chat.postMessage")
    await ack(server, "jobs", user="U0OPS", channel=channel)
    await server.wait_calls("chat.postMessage", channel=channel, timeout=20)

    calls = server.calls("chat.postMessage", channel=channel)
    assert [c.status for c in calls] == [429, 429, 200]
    assert len({call_text(c) for c in calls}) == 1  # the same message, sent again until it went
    audit = await server.audit(channel)
    assert [(r["command"], r["event"], r["outcome"]) for r in audit] == [("jobs", "request", "succeeded")]


async def test_nothing_is_lost_when_several_answers_meet_a_rate_limit(server: BotServer) -> None:
    channels = [new_channel() for _ in range(3)]
    server.standin.rate_limit(3, retry_after=1, method="chat.postMessage")
    await asyncio.gather(*(ack(server, "jobs", user="U0OPS", channel=c) for c in channels))
    for channel in channels:
        await server.wait_calls("chat.postMessage", channel=channel, timeout=20)

    statuses = [c.status for channel in channels for c in server.calls("chat.postMessage", channel=channel)]
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    for channel in channels:
        assert [c.status for c in server.calls("chat.postMessage", channel=channel)][-1] == 200


# --- acks while the bot's PostgreSQL is frozen -----------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own: the shared one on 5432 must never be stopped."""
    try:
        with private_postgres() as pg:
            yield pg
    except PrivatePostgresUnavailable as exc:
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")


async def test_acks_stay_fast_and_store_reading_commands_answer_in_5_s_with_a_spool_while_postgres_is_frozen(
    tmp_path_factory: pytest.TempPathFactory, private_pg: PrivatePostgres
) -> None:
    with serving(tmp_path_factory.mktemp("serve-frozen"), database_url=private_pg.url) as server:
        await _acks_while_frozen(server, private_pg)


def spool_lines(server: BotServer, count: int) -> list[str]:
    """Audit lines waiting in the running bot's spool, as a store outage leaves them; their record ids."""
    spool = server.log_path.parent / "state" / "audit-spool.jsonl"
    records = [
        AuditRecord.new(
            correlation_id=f"spooled-{n}",
            source="slack",
            actor="U0OPS",
            command="help",
            event="request",
            outcome="succeeded",
        )
        for n in range(count)
    ]
    spool.parent.mkdir(parents=True, exist_ok=True)
    with spool.open("a", encoding="utf-8") as out:
        for rec in records:
            out.write(json.dumps(record_as_json(rec)) + "\n")
    spool.chmod(0o600)
    return [str(rec.record_id) for rec in records]


async def answered_within(server: BotServer, text: str, seconds: float) -> str:
    """Send `/garden TEXT` in a channel of its own; the answer (or refusal) must come within `seconds`."""
    channel = new_channel()
    started = time.perf_counter()
    await ack(server, text, user="U0OPS", channel=channel)

    def answer() -> list[SlackCall]:
        calls = server.calls("chat.postMessage", channel=channel) + server.calls(
            "chat.postEphemeral", channel=channel
        )
        return [c for c in calls if c.status == 200]

    [reply, *_] = await server.wait_for(answer, timeout=seconds, what=f"the answer to {text!r}")
    print(f"\n{text!r} answered in {(time.perf_counter() - started) * 1000:.0f} ms with the store frozen")
    return call_text(reply)


async def _acks_while_frozen(server: BotServer, pg: PrivatePostgres) -> None:
    warm = new_channel()
    await ack(server, "jobs", user="U0OPS", channel=warm)  # the pool holds live connections now
    await server.wait_calls("chat.postMessage", channel=warm)
    waiting = spool_lines(server, 2)  # lines an earlier outage left in the spool

    channel = new_channel()
    stopped = pg.freeze()
    assert len(stopped) > 1  # the postmaster and its backends
    latencies: list[float] = []
    try:
        # Store-reading commands with lines in the spool: each answers, or refuses clearly, in 5 s.
        for text in ("help", "health", "jobs", "backup list"):
            shown = await answered_within(server, text, FROZEN_ANSWER_S)
            if text in ("jobs", "backup list"):
                assert "store is unreachable" in shown or "No " in shown or "#" in shown, shown
        for i in range(FROZEN_COMMANDS):
            started = time.perf_counter()
            # A timeout here (httpx.TimeoutException) is the failure this test exists to catch.
            response = await server.slash(
                "help" if i % 2 else "health",
                user="U0OPS",
                channel=channel,
                timeout=FROZEN_ACK_TIMEOUT_S,
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        print(
            f"\nack latency with the store frozen: max {max(latencies) * 1000:.1f} ms over {len(latencies)}"
        )
        assert (await server.get("/healthz", timeout=FROZEN_ACK_TIMEOUT_S)).status_code == 200
        # Not ready, and it says which: a hanging store is a store that is down.
        readyz = await server.get("/readyz", timeout=10)
        assert readyz.status_code == 503
        assert (readyz.json()["store"], readyz.json()["redis"]) == ("unreachable", "ok")

        # Still frozen, every one of the twenty is answered (help to the asker, health in the channel).
        def answered() -> bool:
            posted = server.calls("chat.postMessage", channel=channel)
            ephemeral = server.calls("chat.postEphemeral", channel=channel)
            return len(posted) + len(ephemeral) >= FROZEN_COMMANDS

        await server.wait_for(answered, timeout=60, what="the twenty answers while the store is frozen")
        assert pg.frozen is not None
    finally:
        pg.thaw()
    assert len(server.calls("chat.postMessage", channel=channel)) == FROZEN_COMMANDS // 2
    assert len(server.calls("chat.postEphemeral", channel=channel)) == FROZEN_COMMANDS // 2
    await _spool_drains_once(server, waiting)


async def _spool_drains_once(server: BotServer, waiting: list[str]) -> None:
    """Store back: the next commands write the spool into the log, every line exactly once."""
    spool = server.log_path.parent / "state" / "audit-spool.jsonl"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while spool.exists() and spool.stat().st_size > 0:
        assert loop.time() < deadline, f"the spool never drained:\n{server.log_tail()}"
        await ack(server, "help", user="U0OPS", channel=new_channel())
        await asyncio.sleep(1.0)
    rows = await server.query("SELECT record_id::text AS r FROM audit_log")
    stored = [str(row["r"]) for row in rows]
    assert len(stored) == len(set(stored))  # nothing written twice
    assert set(waiting) <= set(stored)
    frozen = await server.query(
        "SELECT count(*) AS n FROM audit_log WHERE command IN ('health', 'help', 'jobs')"
    )
    assert int(frozen[0]["n"]) >= 4 + FROZEN_COMMANDS  # what was asked while frozen is in the log too


# --- the configured locale -------------------------------------------------------------------


async def test_usage_is_japanese_with_the_ja_locale(tmp_path_factory: pytest.TempPathFactory) -> None:
    with serving(tmp_path_factory.mktemp("serve-ja"), extra_env={"GARDENBOT_LOCALE": "ja"}) as server:
        channel = new_channel()
        await ack(server, "frobnicate", user="U0OPS", channel=channel)
        [refusal] = await server.wait_calls("chat.postEphemeral", channel=channel)

    shown = call_text(refusal)
    assert Translator("ja")("usage.unknown_command", word="frobnicate") in shown
    assert JAPANESE.search(str(refusal.params["text"]))
    assert Translator("en")("usage.unknown_command", word="frobnicate") not in shown
