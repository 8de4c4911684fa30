"""The Web API stand-in with Slack's per-channel message limit: chat.postMessage and chat.update
to one channel are accepted at most `per_second` times a second (measured on arrival, without
Slack's tolerance for short bursts); beyond that the answer is 429 with Retry-After."""

from __future__ import annotations

import math
import threading
import time

from tests.support.slack_api import Answer, SlackApiStandIn, SlackCall

PACED_METHODS = ("chat.postMessage", "chat.update")


class PacedSlackApiStandIn(SlackApiStandIn):
    def __init__(self, per_second: float = 1.0) -> None:
        super().__init__()
        self.min_gap = 1.0 / per_second
        self._accepted_at: dict[str, float] = {}
        self._pace_lock = threading.Lock()

    def _too_soon(self, call: SlackCall) -> float | None:
        """Seconds until the channel may take a message, when it may not take this one."""
        if call.method not in PACED_METHODS:
            return None
        channel = str(call.params.get("channel", ""))
        now = time.monotonic()
        with self._pace_lock:
            last = self._accepted_at.get(channel)
            if last is not None and now - last < self.min_gap:
                return self.min_gap - (now - last)
            self._accepted_at[channel] = now
        return None

    def _answer(self, call: SlackCall) -> tuple[SlackCall, Answer]:
        wait = self._too_soon(call)
        if wait is None:
            return super()._answer(call)
        recorded = SlackCall(call.method, call.params, call.headers, call.http_method, 429)
        with self._state.lock:
            self._state.calls.append(recorded)
        headers = {"Content-Type": "application/json; charset=utf-8", "Retry-After": str(math.ceil(wait))}
        return recorded, (429, headers, b'{"ok": false, "error": "ratelimited"}')
