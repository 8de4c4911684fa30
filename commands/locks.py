"""A job's lock: the Redis key (store/coordination.py) and its fence row in PostgreSQL (store/locks.py).

Taking it needs both free, so a Redis that restarted empty cannot let a second backup start beside
a running one. Renewing says `held`, `lost` (the key or the row is gone or someone else's: stop at
once) or `unreachable` (Redis cannot answer: the lock is ours only until its TTL runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from commands.services import Services
from core.errors import Conflict, GardenBotError, StoreUnavailable
from store import locks as lock_rows
from store.coordination import Lock

log = logging.getLogger(__name__)

LockState = Literal["held", "lost", "unreachable"]


async def take_lock(svc: Services, name: str, *, holder: dict[str, Any], ttl_seconds: float) -> Lock:
    """Take the Redis lock, then its row; Conflict (naming the holder) if either is held."""
    lock = await svc.coordination.acquire_lock(name, holder=holder, ttl_seconds=ttl_seconds)
    try:
        other = await lock_rows.claim(
            svc.store, name, token=lock.token, holder=holder, ttl_seconds=ttl_seconds
        )
    except BaseException:
        await svc.coordination.release_lock(lock)
        raise
    if other is not None:
        await svc.coordination.release_lock(lock)
        log.warning("lock %s is free in Redis but its holder %s still renews it in the store", name, other)
        held_by: dict[str, Any] = {"job_id": "?", "requested_by": "?", "started_at": "?"}
        held_by.update(other)
        raise Conflict(f"lock.held.{name}", **held_by)
    return lock


async def renew_lock(svc: Services, lock: Lock, *, ttl_seconds: float, timeout: float) -> LockState:
    """Extend both; a lost half loses the lock. An unreachable store half alone does not."""
    try:
        async with asyncio.timeout(timeout):
            in_redis = await svc.coordination.extend_lock(lock, ttl_seconds=ttl_seconds)
    except (StoreUnavailable, TimeoutError):
        in_redis = None
    try:
        async with asyncio.timeout(timeout):
            in_store: bool | None = await lock_rows.renew(
                svc.store, lock.name, token=lock.token, ttl_seconds=ttl_seconds
            )
    except (StoreUnavailable, TimeoutError):
        in_store = None  # Redis alone fences while the store is down: nobody can start a job then
    if in_redis is False or in_store is False:
        return "lost"
    return "held" if in_redis else "unreachable"


async def release_lock(svc: Services, lock: Lock) -> None:
    await svc.coordination.release_lock(lock)
    with contextlib.suppress(GardenBotError):
        await lock_rows.release(svc.store, lock.name, token=lock.token)  # else it expires by itself


async def lock_held_by_job(svc: Services, name: str, job_id: int) -> bool:
    """Whether job `job_id` still holds lock `name`, by Redis or by its unexpired row."""
    with contextlib.suppress(StoreUnavailable):
        holder = await svc.coordination.lock_holder(name)
        if holder is not None and str(holder.get("job_id")) == str(job_id):
            return True
    row = await lock_rows.holder(svc.store, name)
    return row is not None and str(row.get("job_id")) == str(job_id)


async def break_dead_holders(svc: Services, name: str, job_ids: list[int]) -> None:
    """Free the lock when one of these interrupted jobs still holds it."""
    holder = await svc.coordination.lock_holder(name)
    if holder is not None and str(holder.get("job_id")) in {str(j) for j in job_ids}:
        await svc.coordination.break_lock(name)
    await lock_rows.break_for_jobs(svc.store, name, job_ids)
