"""Runs a command as a stored background job: state, progress, result, heartbeat, lock.

A job with a lock keeps it only while it can prove it: every heartbeat renews the lock
(commands/locks.py). A lost lock (Redis restarted empty, the key evicted, someone else's token)
stops the job at once; a lock Redis cannot confirm stops it before its TTL could run out, since
another replica may take it then. A job that ends while the bot's store is down keeps its end on
local disk (store/pending.py) and is published as usual; the end is stored when the store is back.

Progress and ends go to the job board (commands/job_watch.py), where any surface watches them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from commands.base import Args, Context, ProgressCallback
from commands.boundary import audit_record, note_on_incidents, reply_for
from commands.command import Command
from commands.job_watch import JobBoard
from commands.locks import release_lock, renew_lock, take_lock
from commands.services import Services, utc_now
from core.errors import Conflict, GardenBotError, StoreUnavailable
from core.reply import Note, Reply
from store import jobs as job_store
from store.coordination import Lock
from store.pending import PendingEnds

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0  # at most one stored progress update a second (and one Slack edit)


class JobRunner:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.timing = services.settings.jobs
        self.pending = PendingEnds(services.settings.job_spool_path)
        self.board = JobBoard()
        self._tasks: dict[int, asyncio.Task[Reply]] = {}
        self._locks: dict[int, Lock] = {}
        self._guards: dict[int, asyncio.Task[None]] = {}
        self._stopped_by: dict[int, str] = {}  # job id -> message key: why its lock stopped it
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(
        self,
        command: Command,
        ctx: Context,
        args: Args,
        *,
        approval_id: int | None = None,
    ) -> job_store.Job:
        """Take the command's lock if it has one, store the job, and start it in the background."""
        svc = self.services
        request = ctx.request
        await self.store_pending_ends()
        job_id = await job_store.reserve_job_id(svc.store)
        lock: Lock | None = None
        taken_at = time.monotonic()
        if command.lock:
            lock = await take_lock(
                svc,
                command.lock,
                holder={"job_id": job_id, "requested_by": request.actor.user_id, "started_at": _clock()},
                ttl_seconds=self.timing.lock_ttl_seconds,
            )
        try:
            job = await job_store.create_job(
                svc.store,
                job_id=job_id,
                command=command.name,
                args=args.model_dump(mode="json"),
                requested_by=request.actor.user_id,
                approved_by=ctx.approved_by,
                approval_id=approval_id,
                channel=request.channel,
                source=request.source,
                correlation_id=request.correlation_id,
                owner=svc.instance,
                lock_name=command.lock,
            )
        except BaseException:
            if lock is not None:
                await release_lock(svc, lock)
            raise
        await self._audit(ctx, command, "job_started", "running", job.id)
        self.board.opened(job.id, command.name, requested_by=request.actor.user_id)
        job_ctx = replace(ctx, job_id=job.id, progress=self._progress(job.id))
        if lock is not None:
            self._locks[job.id] = lock
            job_ctx = replace(job_ctx, fence=self._fence(job.id, lock))
        task = asyncio.create_task(self._run(command, job_ctx, args, job.id), name=f"job-{job.id}")
        self._tasks[job.id] = task
        if lock is not None:
            self._guards[job.id] = asyncio.create_task(
                self._guard(job.id, lock, task, taken_at), name=f"job-{job.id}-lock"
            )
        self._ensure_heartbeat()
        return job

    async def wait(self, job_id: int) -> Reply:
        """The job's final reply, by watching it on the board."""
        return await self.board.result(job_id)

    def running(self) -> list[int]:
        return [job_id for job_id, task in self._tasks.items() if not task.done()]

    async def store_pending_ends(self) -> int:
        """Write job ends kept while the store was down; 0 (and they stay) while it still is."""
        try:
            return await self.pending.replay(self.services.store)
        except StoreUnavailable:
            return 0

    async def shutdown(self, *, grace_seconds: float = 10.0) -> None:
        """Give running jobs a moment, then cancel them; they end as interrupted."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        background = [t for t in (self._heartbeat, *self._guards.values()) if t is not None]
        for helper in background:
            helper.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    def _progress(self, job_id: int) -> ProgressCallback:
        last_shown = float("-inf")

        async def report(percent: int, text: str) -> None:
            nonlocal last_shown
            now = time.monotonic()
            if percent < 100 and now - last_shown < PROGRESS_INTERVAL_S:
                return
            last_shown = now
            try:
                await job_store.report_progress(self.services.store, job_id, percent, text)
            except GardenBotError:
                log.warning("job %s: progress not stored (store unreachable)", job_id)
            self.board.progress(job_id, percent, text)

        return report

    async def _run(self, command: Command, ctx: Context, args: Args, job_id: int) -> Reply:
        started = time.monotonic()
        reply, status, error = await self._outcome(command, ctx, args, job_id)
        guard = self._guards.pop(job_id, None)
        if guard is not None:
            guard.cancel()
        reply = replace(reply, ids={**reply.ids, "job_id": job_id})
        duration_ms = int((time.monotonic() - started) * 1000)
        result = {"summary": reply.summary, "ids": reply.ids}
        try:
            stored = await self._record_end(job_id, status, result, error)
        finally:
            lock = self._locks.pop(job_id, None)
            if lock is not None:
                await release_lock(self.services, lock)
        if not stored:
            reply = replace(
                reply, elements=(*reply.elements, Note(ctx.t("job.end_kept_locally", job_id=job_id)))
            )
        why = self._stopped_by.pop(job_id, None)
        detail = {"reason": why} if why is not None else {}
        await self._audit(ctx, command, "job_finished", status, job_id, duration_ms, detail)
        await note_on_incidents(
            self.services.store,
            ctx.request,
            command,
            status,
            at=self.services.clock(),
            approver=ctx.approved_by,
            job_id=job_id,
        )
        self.board.finished(job_id, reply, status)
        return reply

    async def _outcome(
        self, command: Command, ctx: Context, args: Args, job_id: int
    ) -> tuple[Reply, str, str | None]:
        """The command's reply, the job's final status and its error text for the job row."""
        try:
            reply = await command.run(ctx, args)
            return reply, ("succeeded" if reply.status == "succeeded" else "failed"), None
        except GardenBotError as exc:
            reply = replace(reply_for(exc, ctx.t, ctx.request.correlation_id), status="failed")
            return reply, "failed", ctx.t(exc.message_key, **exc.params)
        except asyncio.CancelledError:
            why = self._stopped_by.get(job_id)
            if why is None:
                summary = ctx.t("job.interrupted", job_id=job_id)
                return Reply(status="failed", summary=summary), "interrupted", "the bot stopped while it ran"
            lock = self._locks.get(job_id)
            summary = ctx.t(why, job_id=job_id, lock=lock.name if lock else "?")
            return Reply(status="failed", summary=summary), "failed", summary
        except Exception as exc:
            reply = reply_for(exc, ctx.t, ctx.request.correlation_id, doing=f"job {job_id} ({command.name})")
            return reply, "failed", "unexpected error"

    async def _record_end(self, job_id: int, status: str, result: dict[str, Any], error: str | None) -> bool:
        """Store the job's end; with the store down keep it on local disk. False when kept locally."""
        try:
            await job_store.finish_job(self.services.store, job_id, status=status, result=result, error=error)
            return True
        except StoreUnavailable:
            await self.pending.job_finished(job_id, status=status, result=result, error=error)
            return False

    async def _audit(
        self,
        ctx: Context,
        command: Command,
        event: str,
        outcome: str,
        job_id: int,
        duration_ms: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        record = audit_record(
            ctx.request,
            command.name,
            event,
            outcome,
            approver=ctx.approved_by,
            job_id=job_id,
            duration_ms=duration_ms,
            detail=detail,
        )
        await self.services.audit.record(record)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="job-heartbeat")

    async def _beat(self) -> None:
        """Keep our running jobs' rows alive; write kept job ends once the store is back."""
        while self.running() or self.pending.waiting():
            await asyncio.sleep(self.timing.heartbeat_seconds)
            try:
                await job_store.beat(self.services.store, self.services.instance)
            except GardenBotError:
                log.warning("heartbeat not stored (store unreachable)")
                continue
            await self.store_pending_ends()

    async def _guard(self, job_id: int, lock: Lock, task: asyncio.Task[Reply], confirmed: float) -> None:
        """Renew the job's lock every heartbeat; stop the job as soon as the lock is not provably ours.

        `confirmed` is when the last renewal that succeeded was sent: the lock is ours until then + TTL.
        """
        interval, ttl = self.timing.heartbeat_seconds, self.timing.lock_ttl_seconds
        while not task.done():
            await asyncio.sleep(interval)
            sent = time.monotonic()
            state = await renew_lock(self.services, lock, ttl_seconds=ttl, timeout=interval)
            if state == "held":
                confirmed = sent
            elif state == "lost":
                self._stop(job_id, task, "job.lock_lost")
                return
            elif time.monotonic() + interval >= confirmed + ttl:
                self._stop(job_id, task, "job.lock_unconfirmed")
                return
            else:
                log.warning(
                    "job %s: lock %s not confirmed (Redis unreachable); still ours for now", job_id, lock.name
                )

    def _stop(self, job_id: int, task: asyncio.Task[Reply], why: str) -> None:
        log.error("job %s stopped: %s", job_id, why)
        self._stopped_by[job_id] = why
        task.cancel()

    def _fence(self, job_id: int, lock: Lock) -> Callable[[], Awaitable[None]]:
        async def fence() -> None:
            state = await renew_lock(
                self.services,
                lock,
                ttl_seconds=self.timing.lock_ttl_seconds,
                timeout=self.timing.heartbeat_seconds,
            )
            if state != "held":
                why = "job.lock_lost" if state == "lost" else "job.lock_unconfirmed"
                raise Conflict(why, job_id=job_id, lock=lock.name)

        return fence


def _clock() -> str:
    return utc_now().isoformat(timespec="seconds")
