"""`gardenbot serve` over real HTTP: the few end-to-end tests of the Slack path.

Most Slack behaviour is tested in-process (test_slack_commands.py, test_slack_approvals.py,
test_slack_fixtures.py, test_slack_workspace.py). Here the real server, started once for the
session (`bot_server`), proves what needs HTTP: a signed slash command in and its answer out, one
approval click round trip, signatures checked at the door, bodies over 1 MB refused with 413, and
acks that stay fast while the bot's PostgreSQL is frozen. Each test speaks in a channel of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from store.audit import AuditRecord, record_as_json
from tests.support.runtime import TARGET_KEYS, target_cache_holding
from tests.support.serve import SERVE_REDIS_DB, BotServer, PrivatePostgres, serving
from tests.support.signing import FORM, load_payload, new_channel, recorded_payload, signed_headers
from tests.support.slack_api import SlackCall
from tests.support.slack_approvals import approved_flush, buttons, jobs_of, says
from tests.support.slack_driver import call_text

FROZEN_COMMANDS = 20
FROZEN_ACK_TIMEOUT_S = 3.0
FROZEN_ANSWER_S = 5.0
ONE_MB = 1_000_000


@pytest.fixture
def serve_target_keys() -> Iterator[dict[str, str]]:
    """The served bot's target cache holding a few known keys; emptied again afterwards."""
    with target_cache_holding(TARGET_KEYS, SERVE_REDIS_DB) as keys:
        yield keys


async def ack(server: BotServer, text: str, *, user: str, channel: str) -> None:
    response = await server.slash(text, user=user, channel=channel)
    assert response.status == 200, response.text
    assert response.text == ""  # the ack says nothing; the answer comes through the Web API


# --- a command and an approval, over HTTP -------------------------------------------------------


async def test_a_slash_command_over_http_is_acked_empty_and_answered_in_the_channel(
    bot_server: BotServer,
) -> None:
    channel = new_channel()
    await ack(bot_server, "health", user="U0INTERN", channel=channel)
    [health] = await bot_server.wait_calls("chat.postMessage", channel=channel)

    assert "database" in call_text(health).lower()
    audit = await bot_server.audit(channel)
    assert [(r["command"], r["event"], r["actor"]) for r in audit] == [("health", "request", "U0INTERN")]


async def test_an_approve_click_over_http_runs_the_action_once_and_updates_the_message(
    bot_server: BotServer, serve_target_keys: dict[str, str]
) -> None:
    pending, updates = await approved_flush(bot_server, "U0LEAD")

    assert says(str(updates[0].params["text"]), "approved by", "U0LEAD")
    assert buttons(updates[-1]) == []
    assert f"{len(serve_target_keys)} keys removed" in call_text(updates[-1])
    assert bot_server.target_key_count() == 0
    [job] = await jobs_of(bot_server, pending)
    assert (job["status"], job["requested_by"], job["approved_by"]) == ("succeeded", "U0ADMIN", "U0LEAD")


# --- signatures at the door -----------------------------------------------------------------------


async def test_signatures_are_checked_over_http(bot_server: BotServer) -> None:
    resigned = load_payload("slash_command")
    stale = recorded_payload("slash_command")

    assert (await bot_server.post(stale.body, stale.headers)).status_code == 401
    # Re-signed now it passes the check: 404 is Bolt's "no listener for this" (it is not /garden).
    assert (await bot_server.post(resigned.body, resigned.headers)).status_code in (200, 404)
    assert (await bot_server.get("/healthz")).status_code == 200


# --- oversized ----------------------------------------------------------------------------------


async def test_a_body_over_one_megabyte_is_refused_with_413(bot_server: BotServer) -> None:
    body = b"payload=" + b"x" * (ONE_MB + 1)
    response = await bot_server.post(body, signed_headers(body))

    assert response.status_code == 413
    assert (await bot_server.get("/healthz")).status_code == 200


async def test_an_oversized_body_without_content_length_is_refused_with_413(bot_server: BotServer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"x" * 100_000

    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            bot_server.events_url, content=chunks(), headers=signed_headers(b"", content_type=FORM)
        )

    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413
    assert (await bot_server.get("/healthz")).status_code == 200
    await ack(bot_server, "jobs", user="U0OPS", channel=(channel := new_channel()))
    await bot_server.wait_calls("chat.postMessage", channel=channel)


# --- acks while the bot's PostgreSQL is frozen -----------------------------------------------


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
            assert response.status == 200, response.text
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
