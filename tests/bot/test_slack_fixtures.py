"""Slack's own recorded payloads (tests/fixtures/slack/payloads) and forged ones, dispatched in-process.

Re-signed with the current time every recorded payload is accepted (Bolt answers 404 for the kinds
the bot has no listener for, never 401 or 500); with its recorded, stale signature, a changed byte
or no signature it is refused with 401, and nothing runs. Signature checking is on, as in `serve`;
the same checks over HTTP, and oversized bodies, are in test_slack_e2e.py.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.signing import (
    PAYLOADS,
    load_payload,
    new_channel,
    new_trigger_id,
    payload_names,
    recorded_payload,
    signed_headers,
    slash_body,
)
from tests.support.slack_scenario import SlackScenario

SLACK_WINDOW_S = 300
# Bolt answers Slack's ssl_check before any signature check, as Slack's docs ask: 200, empty, nothing runs.
SSL_CHECK = "ssl_check"


@pytest.fixture
def server(module_slack: SlackScenario) -> SlackScenario:
    """The module's bot in-process (named as before: these tests ran against `serve`)."""
    return module_slack


async def settled(server: SlackScenario) -> None:
    """A command of our own answered: whatever earlier requests handed over has been taken up too."""
    channel = new_channel()
    response = await server.slash("jobs", user="U0OPS", channel=channel)
    assert response.status == 200
    await server.wait_calls("chat.postMessage", channel=channel)


def chat_calls(server: SlackScenario) -> int:
    return sum(1 for c in server.calls() if c.method.startswith("chat.") or c.method == "response_url")


async def assert_nothing_ran(server: SlackScenario, channel: str, chat_before: int | None = None) -> None:
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
async def test_every_recorded_payload_resigned_now_is_accepted(server: SlackScenario, name: str) -> None:
    payload = load_payload(name)
    response = await server.deliver(payload.body, payload.headers)

    assert response.status != 401, response.text
    assert response.status in (200, 404), response.text  # 404: Bolt's "no listener for this"


async def test_url_verification_answers_its_challenge(server: SlackScenario) -> None:
    payload = load_payload("event_url_verification")
    challenge = json.loads((PAYLOADS / "event_url_verification.json").read_text())["challenge"]
    response = await server.deliver(payload.body, payload.headers)

    assert response.status == 200
    assert json.loads(response.text) == {"challenge": challenge}


async def test_a_view_submission_without_state_values_does_not_break_the_server(
    server: SlackScenario,
) -> None:
    payload = load_payload("view_submission_response_url")
    assert json.loads((PAYLOADS / "view_submission_response_url.json").read_text())["view"]["state"] == {}
    response = await server.deliver(payload.body, payload.headers)

    assert response.status < 500, response.text
    assert response.status != 401
    await settled(server)  # and it still answers commands


async def test_recorded_payloads_run_nothing_in_the_bot(server: SlackScenario) -> None:
    for name in payload_names():
        payload = load_payload(name)
        await server.deliver(payload.body, payload.headers)
    await settled(server)

    # The recorded payloads speak in C111 as W111/U111/U222; none of that reaches the Web API or the audit.
    assert server.calls(channel="C111") == []
    rows = await server.query("SELECT actor FROM audit_log WHERE actor NOT IN ('U0OPS')")
    assert rows == []


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in payload_names() if n != SSL_CHECK])
async def test_recorded_stale_signatures_are_refused(server: SlackScenario, name: str) -> None:
    payload = recorded_payload(name)
    assert payload.headers["X-Slack-Request-Timestamp"] == "1700000000"
    chat_before = chat_calls(server)
    response = await server.deliver(payload.body, payload.headers)

    assert response.status == 401
    await assert_nothing_ran(server, "C111", chat_before)


async def test_a_stale_ssl_check_gets_an_empty_200_and_runs_nothing(server: SlackScenario) -> None:
    payload = recorded_payload(SSL_CHECK)
    chat_before = chat_calls(server)
    response = await server.deliver(payload.body, payload.headers)

    assert (response.status, response.text) == (200, "")
    await assert_nothing_ran(server, "C111", chat_before)


@pytest.mark.parametrize(
    ("age_s", "status"),
    [(SLACK_WINDOW_S + 60, 401), (-(SLACK_WINDOW_S + 60), 401), (SLACK_WINDOW_S - 60, 200)],
    ids=["six-minutes-old", "six-minutes-ahead", "four-minutes-old"],
)
async def test_the_five_minute_window(server: SlackScenario, age_s: int, status: int) -> None:
    channel = new_channel()
    body = garden_body(channel)
    response = await server.deliver(body, signed_headers(body, timestamp=int(time.time()) - age_s))

    assert response.status == status
    if status == 200:
        await server.wait_calls("chat.postMessage", channel=channel)
    else:
        await assert_nothing_ran(server, channel)


async def test_a_garden_command_with_a_stale_signature_runs_nothing(server: SlackScenario) -> None:
    channel = new_channel()
    body = garden_body(channel, "cache flush")
    response = await server.deliver(body, signed_headers(body, timestamp=1_700_000_000))

    assert response.status == 401
    await assert_nothing_ran(server, channel)
    assert await server.query("SELECT id FROM approvals WHERE channel = %s", (channel,)) == []


@pytest.mark.parametrize("position", [0, 40, -1], ids=["first-byte", "middle-byte", "last-byte"])
async def test_a_body_changed_after_signing_is_refused(server: SlackScenario, position: int) -> None:
    channel = new_channel()
    body = garden_body(channel)
    headers = signed_headers(body)
    tampered = bytearray(body)
    tampered[position] = ord("X") if tampered[position] != ord("X") else ord("Y")
    response = await server.deliver(bytes(tampered), headers)

    assert response.status == 401
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
async def test_missing_signature_headers_are_refused(server: SlackScenario, drop: tuple[str, ...]) -> None:
    channel = new_channel()
    body = garden_body(channel)
    headers = {k: v for k, v in signed_headers(body).items() if k not in drop}
    response = await server.deliver(body, headers)

    assert response.status == 401
    await assert_nothing_ran(server, channel)
