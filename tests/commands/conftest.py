"""Bots whose target is a copy of Chinook, for the backup and restore command tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.runtime import Runtime, open_runtime
from tests.support.backup_env import BackupWorld, backup_world


@pytest.fixture
def world(tmp_path: Path, health_api_url: str, chinook: str) -> Iterator[BackupWorld]:
    with backup_world(tmp_path, health_api_url, template=chinook) as made:
        yield made


@pytest.fixture
async def rt(world: BackupWorld) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(world.bot.settings())
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture(scope="module")
def idle_world(
    tmp_path_factory: pytest.TempPathFactory, health_api_url: str, chinook: str
) -> Iterator[BackupWorld]:
    """One bot for the bad-input tests, which must leave it as empty as they found it."""
    with backup_world(tmp_path_factory.mktemp("idle"), health_api_url, template=chinook) as made:
        yield made


@pytest.fixture(scope="module")
async def idle_rt(idle_world: BackupWorld) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(idle_world.bot.settings())
    try:
        yield runtime
    finally:
        await runtime.close()
