"""Shared fixtures: a bot on a throwaway store, and the target system it operates.

`bot_world` is one test's bot (YAML with the test roles, private state dir, throwaway bot database,
unique Redis prefix); `bot_runtime` is that bot opened in-process. The target is a throwaway
PostgreSQL database, Redis database 13 (emptied by `cache flush`, so only test keys live there) and
a local HTTP stand-in answering GET /health.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.runtime import Runtime
from tests.support.chinook import chinook_template
from tests.support.runtime import BotWorld, health_api, target_redis
from tests.support.servers import redis_prefix, throwaway_database

TARGET_KEYS = {"estimate:1": "見積", "estimate:2": "quote", "price:master": "v42", "session:abc": "U1"}


@pytest.fixture(scope="session")
def health_api_url() -> Iterator[str]:
    with health_api() as url:
        yield url


@pytest.fixture(scope="session")
def target_database_url() -> Iterator[str]:
    with throwaway_database("gbt_target") as url:
        yield url


@pytest.fixture
def target_keys() -> Iterator[dict[str, str]]:
    """The target cache holding a few known keys; emptied again afterwards."""
    client = target_redis()
    client.flushdb()
    client.mset(TARGET_KEYS)
    try:
        yield dict(TARGET_KEYS)
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def bot_world(tmp_path: Path, health_api_url: str, target_database_url: str) -> Iterator[BotWorld]:
    with throwaway_database() as database_url, redis_prefix() as prefix:
        world = BotWorld(
            config_path=tmp_path / "gardenbot.yml",
            state_dir=tmp_path / "state",
            database_url=database_url,
            redis_prefix=prefix,
            target_database_url=target_database_url,
            api_url=health_api_url,
        )
        world.write_yaml()
        yield world


@pytest.fixture
async def bot_runtime(bot_world: BotWorld) -> AsyncIterator[Runtime]:
    async with bot_world.runtime() as runtime:
        yield runtime


@pytest.fixture(scope="module")
def chinook() -> Iterator[str]:
    """A template database holding the Chinook sample, cloned by backup and restore tests."""
    with chinook_template() as name:
        yield name
