"""Jobs are watched, not threaded: the runner publishes each job's progress and end here, and any
surface (a Slack message, the console, the scheduler) subscribes by job id. A late subscriber
starts from the last state; a finished job gives its final reply at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from core.errors import GardenBotError
from core.reply import Reply

log = logging.getLogger(__name__)
KEEP_FINISHED = 500  # finished jobs remembered for late watchers; older ones are forgotten
# A private result (a temporary password) stays whole only this long for a late watcher (the
# surface that asked subscribes as the job starts); after it the board keeps just its summary.
PRIVATE_KEEP_SECONDS = 120.0


@dataclass(frozen=True)
class JobEvent:
    job_id: int
    percent: int
    text: str
    reply: Reply | None = None  # set on the last event: the job's result

    @property
    def finished(self) -> bool:
        return self.reply is not None


def started_job(reply: Reply) -> int | None:
    """The job a reply says it started (a command, or an approval), for a surface to watch."""
    job_id = reply.ids.get("job_id")
    return job_id if reply.status == "running" and isinstance(job_id, int) else None


@dataclass(frozen=True)
class JobEnd:
    """A job that finished in this process: its command, how it ended, how long it ran."""

    job_id: int
    kind: str
    outcome: str  # succeeded, failed, interrupted
    seconds: float


EndListener = Callable[[JobEnd], None]


class JobBoard:
    def __init__(self, *, private_keep_seconds: float = PRIVATE_KEEP_SECONDS) -> None:
        self.private_keep_seconds = private_keep_seconds
        self._last: OrderedDict[int, JobEvent] = OrderedDict()
        self._watchers: dict[int, list[asyncio.Queue[JobEvent]]] = {}
        self._requesters: dict[int, str] = {}
        self._opened: dict[int, tuple[str, float]] = {}
        self._end_listeners: list[EndListener] = []

    def on_end(self, listener: EndListener) -> None:
        """Call `listener` for every job that finishes from now on (metrics, catalog gauges)."""
        self._end_listeners.append(listener)

    def opened(self, job_id: int, kind: str = "", *, requested_by: str | None = None) -> None:
        """A job started here: watchers may subscribe before its first progress."""
        self._last[job_id] = JobEvent(job_id, 0, "")
        self._opened[job_id] = (kind, time.monotonic())
        if requested_by is not None:
            self._requesters[job_id] = requested_by

    def requested_by(self, job_id: int) -> str | None:
        """Who asked for the job (not who approved it): the one a private result is for."""
        return self._requesters.get(job_id)

    def progress(self, job_id: int, percent: int, text: str) -> None:
        self._publish(JobEvent(job_id, percent, text))

    def finished(self, job_id: int, reply: Reply, outcome: str | None = None) -> None:
        last = self._last.get(job_id)
        self._publish(JobEvent(job_id, last.percent if last else 100, last.text if last else "", reply))
        if reply.visibility == "asker":
            self._withhold_later(job_id)
        self._forget_old()
        kind, started = self._opened.pop(job_id, ("", time.monotonic()))
        end = JobEnd(job_id, kind, outcome or reply.status, time.monotonic() - started)
        for listener in self._end_listeners:
            try:
                listener(end)
            except Exception:  # a listener's failure never fails the job
                log.exception("job end listener failed for job %s", job_id)

    async def watch(self, job_id: int) -> AsyncIterator[JobEvent]:
        """The job's last state, then every event until it finishes."""
        last = self._last.get(job_id)
        if last is None:
            raise GardenBotError("job.not_running_here", job_id=job_id)
        if last.finished:
            yield last
            return
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._watchers.setdefault(job_id, []).append(queue)
        try:
            event = last
            while True:
                yield event
                if event.finished:
                    return
                event = await queue.get()
        finally:
            watchers = self._watchers.get(job_id, [])
            if queue in watchers:
                watchers.remove(queue)

    async def result(self, job_id: int) -> Reply:
        """Wait for the job's final reply."""
        async for event in self.watch(job_id):
            if event.reply is not None:
                return event.reply
        raise GardenBotError("job.not_running_here", job_id=job_id)  # pragma: no cover

    def _withhold_later(self, job_id: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nobody could watch late anyway
            self._withhold(job_id)
            return
        loop.call_later(self.private_keep_seconds, self._withhold, job_id)

    def _withhold(self, job_id: int) -> None:
        """Keep only the summary of a private result: its body (a password) leaves this process's memory."""
        event = self._last.get(job_id)
        if event is None or event.reply is None:
            return
        kept = Reply(
            status=event.reply.status, summary=event.reply.summary, visibility="asker", ids=event.reply.ids
        )
        self._last[job_id] = JobEvent(job_id, event.percent, event.text, kept)

    def _publish(self, event: JobEvent) -> None:
        self._last[event.job_id] = event
        for queue in self._watchers.get(event.job_id, []):
            queue.put_nowait(event)

    def _forget_old(self) -> None:
        done = [j for j, e in self._last.items() if e.finished]
        for job_id in done[: max(0, len(done) - KEEP_FINISHED)]:
            del self._last[job_id]
            self._watchers.pop(job_id, None)
            self._requesters.pop(job_id, None)
