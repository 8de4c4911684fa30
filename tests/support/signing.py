"""Sign requests as Slack does; replay the recorded Slack payloads with a fresh signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from tests.support.fixtures import PAYLOADS, SLACK_FIXTURES

__all__ = ["PAYLOADS", "SLACK_FIXTURES"]
# The secret the recorded payloads were signed with (payloads/index.json).
FIXTURE_SECRET = "test-signing-secret"


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


@dataclass(frozen=True)
class SignedPayload:
    name: str
    body: bytes
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/x-www-form-urlencoded")


def recorded_payload(name: str) -> SignedPayload:
    """The payload exactly as recorded, with its stale (1700000000) signature."""
    body = (PAYLOADS / f"{name}.body").read_bytes()
    headers = json.loads((PAYLOADS / f"{name}.headers.json").read_text(encoding="utf-8"))
    return SignedPayload(name=name, body=body, headers=dict(headers))


def load_payload(name: str, secret: str = FIXTURE_SECRET, timestamp: int | None = None) -> SignedPayload:
    """A recorded payload re-signed with `secret` at `timestamp` (default: now), ready to POST."""
    recorded = recorded_payload(name)
    headers = {**recorded.headers, **sign(recorded.body, secret, timestamp)}
    return SignedPayload(name=name, body=recorded.body, headers=headers)


def payload_names() -> list[str]:
    index = json.loads((PAYLOADS / "index.json").read_text(encoding="utf-8"))
    return [str(entry["name"]) for entry in index]
