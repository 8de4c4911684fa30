"""A store that stops answering while the process runs: every use of a connection is bounded."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import StoreUnavailable
from store.db import Store
from tests.support.serve import PrivatePostgres


async def select_one(store: Store) -> int:
    async with store.connection() as conn:
        cur = await conn.execute("SELECT 1 AS one")
        row = await cur.fetchone()
        assert row is not None
        return int(row["one"])


async def test_a_query_on_a_frozen_store_fails_within_five_seconds_and_the_pool_recovers(
    private_pg: PrivatePostgres,
) -> None:
    store = Store(private_pg.url, min_size=2, max_size=2)
    await store.open()
    try:
        assert await select_one(store) == 1  # live connections in the pool, then the server stops
        private_pg.freeze()
        try:
            for _ in range(3):  # each pooled connection is tried, and dropped, in turn
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(select_one(store), timeout=5)
            assert not await asyncio.wait_for(store.is_reachable(), timeout=5)
        finally:
            private_pg.thaw()

        async def back() -> int:
            while True:
                try:
                    return await select_one(store)
                except StoreUnavailable:
                    await asyncio.sleep(0.2)

        assert await asyncio.wait_for(back(), timeout=30) == 1
    finally:
        await store.close()
