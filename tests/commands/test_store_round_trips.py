"""How often one request waits on the bot's store: every replica shares it, so this is what scales.

The store is reached through a counting relay (tests/support/pg_rounds.py): a round trip is each
time the bot sends to PostgreSQL after PostgreSQL last answered, start-up and log-in not counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bot.runtime import Runtime
from tests.support.pg_rounds import RoundTrips, counting_round_trips
from tests.support.runtime import BotWorld, request

READ_ONLY_LIMIT = 2  # the command's own reads and its audit record, together


@pytest.fixture
def relay() -> Iterator[RoundTrips]:
    with counting_round_trips() as counting:
        yield counting


@pytest.fixture
async def counted_bot(bot_world: BotWorld, relay: RoundTrips) -> AsyncIterator[Runtime]:
    bot_world.database_url = relay.dsn(bot_world.database_url)
    async with bot_world.runtime() as runtime:
        await runtime.pipeline.handle(request("U0OPS", "help"))  # the pool's first use, not measured
        yield runtime


@pytest.mark.parametrize("text", ["help", "jobs", "health", "backup list"])
async def test_a_read_only_command_costs_at_most_two_store_round_trips_audit_included(
    counted_bot: Runtime, relay: RoundTrips, text: str
) -> None:
    before = relay.counts()
    reply = await counted_bot.pipeline.handle(request("U0OPS", text))
    spent = relay.counts() - before

    assert reply.status == "succeeded", reply.summary
    assert spent.round_trips <= READ_ONLY_LIMIT, spent
    audited = await counted_bot.services.audit.entries(limit=1)
    assert [(e.command, e.event) for e in audited] == [(text, "request")]


async def test_the_relay_counts_each_statement_that_waits_for_its_answer(
    counted_bot: Runtime, relay: RoundTrips
) -> None:
    # The instrument itself: three statements one after the other are three round trips.
    before = relay.counts()
    async with counted_bot.services.store.connection() as conn:
        for _ in range(3):
            await conn.execute("SELECT 1")

    assert (relay.counts() - before).round_trips == 3
