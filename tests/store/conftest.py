"""A migrated bot store on a throwaway database, for the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.db import Store
from tests.support.servers import throwaway_database


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    with throwaway_database() as url:
        store = Store(url, max_size=5)
        await store.open()
        await store.migrate()
        try:
            yield store
        finally:
            await store.close()
