"""Requests as Slack sends them: bodies of slash commands and clicks, signed; recorded payloads re-signed.

Both test tiers use these: the in-process scenarios (tests/support/slack_scenario.py) dispatch them
to the Bolt app, the end-to-end tests (tests/support/serve.py) POST them to `gardenbot serve`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from tests.support.fixtures import PAYLOADS, SLACK_FIXTURES
from tests.support.slack_api import TEAM_ID

__all__ = ["PAYLOADS", "SLACK_FIXTURES"]
# The secret the bot under test checks, and the one the recorded payloads were signed with
# (payloads/index.json).
SIGNING_SECRET = "test-signing-secret"
FIXTURE_SECRET = SIGNING_SECRET
FORM = "application/x-www-form-urlencoded"


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """Slack's v0 signature: HMAC-SHA256 of b"v0:{timestamp}:{body}" keyed by the signing secret."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack sends with every request, for `timestamp` (default: now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(body, secret, ts),
    }


def signed_headers(body: bytes, *, content_type: str = FORM, timestamp: int | None = None) -> dict[str, str]:
    """Content type and signature headers, signed with the bot's secret."""
    return {"Content-Type": content_type, **sign(body, SIGNING_SECRET, timestamp)}


def new_channel() -> str:
    """A channel id of its own for one test, so answers can be told apart on a shared bot."""
    return "C0T" + secrets.token_hex(4).upper()


def new_trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}"


def slash_body(
    text: str,
    *,
    user: str,
    channel: str,
    trigger_id: str,
    response_url: str,
    team: str = TEAM_ID,
    enterprise: str | None = None,
) -> bytes:
    """A `/garden` slash command body, field for field as Slack sends it."""
    fields = {"enterprise_id": enterprise} if enterprise else {}
    return urlencode(
        {
            **fields,
            "token": "verification_token",
            "team_id": team,
            "team_domain": "garden-dx",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/garden",
            "text": text,
            "api_app_id": "A0GARDEN",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
    ).encode()


def block_action_body(
    action_id: str,
    value: str,
    *,
    user: str,
    channel: str,
    message_ts: str,
    response_url: str,
    team: str = TEAM_ID,
) -> bytes:
    """A button click (block_actions), shaped like payloads/block_actions_button.json."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "api_app_id": "A0GARDEN",
        "token": "verification_token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": new_trigger_id(),
        "team": {"id": team, "domain": "garden-dx"},
        "channel": {"id": channel, "name": "ops"},
        "message": {"type": "message", "ts": message_ts, "text": "approval"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "approval",
                "text": {"type": "plain_text", "text": action_id.title(), "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


@dataclass(frozen=True)
class SignedPayload:
    name: str
    body: bytes
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", FORM)


def recorded_payload(name: str) -> SignedPayload:
    """The payload exactly as recorded, with its stale (1700000000) signature."""
    body = (PAYLOADS / f"{name}.body").read_bytes()
    headers = json.loads((PAYLOADS / f"{name}.headers.json").read_text(encoding="utf-8"))
    return SignedPayload(name=name, body=body, headers=dict(headers))


def load_payload(name: str, secret: str = FIXTURE_SECRET, timestamp: int | None = None) -> SignedPayload:
    """A recorded payload re-signed with `secret` at `timestamp` (default: now), ready to send."""
    recorded = recorded_payload(name)
    headers = {**recorded.headers, **sign(recorded.body, secret, timestamp)}
    return SignedPayload(name=name, body=recorded.body, headers=headers)


def payload_names() -> list[str]:
    index = json.loads((PAYLOADS / "index.json").read_text(encoding="utf-8"))
    return [str(entry["name"]) for entry in index]
