"""What both Slack test tiers share: send a signed request, then read what the bot did.

`SlackDriver` is the common base of the in-process scenario (tests/support/slack_scenario.py,
requests dispatched to the Bolt app) and of the end-to-end `BotServer` (tests/support/serve.py,
requests POSTed to `gardenbot serve`). Only `deliver` differs; a test written against a driver
runs against either.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.support.runtime import target_redis
from tests.support.signing import block_action_body, new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import SlackApiStandIn, SlackCall


@dataclass(frozen=True)
class Acked:
    """The bot's answer to one request (its ack): status and body text."""

    status: int
    text: str


def call_text(call: SlackCall) -> str:
    """Everything a person would read in a call: the fallback text and every text in its blocks."""
    pieces = [str(call.params.get("text", ""))]
    blocks = call.json_param("blocks") or []
    pieces.append(json.dumps(blocks, ensure_ascii=False))
    return "\n".join(pieces)


class SlackDriver:
    """A bot under test, its Web API stand-in and its store."""

    def __init__(self, standin: SlackApiStandIn, database_url: str, target_redis_db: int) -> None:
        self.standin = standin
        self.database_url = database_url
        self.target_redis_db = target_redis_db  # the target cache that `cache flush` empties

    async def deliver(self, body: bytes, headers: Mapping[str, str], *, timeout: float = 10.0) -> Acked:
        """Send a request as Slack does; the ack."""
        raise NotImplementedError

    def log_tail(self) -> str:
        """What the bot logged, for failure messages (nothing in-process: pytest shows the log)."""
        return ""

    # --- talking to it ---------------------------------------------------------------------
    async def send(self, body: bytes, *, timeout: float = 10.0) -> Acked:
        """Send `body` signed as Slack signs it; returns the ack."""
        return await self.deliver(body, signed_headers(body), timeout=timeout)

    async def slash(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        trigger_id: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Acked:
        """Send a signed `/garden TEXT`; returns the ack."""
        body = slash_body(
            text,
            user=user,
            channel=channel,
            trigger_id=trigger_id or new_trigger_id(),
            response_url=self.standin.response_url(f"cmd-{channel}"),
        )
        headers = {**signed_headers(body), **(extra_headers or {})}
        return await self.deliver(body, headers, timeout=timeout)

    async def click(self, action_id: str, value: str, *, user: str, channel: str, message_ts: str) -> Acked:
        """Send a signed click on an approval message's button; returns the ack."""
        body = block_action_body(
            action_id,
            value,
            user=user,
            channel=channel,
            message_ts=message_ts,
            response_url=self.standin.response_url(f"act-{channel}"),
        )
        return await self.send(body)

    # --- what it did -----------------------------------------------------------------------
    def calls(self, method: str | None = None, *, channel: str | None = None) -> list[SlackCall]:
        return [
            c
            for c in self.standin.calls
            if (method is None or c.method == method)
            and (channel is None or c.params.get("channel") == channel)
        ]

    async def wait_for(
        self, check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition"
    ) -> Any:
        """Poll `check` until it returns something truthy; fail with the bot's log if it never does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result:
                return result
            if loop.time() >= deadline:
                seen = [(c.method, c.status, c.params.get("channel")) for c in self.standin.calls]
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n"
                    f"stand-in calls: {seen[-30:]}\n"
                    f"bot log:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def wait_calls(
        self, method: str, *, channel: str, count: int = 1, timeout: float = 15.0
    ) -> list[SlackCall]:
        """The successful calls to `method` in `channel`, once there are at least `count`."""

        def done() -> list[SlackCall]:
            found = [c for c in self.calls(method, channel=channel) if c.status == 200]
            return found if len(found) >= count else []

        result: list[SlackCall] = await self.wait_for(
            done, timeout=timeout, what=f"{count} {method} call(s) in {channel}"
        )
        return result

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read (or change) the bot's store directly, outside the bot."""
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=dict_row
        ) as conn:
            cur = await conn.execute(sql.encode(), tuple(params) or None)
            return await cur.fetchall() if cur.description else []

    def target_key_count(self) -> int:
        client = target_redis(self.target_redis_db)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    async def audit(self, channel: str) -> list[dict[str, Any]]:
        return await self.query(
            "SELECT event, outcome, actor, approver, command, detail FROM audit_log"
            " WHERE channel = %s ORDER BY id",
            (channel,),
        )
