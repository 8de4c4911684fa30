"""Work started after Slack's ack. Acks come first: new work waits while acks are in flight.

The queue is bounded (QUEUE_LIMIT): when it is full, `spawn` refuses and the listener's ack says
"busy, try again" instead, so nothing runs later that the asker was told would not. Each item has a
time bound (WORK_BOUND_S), so a stuck item frees its worker and the workers can never all be stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

WORKERS = 4  # work items in progress at once; the rest wait in order
# Items waiting for a worker; beyond it the ack answers "busy". Acks outrun the workers during a burst
# (they wait for a gap between acks): 200 turned away 300 of a 500-command burst (bench/load.py).
QUEUE_LIMIT = 1000
WORK_BOUND_S = 120.0  # longest one item may run (long jobs run in tasks of their own, not here)
ACK_PRIORITY_WAIT_S = 0.5  # longest a queued item waits for a gap between acks under a burst
QUIET_GAP_S = 0.02  # no ack for this long: the burst is over, background work may run


class AckGate:
    """Tracks requests being acknowledged, so background work can give way to a burst of them."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._last_activity = 0.0

    def enter(self) -> None:
        self._in_flight += 1
        self._last_activity = time.monotonic()

    def leave(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._last_activity = time.monotonic()

    async def quiet(self, timeout: float) -> None:
        """Return once no ack has been in flight for QUIET_GAP_S, or after `timeout` in any case."""
        give_up = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            idle_for = now - self._last_activity
            if (self._in_flight == 0 and idle_for >= QUIET_GAP_S) or now >= give_up:
                return
            await asyncio.sleep(max(QUIET_GAP_S - idle_for, 0.005))


Work = Callable[[], Awaitable[None]]


class BackgroundWork:
    """A bounded pool of coroutines that run what listeners hand over after their ack."""

    def __init__(
        self,
        gate: AckGate,
        *,
        workers: int = WORKERS,
        queue_limit: int = QUEUE_LIMIT,
        work_bound_s: float = WORK_BOUND_S,
    ) -> None:
        self.gate = gate
        self.work_bound_s = work_bound_s
        self._queue: asyncio.Queue[Work] = asyncio.Queue(maxsize=queue_limit)
        self._unfinished = 0
        self.refused = 0
        self._workers = [asyncio.create_task(self._work(), name=f"slack-work-{i}") for i in range(workers)]

    def spawn(self, work: Work) -> bool:
        """Queue `work`; False (and nothing queued) when the queue is full."""
        try:
            self._queue.put_nowait(work)
        except asyncio.QueueFull:
            self.refused += 1
            log.warning("background queue full (%d waiting): work refused", self._queue.qsize())
            return False
        self._unfinished += 1
        return True

    def pending(self) -> int:
        """Items handed over and not finished: queued or running."""
        return self._unfinished

    async def drain(self, timeout: float = 30.0) -> None:
        """Finish what was handed over (graceful shutdown, tests)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("%d background items left unfinished", self._queue.qsize())

    async def close(self) -> None:
        await self.drain()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            work = await self._queue.get()
            try:
                await self.gate.quiet(ACK_PRIORITY_WAIT_S)
                async with asyncio.timeout(self.work_bound_s):
                    await work()
            except TimeoutError:
                log.error("background work took over %.0f s and was stopped", self.work_bound_s)
            except Exception:
                log.exception("background work failed")
            finally:
                self._unfinished -= 1
                self._queue.task_done()
