"""Slack's own recorded payloads (tests/fixtures/slack/payloads) and forged ones against `gardenbot serve`.

Re-signed with the current time every recorded payload is accepted (Bolt answers 404 for the kinds
the bot has no listener for, never 401 or 500); with its recorded, stale signature, a changed byte,
no signature or an oversized body it is refused, and nothing runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.serve import (
    FORM,
    BotServer,
    new_channel,
    new_trigger_id,
    serving,
    signed_headers,
    slash_body,
)
from tests.support.signing import PAYLOADS, load_payload, payload_names, recorded_payload

SLACK_WINDOW_S = 300
ONE_MB = 1_000_000
# Bolt answers Slack's ssl_check before any signature check, as Slack's docs ask: 200, empty, nothing runs.
SSL_CHECK = "ssl_check"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotServer]:
    with serving(tmp_path_factory.mktemp("serve-fixtures")) as running:
        yield running


async def settled(server: BotServer) -> None:
    """A command of our own answered: whatever earlier requests handed over has been taken up too."""
    channel = new_channel()
    response = await server.slash("jobs", user="U0OPS", channel=channel)
    assert response.status_code == 200
    await server.wait_calls("chat.postMessage", channel=channel)


def chat_calls(server: BotServer) -> int:
    return sum(1 for c in server.calls() if c.method.startswith("chat.") or c.method == "response_url")


async def assert_nothing_ran(server: BotServer, channel: str, chat_before: int | None = None) -> None:
    await settled(server)
    assert server.calls(channel=channel) == []
    assert await server.audit(channel) == []
    if chat_before is not None:
        assert chat_calls(server) == chat_before + 1  # only the chat.postMessage of settled()


def garden_body(channel: str, text: str = "jobs") -> bytes:
    return slash_body(
        text, user="U0OPS", channel=channel, trigger_id=new_trigger_id(), response_url="http://127.0.0.1:9/"
    )


# --- recorded payloads, re-signed now -----------------------------------------------------------


@pytest.mark.parametrize("name", payload_names())
async def test_every_recorded_payload_resigned_now_is_accepted(server: BotServer, name: str) -> None:
    payload = load_payload(name)
    response = await server.post(payload.body, payload.headers)

    assert response.status_code != 401, response.text
    assert response.status_code in (200, 404), response.text  # 404: Bolt's "no listener for this"
    assert (await server.get("/healthz")).status_code == 200


async def test_url_verification_answers_its_challenge(server: BotServer) -> None:
    payload = load_payload("event_url_verification")
    challenge = json.loads((PAYLOADS / "event_url_verification.json").read_text())["challenge"]
    response = await server.post(payload.body, payload.headers)

    assert response.status_code == 200
    assert response.json() == {"challenge": challenge}


async def test_a_view_submission_without_state_values_does_not_break_the_server(server: BotServer) -> None:
    payload = load_payload("view_submission_response_url")
    assert json.loads((PAYLOADS / "view_submission_response_url.json").read_text())["view"]["state"] == {}
    response = await server.post(payload.body, payload.headers)

    assert response.status_code < 500, response.text
    assert response.status_code != 401
    assert (await server.get("/healthz")).status_code == 200
    await settled(server)  # and it still answers commands
    assert server.is_running()


async def test_recorded_payloads_run_nothing_in_the_bot(server: BotServer) -> None:
    for name in payload_names():
        payload = load_payload(name)
        await server.post(payload.body, payload.headers)
    await settled(server)

    # The recorded payloads speak in C111 as W111/U111/U222; none of that reaches the Web API or the audit.
    assert server.calls(channel="C111") == []
    rows = await server.query("SELECT actor FROM audit_log WHERE actor NOT IN ('U0OPS')")
    assert rows == []


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in payload_names() if n != SSL_CHECK])
async def test_recorded_stale_signatures_are_refused(server: BotServer, name: str) -> None:
    payload = recorded_payload(name)
    assert payload.headers["X-Slack-Request-Timestamp"] == "1700000000"
    chat_before = chat_calls(server)
    response = await server.post(payload.body, payload.headers)

    assert response.status_code == 401
    await assert_nothing_ran(server, "C111", chat_before)


async def test_a_stale_ssl_check_gets_an_empty_200_and_runs_nothing(server: BotServer) -> None:
    payload = recorded_payload(SSL_CHECK)
    chat_before = chat_calls(server)
    response = await server.post(payload.body, payload.headers)

    assert (response.status_code, response.text) == (200, "")
    await assert_nothing_ran(server, "C111", chat_before)


@pytest.mark.parametrize(
    ("age_s", "status"),
    [(SLACK_WINDOW_S + 60, 401), (-(SLACK_WINDOW_S + 60), 401), (SLACK_WINDOW_S - 60, 200)],
    ids=["six-minutes-old", "six-minutes-ahead", "four-minutes-old"],
)
async def test_the_five_minute_window(server: BotServer, age_s: int, status: int) -> None:
    channel = new_channel()
    body = garden_body(channel)
    response = await server.post(body, signed_headers(body, timestamp=int(time.time()) - age_s))

    assert response.status_code == status
    if status == 200:
        await server.wait_calls("chat.postMessage", channel=channel)
    else:
        await assert_nothing_ran(server, channel)


async def test_a_garden_command_with_a_stale_signature_runs_nothing(server: BotServer) -> None:
    channel = new_channel()
    body = garden_body(channel, "cache flush")
    response = await server.post(body, signed_headers(body, timestamp=1_700_000_000))

    assert response.status_code == 401
    await assert_nothing_ran(server, channel)
    assert await server.query("SELECT id FROM approvals WHERE channel = %s", (channel,)) == []


@pytest.mark.parametrize("position", [0, 40, -1], ids=["first-byte", "middle-byte", "last-byte"])
async def test_a_body_changed_after_signing_is_refused(server: BotServer, position: int) -> None:
    channel = new_channel()
    body = garden_body(channel)
    headers = signed_headers(body)
    tampered = bytearray(body)
    tampered[position] = ord("X") if tampered[position] != ord("X") else ord("Y")
    response = await server.post(bytes(tampered), headers)

    assert response.status_code == 401
    await assert_nothing_ran(server, channel)


@pytest.mark.parametrize(
    "drop",
    [
        ("X-Slack-Signature", "X-Slack-Request-Timestamp"),
        ("X-Slack-Signature",),
        ("X-Slack-Request-Timestamp",),
    ],
    ids=["both", "signature", "timestamp"],
)
async def test_missing_signature_headers_are_refused(server: BotServer, drop: tuple[str, ...]) -> None:
    channel = new_channel()
    body = garden_body(channel)
    headers = {k: v for k, v in signed_headers(body).items() if k not in drop}
    response = await server.post(body, headers)

    assert response.status_code == 401
    await assert_nothing_ran(server, channel)


# --- oversized ----------------------------------------------------------------------------------


async def test_a_body_over_one_megabyte_is_refused_with_413(server: BotServer) -> None:
    body = b"payload=" + b"x" * (ONE_MB + 1)
    response = await server.post(body, signed_headers(body))

    assert response.status_code == 413
    assert (await server.get("/healthz")).status_code == 200


async def test_an_oversized_body_without_content_length_is_refused_with_413(server: BotServer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"x" * 100_000

    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.events_url, content=chunks(), headers=signed_headers(b"", content_type=FORM)
        )

    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413
    assert (await server.get("/healthz")).status_code == 200
    await settled(server)
