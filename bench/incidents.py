"""Incident notices and escalation: how soon they go out.

    .venv/bin/python -m bench.incidents [--rounds 20] [--incidents 10] [--tick 1.0] [--replicas 2]

1. Declare → notices: `declare_incident` in a real PostgreSQL (throwaway database), then the notice
   (runbooks.incidents.notice_reply / notice_mail) announced both ways at once: chat.postMessage with
   slack_sdk to the local Web API stand-in (tests/support/slack_api.py) and the mail to a local
   aiosmtpd server. Times from the start of the declaration to the stand-in's answer and to the SMTP
   server's acceptance of the message (its DATA handler). Goal: both within 1 s.
2. Escalation lateness: --incidents P1 incidents whose 15-minute deadline falls 2-12 s from now
   (declared in the past), and --replicas processes' worth of ticks (one store each) calling
   `escalation_tick` every --tick seconds with the real clock. Lateness = when `page` ran - the
   deadline. Goal: within 5 s. Also counts pages, which must be one per incident.
Not measured here: the command wiring (parsing, roles, audit) before `declare_incident`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.controller import Controller
from slack_sdk.web.async_client import AsyncWebClient

from core.config import Settings
from core.i18n import Translator
from core.incidents import Page, levels_to_notify
from core.reply import Reply
from runbooks.incidents import announce, notice_mail, notice_reply
from store.db import Store
from store.escalation import escalation_tick
from store.incidents import declare_incident
from tests.support.serve import free_port
from tests.support.servers import throwaway_database
from tests.support.slack_api import SlackApiStandIn
from tests.support.smtp import Inbox

LEVELS = {
    "level1": ["U0OPS"],
    "level2": [{"name": "Admin", "slack": "U0ADMIN", "email": "a@example.com"}],
    "level3": ["U0LEAD"],
    "level4": [{"name": "Architect", "slack": "U0ARCH", "email": "r@example.com"}],
}


class TimedInbox(Inbox):
    """Notes when the SMTP server accepted each message."""

    accepted: list[float]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.accepted.append(time.perf_counter())
        return answer


@contextmanager
def timed_inbox() -> Iterator[TimedInbox]:
    inbox = TimedInbox(port=free_port())
    inbox.accepted = []
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def settings(smtp_url: str) -> Settings:
    return Settings(
        escalation=LEVELS,
        incidents={"mail_to": ["ops@example.com"]},
        mail={"url": smtp_url, "from": "gardenbot@example.com"},
    )


async def declare_once(
    store: Store, config: Settings, client: AsyncWebClient, inbox: TimedInbox
) -> tuple[float, float]:
    t = Translator(config.locale)
    posted_at: list[float] = []

    async def post(reply: Reply) -> dict[str, Any]:
        answer = await client.chat_postMessage(channel="C0INC", text=reply.summary)
        posted_at.append(time.perf_counter())
        return {"channel": answer["channel"], "ts": answer["ts"]}

    before = len(inbox.accepted)
    started = time.perf_counter()
    incident = await declare_incident(
        store,
        severity="P1",
        title="API down",
        impact=None,
        declared_by="U0OPS",
        at=datetime.now(UTC),
        paged_levels=levels_to_notify("P1", config),
    )
    outcome = await announce(
        notice_reply(incident, config, t), notice_mail(incident, config, t), post=post, settings=config
    )
    assert outcome.mail is not None and outcome.message_ref is not None, outcome
    assert len(inbox.accepted) == before + 1
    return posted_at[0] - started, inbox.accepted[-1] - started


async def notices(url: str, rounds: int) -> None:
    store = Store(url, max_size=4)
    await store.open()
    with SlackApiStandIn() as standin, timed_inbox() as inbox:
        client = AsyncWebClient(token="xoxb-bench", base_url=standin.url)
        config = settings(inbox.url)
        await declare_once(store, config, client, inbox)  # warm-up: connections, imports
        samples = [await declare_once(store, config, client, inbox) for _ in range(rounds)]
    await store.close()
    for name, values in (("Slack post", [s[0] for s in samples]), ("mail accepted", [s[1] for s in samples])):
        ms = sorted(v * 1000 for v in values)
        print(f"| declare P1 → {name} | {rounds} | {statistics.median(ms):.1f} ms | {ms[-1]:.1f} ms |")


async def escalation(url: str, count: int, tick: float, replicas: int) -> None:
    config = Settings(escalation=LEVELS)
    stores = [Store(url, max_size=2) for _ in range(replicas)]
    for store in stores:
        await store.open()
    now = datetime.now(UTC)
    deadlines: dict[int, datetime] = {}
    for n in range(count):
        due = now + timedelta(seconds=2 + 10 * n / max(count - 1, 1))
        incident = await declare_incident(
            stores[0],
            severity="P1",
            title=f"bench {n}",
            impact=None,
            declared_by="U0OPS",
            at=due - timedelta(minutes=15),
            paged_levels=(1, 2, 3),
        )
        deadlines[incident.id] = due
    late: list[float] = []

    async def page(owed: Page) -> None:
        late.append((datetime.now(UTC) - owed.due_at).total_seconds())

    async def ticking(store: Store, name: str) -> None:
        end = time.monotonic() + 16
        while time.monotonic() < end:
            await escalation_tick(store, datetime.now(UTC), config, page, claimant=name)
            await asyncio.sleep(tick)

    await asyncio.gather(*(ticking(s, f"replica-{i}") for i, s in enumerate(stores)))
    for store in stores:
        await store.close()
    late.sort()
    print(
        f"| escalation lateness, tick {tick:g} s, {replicas} replicas"
        f" | {len(late)} pages for {count} incidents | {statistics.median(late):.2f} s | {late[-1]:.2f} s |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--incidents", type=int, default=10)
    parser.add_argument("--tick", type=float, action="append")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    print("| what | n | median | worst |\n| --- | --- | --- | --- |")
    with throwaway_database("gbt_bench") as url:
        migrator = Store(url)
        await migrator.open()
        await migrator.migrate()
        await migrator.close()
        await notices(url, args.rounds)
    for tick in args.tick or [1.0, 5.0]:
        with throwaway_database("gbt_bench") as url:
            migrator = Store(url)
            await migrator.open()
            await migrator.migrate()
            await migrator.close()
            await escalation(url, args.incidents, tick, args.replicas)


if __name__ == "__main__":
    asyncio.run(main())
