"""The shared Slack test helpers: request signing and the Web API stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.support.signing import (
    FIXTURE_SECRET,
    SLACK_FIXTURES,
    load_payload,
    payload_names,
    recorded_payload,
    sign,
)
from tests.support.slack_api import BOT_USER_ID, TEAM_ID, SlackApiStandIn

TOKEN = "xoxb-test-token"

# --- signing ---------------------------------------------------------------------------------


def test_sign_matches_slacks_known_answer_vector() -> None:
    vector = json.loads((SLACK_FIXTURES / "signature/slack_docs_known_answer.json").read_text())
    body = (SLACK_FIXTURES / "signature/slack_docs_known_answer.body").read_bytes()
    headers = sign(body, vector["signing_secret"], int(vector["headers"]["X-Slack-Request-Timestamp"]))
    assert headers == {
        "X-Slack-Request-Timestamp": vector["headers"]["X-Slack-Request-Timestamp"],
        "X-Slack-Signature": vector["headers"]["X-Slack-Signature"],
    }
    # One more byte and the signature no longer matches.
    tampered = sign(body + b"x", vector["signing_secret"], 1531420618)
    assert tampered["X-Slack-Signature"] != vector["headers"]["X-Slack-Signature"]


def test_sign_reproduces_the_recorded_fixture_signatures() -> None:
    for name in payload_names():
        recorded = recorded_payload(name)
        assert sign(recorded.body, FIXTURE_SECRET, 1700000000) == {
            "X-Slack-Request-Timestamp": recorded.headers["X-Slack-Request-Timestamp"],
            "X-Slack-Signature": recorded.headers["X-Slack-Signature"],
        }, name


def test_load_payload_is_fresh_and_slack_sdk_accepts_it() -> None:
    payload = load_payload("slash_command", secret="s3cret")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(payload.body, payload.headers)
    assert parse_qs(payload.body.decode())["command"] == ["/hello-world"]
    assert payload.content_type == "application/x-www-form-urlencoded"
    # The recorded one is stale on purpose and must be refused.
    assert not SignatureVerifier(FIXTURE_SECRET).is_valid_request(
        payload.body, recorded_payload("slash_command").headers
    )


# --- the Web API stand-in --------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[SlackApiStandIn]:
    with SlackApiStandIn() as running:
        yield running


async def test_post_message_is_recorded_and_answered_like_slack(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    first = await client.chat_postMessage(channel="C0OPS", text="hello", blocks=blocks)
    second = await client.chat_postMessage(channel="C0OPS", text="again")
    assert first["ok"] is True
    assert first["channel"] == "C0OPS"
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["blocks"] == blocks
    (call, _) = standin.calls_to("chat.postMessage")
    assert call.params["channel"] == "C0OPS"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.token == TOKEN
    assert call.json_param("blocks") == blocks


async def test_update_keeps_the_ts_and_replaces_the_message(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.url)
    posted = await client.chat_postMessage(channel="C0ALERTS", text="firing")
    updated = await client.chat_update(channel="C0ALERTS", ts=posted["ts"], text="resolved")
    assert updated["ts"] == posted["ts"]
    message = standin.message("C0ALERTS", posted["ts"])
    assert message is not None
    assert message["text"] == "resolved"


async def test_other_methods_answer_like_slack(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.url)
    standin.set_usergroup("S0ONCALL", ["U1", "U2"])
    auth = await client.auth_test()
    assert (auth["user_id"], auth["team_id"]) == (BOT_USER_ID, TEAM_ID)
    assert auth["bot_id"]
    ephemeral = await client.chat_postEphemeral(channel="C0OPS", user="U1", text="pw")
    assert ephemeral["message_ts"]
    members = await client.usergroups_users_list(usergroup="S0ONCALL")
    assert members["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as unknown:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert unknown.value.response["error"] == "no_such_subteam"
    dm = await client.conversations_open(users="U1")
    assert dm["channel"]["id"].startswith("D")
    view = {"type": "modal", "title": {"type": "plain_text", "text": "t"}, "blocks": []}
    assert (await client.views_open(trigger_id="1.2.3", view=view))["ok"]
    assert (await client.views_update(view_id="V1", view=view))["ok"]
    assert (await client.reactions_add(channel="C0OPS", timestamp="1.2", name="eyes"))["ok"]
    assert [c.method for c in standin.calls] == [
        "auth.test",
        "chat.postEphemeral",
        "usergroups.users.list",
        "usergroups.users.list",
        "conversations.open",
        "views.open",
        "views.update",
        "reactions.add",
    ]


async def test_429_is_retried_by_slack_sdks_handler(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(
        token=TOKEN,
        base_url=standin.url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    standin.rate_limit(2, retry_after=0, method="chat.postMessage")
    await client.auth_test()  # another method is not limited
    response = await client.chat_postMessage(channel="C0OPS", text="after the limit")
    assert response["ok"] is True
    assert [c.status for c in standin.calls_to("chat.postMessage")] == [429, 429, 200]


async def test_429_without_a_retry_handler_surfaces_retry_after(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.url, retry_handlers=[])
    standin.rate_limit(1, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C0OPS", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert (await client.chat_postMessage(channel="C0OPS", text="x"))["ok"]


async def test_fail_and_drop(standin: SlackApiStandIn) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=standin.url, retry_handlers=[])
    standin.fail(1, method="chat.update", error="message_not_found")
    with pytest.raises(SlackApiError) as failed:
        await client.chat_update(channel="C0OPS", ts="1.1", text="x")
    assert failed.value.response["error"] == "message_not_found"
    standin.drop(1)
    with pytest.raises(aiohttp.ClientError):
        await client.auth_test()
    assert (await client.auth_test())["ok"]


async def test_response_url_posts_are_recorded(standin: SlackApiStandIn) -> None:
    async with aiohttp.ClientSession() as session:
        url = standin.response_url("abc")
        async with session.post(url, json={"text": "done", "replace_original": True}) as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
    (call,) = await standin.wait_for("response_url")
    assert call.params == {"text": "done", "replace_original": True, "_hook": "abc"}


async def test_wait_for_times_out_when_nothing_comes(standin: SlackApiStandIn) -> None:
    with pytest.raises(TimeoutError):
        await standin.wait_for("chat.postMessage", timeout=0.05)


# --- file uploads (files.getUploadURLExternal + upload URL + files.completeUploadExternal) ----


async def test_files_upload_v2_goes_through_the_three_steps_and_keeps_the_bytes() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    with SlackApiStandIn() as api:
        client = AsyncWebClient(token=TOKEN, base_url=api.url)
        response = await client.files_upload_v2(
            channel="C0REPORTS", file=png, filename="weekly.png", title="Weekly KPI", initial_comment="週次"
        )

        methods = [c.method for c in api.calls]
        assert methods == ["files.getUploadURLExternal", "file_upload", "files.completeUploadExternal"]
        file_id = response["file"]["id"]
        assert api.uploaded(file_id) == png
        complete = api.calls_to("files.completeUploadExternal")[0]
        assert complete.params["channel_id"] == "C0REPORTS"
        assert complete.json_param("files")[0]["title"] == "Weekly KPI"


async def test_completing_an_upload_that_never_arrived_fails_like_slack() -> None:
    with SlackApiStandIn() as api:
        client = AsyncWebClient(token=TOKEN, base_url=api.url)
        with pytest.raises(SlackApiError) as caught:
            await client.files_completeUploadExternal(
                files=[{"id": "F0NOPE", "title": "x"}], channel_id="C0OPS"
            )
    assert caught.value.response["error"] == "file_not_found"
