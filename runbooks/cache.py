"""The operated system's Redis cache: what is in it, and emptying it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import TargetUnreachable

SAMPLE_KEYS = 2_000  # enough to show the main key families without walking a large keyspace


@dataclass(frozen=True)
class CacheStats:
    keys: int
    used_memory: int
    peak_memory: int
    hits: int
    misses: int
    evicted: int
    clients: int
    version: str
    families: tuple[tuple[str, int], ...]  # key prefix before the first ':' and its count in a sample

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


async def cache_stats(client: aioredis.Redis) -> CacheStats:
    try:
        info = await client.info()
        keys = int(await client.dbsize())
        families: Counter[str] = Counter()
        seen = 0
        async for key in client.scan_iter(count=500):
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            families[name.split(":", 1)[0]] += 1
            seen += 1
            if seen >= SAMPLE_KEYS:
                break
    except (RedisError, OSError) as exc:
        raise TargetUnreachable("target.cache_unreachable", detail=type(exc).__name__) from None
    return CacheStats(
        keys=keys,
        used_memory=int(info.get("used_memory", 0)),
        peak_memory=int(info.get("used_memory_peak", 0)),
        hits=int(info.get("keyspace_hits", 0)),
        misses=int(info.get("keyspace_misses", 0)),
        evicted=int(info.get("evicted_keys", 0)),
        clients=int(info.get("connected_clients", 0)),
        version=str(info.get("redis_version", "?")),
        families=tuple(families.most_common(8)),
    )


async def flush_cache(client: aioredis.Redis) -> int:
    """Empty the cache's own database (FLUSHDB, never FLUSHALL); returns how many keys it held."""
    try:
        before = int(await client.dbsize())
        await client.flushdb()
    except (RedisError, OSError) as exc:
        raise TargetUnreachable("target.cache_unreachable", detail=type(exc).__name__) from None
    return before
