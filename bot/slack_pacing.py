"""Per-channel pacing of Slack Web API posts (chat.postMessage / chat.update).

Slack allows about one message per second per channel and answers 429 with Retry-After beyond
it. The pacer sends at most `per_second` messages a second to each channel, one at a time, waits
out a 429's Retry-After and sends again: nothing is dropped.

Each item has a key (an alert group's groupKey). An item's `send` must show the *latest* state of
its key (post the message if there is none yet, else update it), because when a channel falls
behind, a newer item for a key that is still waiting replaces the waiting one, in its place in
the queue: the latest state wins, and a channel's queue never holds more than one item per key.
Items of one key are sent in the order they were submitted (one at a time per channel).

An item may come as a `Prepare` instead (`submit_prepared`): work that must come before the
send but need not be paced (reading the key's latest state from a store) runs before the pace
wait, and only the send it returns is paced. When a newer item of the key arrives during the
wait, it is prepared again, once, so what is sent is still the latest state. Work after the send
(storing what Slack answered) belongs in a task of its own, so it does not hold the channel.

Use a Slack client without a rate-limit retry handler for these sends, so the 429 reaches the
pacer (which can merge newer states meanwhile) instead of sleeping inside the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

Send = Callable[[], Awaitable[object]]
Prepare = Callable[[], Awaitable[Send]]  # unpaced work before a send; returns the paced send
# event ("sent", "merged", "rate_limited", "retried", "failed") and channel, for metrics
Observer = Callable[[str, str], None]


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds to wait when `exc` is Slack's 429 answer (its Retry-After header), else None."""
    if not isinstance(exc, SlackApiError) or exc.response is None:
        return None
    if exc.response.status_code != 429:
        return None
    headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
    value = headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(float(value), 0.0) if value is not None else 1.0
    except ValueError:
        return 1.0


@dataclass
class PacerStats:
    sent: int = 0
    merged: int = 0
    rate_limited: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class _Item:
    key: str
    prepare: Prepare
    attempts: int = 0
    version: int = 0  # bumped when a newer state of the key replaces this one while it waits


def _ready(send: Send) -> Prepare:
    async def prepare() -> Send:
        return send

    return prepare


def _failing(exc: Exception) -> Send:
    async def send() -> None:
        raise exc

    return send


@dataclass
class _Channel:
    pending: OrderedDict[str, _Item] = field(default_factory=OrderedDict)
    next_start: float = 0.0
    task: asyncio.Task[None] | None = None


class SlackPacer:
    """Queues sends per channel and runs them at the channel's pace; see the module docstring."""

    def __init__(
        self,
        per_second: float = 1.0,
        *,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        observe: Observer | None = None,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval = 1.0 / per_second
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.stats = PacerStats()
        self._observe = observe
        self._channels: dict[str, _Channel] = {}

    def submit(self, channel: str, key: str, send: Send) -> None:
        """Queue `send` for `channel`; replaces a waiting item of the same key (latest wins)."""
        self.submit_prepared(channel, key, _ready(send))

    def submit_prepared(self, channel: str, key: str, prepare: Prepare) -> None:
        """Like submit(), but `prepare` runs before the pace wait and returns the paced send."""
        state = self._channels.setdefault(channel, _Channel())
        if key in state.pending:
            item = state.pending[key]
            item.prepare = prepare  # keeps its place in the queue
            item.version += 1
            self._count("merged", channel)
        else:
            state.pending[key] = _Item(key, prepare)
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._run(channel, state), name=f"slack-pacer-{channel}")

    def pending(self, channel: str | None = None) -> int:
        """Items waiting (not the one being sent), for one channel or all."""
        if channel is None:
            return sum(len(state.pending) for state in self._channels.values())
        state = self._channels.get(channel)
        return len(state.pending) if state is not None else 0

    async def drain(self) -> None:
        """Wait until every queued item was sent (or given up)."""
        while True:
            tasks = [s.task for s in self._channels.values() if s.task is not None and not s.task.done()]
            if not tasks:
                return
            await asyncio.gather(*tasks)

    async def close(self) -> None:
        """Stop the channel workers; waiting items are abandoned (call drain() first to keep them)."""
        for state in self._channels.values():
            if state.task is not None:
                state.task.cancel()
        for state in self._channels.values():
            if state.task is not None:
                await asyncio.gather(state.task, return_exceptions=True)

    async def _run(self, channel: str, state: _Channel) -> None:
        loop = asyncio.get_running_loop()
        while state.pending:
            key, item = next(iter(state.pending.items()))
            version = item.version
            send = await self._prepare(item)  # while waiting for the channel's turn
            delay = state.next_start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if item.version != version:  # a newer state arrived meanwhile: prepare that one
                version = item.version
                send = await self._prepare(item)
            del state.pending[key]
            wait = await self._attempt(channel, item, send)
            # From the end of the call: Slack received it before then, so the next one arrives at
            # least an interval later whatever the network did (no 429 from jitter).
            state.next_start = loop.time() + self.interval
            if wait is not None:
                state.next_start = max(state.next_start, loop.time() + wait)
            elif item.version == version:
                continue
            else:  # replaced during its last preparation: that newest state is still to be sent
                item.attempts = 0
            if key in state.pending:  # a newer state arrived meanwhile: it is the one to send
                self._count("merged", channel)
            else:
                state.pending[key] = item
                state.pending.move_to_end(key, last=False)  # first again, so order per key holds

    @staticmethod
    async def _prepare(item: _Item) -> Send:
        """The item's send; a failing preparation is a send that fails the same way (retried)."""
        try:
            return await item.prepare()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _failing(exc)

    async def _attempt(self, channel: str, item: _Item, send: Send) -> float | None:
        """Send once: None when done (sent or given up), else seconds to wait before retrying."""
        item.attempts += 1
        try:
            await send()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retry_after = retry_after_of(exc)
            if retry_after is not None:
                item.attempts -= 1  # a 429 is Slack's pacing, not a failure of the item
                self._count("rate_limited", channel)
                return retry_after
            if item.attempts >= self.max_attempts:
                self._count("failed", channel)
                log.error("slack post to %s (%s) failed %d times: %s", channel, item.key, item.attempts, exc)
                return None
            self._count("retried", channel)
            log.warning("slack post to %s (%s) failed, retrying: %s", channel, item.key, exc)
            return float(self.backoff_s * 2 ** (item.attempts - 1))
        self._count("sent", channel)
        return None

    def _count(self, event: str, channel: str) -> None:
        setattr(self.stats, event, getattr(self.stats, event) + 1)
        if self._observe is not None:
            self._observe(event, channel)
