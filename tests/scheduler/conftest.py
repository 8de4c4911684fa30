"""A migrated bot store on a throwaway database, shared by the scheduler tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from store.db import Store
from tests.support.servers import throwaway_database


@pytest.fixture
def store_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store(store_url, max_size=5)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
