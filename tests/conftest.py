"""Shared fixtures: a bot on a throwaway store, and the target system it operates.

`bot_world` is one test's bot (YAML with the test roles, private state dir, throwaway bot database,
unique Redis prefix); `bot_runtime` is that bot opened in-process; `slack` is that bot's Slack app
in-process, its Web API the `standin` (tests/support/slack_scenario.py); `garden` makes a fresh
sample garden_dx that bot's target. `store` is a migrated bot store alone, for tests below the bot.
`inbox` is a local SMTP server that keeps every mail it is given. `private_pg` is a PostgreSQL of a
test's own, that it may freeze or stop; `bot_server` is `gardenbot serve` started once for the
session. The target is a throwaway PostgreSQL database, Redis database 13 (emptied by `cache
flush`, so only test keys live there) and a local HTTP stand-in answering GET /health.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from bot.runtime import Runtime
from runbooks.sample_garden import create_sample_garden
from store.db import Store
from tests.support.chinook import chinook_template
from tests.support.runtime import TARGET_KEYS, BotWorld, bot_world_in, health_api, target_cache_holding
from tests.support.serve import (
    BotServer,
    PrivatePostgres,
    PrivatePostgresUnavailable,
    private_postgres,
    serving,
)
from tests.support.servers import throwaway_database
from tests.support.slack_api import SlackApiStandIn, workspace_standin
from tests.support.slack_scenario import SlackScenario, slack_scenario
from tests.support.smtp import Inbox, smtp_inbox


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
    with target_cache_holding(TARGET_KEYS) as keys:
        yield keys


@pytest.fixture
def bot_world(tmp_path: Path, health_api_url: str, target_database_url: str) -> Iterator[BotWorld]:
    with bot_world_in(tmp_path, api_url=health_api_url, target_database_url=target_database_url) as world:
        yield world


@pytest.fixture
async def bot_runtime(bot_world: BotWorld) -> AsyncIterator[Runtime]:
    async with bot_world.runtime() as runtime:
        yield runtime


@pytest.fixture
async def garden(bot_world: BotWorld) -> AsyncIterator[str]:
    """The sample garden_dx loaded in a throwaway database and made `bot_world`'s target; its URL."""
    with throwaway_database("gbt_garden") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await create_sample_garden(conn)
        bot_world.target_database_url = url
        yield url


@pytest.fixture
def store_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated bot store of the test's own, on a throwaway database."""
    store = Store(store_url, max_size=5)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="module")
def chinook() -> Iterator[str]:
    """A template database holding the Chinook sample, cloned by backup and restore tests."""
    with chinook_template() as name:
        yield name


@pytest.fixture
def standin() -> Iterator[SlackApiStandIn]:
    """The Slack Web API stand-in; S0ONCALL is a user group holding U0ONCALL."""
    with workspace_standin() as api:
        yield api


@pytest.fixture
async def slack(bot_world: BotWorld, standin: SlackApiStandIn) -> AsyncIterator[SlackScenario]:
    async with slack_scenario(bot_world, standin) as scenario:
        yield scenario


@pytest.fixture(scope="module")
async def module_slack(
    tmp_path_factory: pytest.TempPathFactory, health_api_url: str, target_database_url: str
) -> AsyncIterator[SlackScenario]:
    """One in-process Slack bot shared by a module's tests: each test speaks in a channel of its own."""
    folder = tmp_path_factory.mktemp("slack")
    with (
        workspace_standin() as api,
        bot_world_in(folder, api_url=health_api_url, target_database_url=target_database_url) as world,
    ):
        async with slack_scenario(world, api) as scenario:
            yield scenario


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """A real SMTP server on a free port that keeps every mail it is given (tests/support/smtp.py)."""
    with smtp_inbox() as box:
        yield box


@pytest.fixture(scope="session")
def bot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotServer]:
    """`gardenbot serve` as a child process, started once for the end-to-end tests (support/serve.py)."""
    with serving(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own: the shared one on 5432 must never be stopped or frozen."""
    try:
        with private_postgres() as pg:
            yield pg
    except PrivatePostgresUnavailable as exc:
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")
