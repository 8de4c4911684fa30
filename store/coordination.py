"""The bot's Redis: locks across replicas, de-duplication, short caches. Keys live under a prefix."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from core.errors import Conflict, StoreUnavailable

log = logging.getLogger(__name__)

# Delete/extend only when we still hold the lock: a holder that lost it must not free someone else's.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1], KEYS[2]) end return 0"
)
_ACQUIRE = (
    "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then "
    "redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3]) return {1, false} end "
    "return {0, redis.call('get', KEYS[2])}"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "redis.call('pexpire', KEYS[2], ARGV[2]) return redis.call('pexpire', KEYS[1], ARGV[2]) end "
    "return 0"
)


@dataclass(frozen=True)
class Lock:
    """A held lock: its name and the token that proves we hold it."""

    name: str
    token: str


class Coordination:
    """Redis for the bot's own coordination. Every failure becomes StoreUnavailable."""

    def __init__(self, url: str, *, prefix: str = "gardenbot:") -> None:
        self.prefix = prefix
        # One retry on a fresh connection: after a Redis restart the pooled connections are dead, and
        # the first command on one must not fail a request (or make a running job think its lock is gone).
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=3,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.client.aclose()

    async def is_reachable(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def acquire_lock(self, name: str, *, holder: dict[str, Any], ttl_seconds: float) -> Lock:
        """Take the lock or raise Conflict naming its holder. The TTL frees a crashed holder's lock.

        The lock and who holds it are written in one step, so a refusal always names the holder.
        """
        token = secrets.token_hex(16)
        try:
            taken, current = await self.client.eval(
                _ACQUIRE,
                2,
                self.key("lock", name),
                self.key("lock-holder", name),
                token,
                json.dumps(holder, ensure_ascii=False),
                str(_millis(ttl_seconds)),
            )
        except (RedisError, OSError):
            raise StoreUnavailable("store.redis_unavailable") from None
        if taken:
            return Lock(name, token)
        held_by: dict[str, Any] = {"job_id": "?", "requested_by": "?", "started_at": "?"}
        held_by.update(json.loads(current) if current else {})
        raise Conflict(f"lock.held.{name}", **held_by)

    async def lock_holder(self, name: str) -> dict[str, Any] | None:
        """Who holds the lock now, or None when it is free."""
        try:
            if not await self.client.exists(self.key("lock", name)):
                return None
            raw = await self.client.get(self.key("lock-holder", name))
        except (RedisError, OSError):
            raise StoreUnavailable("store.redis_unavailable") from None
        return json.loads(raw) if raw else {}

    async def break_lock(self, name: str) -> None:
        """Free a lock whose holder is known to be dead (its job was marked interrupted)."""
        try:
            await self.client.delete(self.key("lock", name), self.key("lock-holder", name))
        except (RedisError, OSError):
            raise StoreUnavailable("store.redis_unavailable") from None

    async def extend_lock(self, lock: Lock, *, ttl_seconds: float) -> bool:
        """True: extended. False: lost (the key is gone or another token holds it).
        Raises StoreUnavailable when Redis cannot say: the caller decides how long to trust the lock."""
        try:
            result = await self.client.eval(
                _EXTEND,
                2,
                self.key("lock", lock.name),
                self.key("lock-holder", lock.name),
                lock.token,
                str(_millis(ttl_seconds)),
            )
        except (RedisError, OSError):
            raise StoreUnavailable("store.redis_unavailable") from None
        return bool(result)

    async def release_lock(self, lock: Lock) -> None:
        try:
            await self.client.eval(
                _RELEASE,
                2,
                self.key("lock", lock.name),
                self.key("lock-holder", lock.name),
                lock.token,
            )
        except (RedisError, OSError):
            log.warning("could not release lock %s; it expires by itself", lock.name)

    async def first_time(self, *parts: str, ttl_seconds: int) -> bool:
        """True once per key within the TTL: de-duplicates retried deliveries and double clicks."""
        try:
            return bool(await self.client.set(self.key("seen", *parts), "1", nx=True, ex=ttl_seconds))
        except (RedisError, OSError):
            raise StoreUnavailable("store.redis_unavailable") from None


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))
