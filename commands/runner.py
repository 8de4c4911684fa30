"""Runs a command as a stored background job: state, progress, result, heartbeat, lock."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Protocol

from commands.base import Args, Command, Context, ProgressCallback
from commands.replies import error_reply, unexpected_reply
from commands.services import Services, utc_now
from core.errors import GardenBotError
from core.reply import Reply
from store import jobs as job_store
from store.audit import AuditRecord
from store.redis import Lock

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 60  # renewed every heartbeat; a crashed holder's lock lapses within this
PROGRESS_INTERVAL_S = 1.0  # at most one stored progress update a second (and one Slack edit)


class JobListener(Protocol):
    """Where a job's progress and result are shown (a Slack message, the console)."""

    async def job_progress(self, job_id: int, percent: int, text: str) -> None: ...

    async def job_finished(self, job_id: int, reply: Reply) -> None: ...


class JobRunner:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._tasks: dict[int, asyncio.Task[Reply]] = {}
        self._locks: dict[int, Lock] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(
        self,
        command: Command,
        ctx: Context,
        args: Args,
        *,
        approval_id: int | None = None,
        listener: JobListener | None = None,
    ) -> job_store.Job:
        """Take the command's lock if it has one, store the job, and start it in the background."""
        svc = self.services
        request = ctx.request
        job_id = await job_store.reserve_job_id(svc.store)
        lock: Lock | None = None
        if command.lock:
            lock = await svc.coordination.acquire_lock(
                command.lock,
                holder={"job_id": job_id, "requested_by": request.actor.user_id, "started_at": _clock()},
                ttl_seconds=LOCK_TTL_SECONDS,
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
            )
        except BaseException:
            if lock is not None:
                await svc.coordination.release_lock(lock)
            raise
        if lock is not None:
            self._locks[job.id] = lock
        await self._audit(ctx, command, "job_started", "running", job.id)
        job_ctx = replace(ctx, job_id=job.id, progress=self._progress(job.id, listener))
        self._tasks[job.id] = asyncio.create_task(
            self._run(command, job_ctx, args, job.id, listener), name=f"job-{job.id}"
        )
        self._ensure_heartbeat()
        return job

    async def wait(self, job_id: int) -> Reply:
        task = self._tasks.get(job_id)
        if task is None:
            raise GardenBotError("job.not_running_here", job_id=job_id)
        return await asyncio.shield(task)

    def running(self) -> list[int]:
        return [job_id for job_id, task in self._tasks.items() if not task.done()]

    async def shutdown(self, *, grace_seconds: float = 10.0) -> None:
        """Give running jobs a moment, then cancel them; they end as interrupted."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    def _progress(self, job_id: int, listener: JobListener | None) -> ProgressCallback:
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
            if listener is not None:
                await _quietly(listener.job_progress(job_id, percent, text))

        return report

    async def _run(
        self, command: Command, ctx: Context, args: Args, job_id: int, listener: JobListener | None
    ) -> Reply:
        started = time.monotonic()
        status, error = "failed", None
        try:
            reply = await command.run(ctx, args)
            status = "succeeded" if reply.status == "succeeded" else "failed"
        except GardenBotError as exc:
            reply = error_reply(exc, ctx.t)
            reply = replace(reply, status="failed")
            error = ctx.t(exc.message_key, **exc.params)
        except asyncio.CancelledError:
            status, error = "interrupted", "the bot stopped while it ran"
            reply = Reply(status="failed", summary=ctx.t("job.interrupted", job_id=job_id))
        except Exception:
            log.exception("job %s (%s) failed [%s]", job_id, command.name, ctx.request.correlation_id)
            reply = unexpected_reply(ctx.t, ctx.request.correlation_id)
            error = "unexpected error"
        reply = replace(reply, ids={**reply.ids, "job_id": job_id})
        duration_ms = int((time.monotonic() - started) * 1000)
        try:
            await job_store.finish_job(
                self.services.store,
                job_id,
                status=status,
                result={"summary": reply.summary, "ids": reply.ids},
                error=error,
            )
        finally:
            lock = self._locks.pop(job_id, None)
            if lock is not None:
                await self.services.coordination.release_lock(lock)
        await self._audit(ctx, command, "job_finished", status, job_id, duration_ms)
        if listener is not None:
            await _quietly(listener.job_finished(job_id, reply))
        return reply

    async def _audit(
        self,
        ctx: Context,
        command: Command,
        event: str,
        outcome: str,
        job_id: int,
        duration_ms: int | None = None,
    ) -> None:
        request = ctx.request
        await self.services.audit.record(
            AuditRecord.new(
                correlation_id=request.correlation_id,
                source=request.source,
                actor=request.actor.user_id,
                approver=ctx.approved_by,
                channel=request.channel,
                command=command.name,
                event=event,
                outcome=outcome,
                duration_ms=duration_ms,
                detail={"job_id": job_id},
            )
        )

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="job-heartbeat")

    async def _beat(self) -> None:
        """Keep our running jobs and their locks alive while any job runs."""
        while self.running():
            await asyncio.sleep(job_store.HEARTBEAT_SECONDS)
            try:
                await job_store.beat(self.services.store, self.services.instance)
            except GardenBotError:
                log.warning("heartbeat not stored (store unreachable)")
            for lock in list(self._locks.values()):
                await self.services.coordination.extend_lock(lock, ttl_seconds=LOCK_TTL_SECONDS)


def _clock() -> str:
    return utc_now().isoformat(timespec="seconds")


async def _quietly(awaitable: Any) -> None:
    """A listener that fails (Slack down) must not fail the job."""
    try:
        await awaitable
    except Exception:
        log.exception("job listener failed")
