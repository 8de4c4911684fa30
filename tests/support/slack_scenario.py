"""Slack behaviour in-process: signed requests dispatched to the Bolt app, the Web API a stand-in.

The way bolt-python tests its own scenarios: the bot's Runtime is opened on a throwaway store
(a `BotWorld`), the app is built as `gardenbot serve` builds it, with signature checking ON, and
every request is a signed body handed to `app.async_dispatch`. After each request the scenario
waits until the work handed over after the ack and every job it started are done, so a test reads
the stand-in's calls and the store without polling. Only the HTTP server around the app is left
out: that is what the few end-to-end tests (tests/support/serve.py) are for.

`build_app` is the ONE place where the app is constructed: when the way `serve` wires the app
changes (bot/server.py), adapt it there and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.background import AckGate, BackgroundWork
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.server import learn_identity
from bot.slack_app import BotIdentity, build_slack_app, build_web_client
from tests.support.runtime import TARGET_REDIS_DB, BotWorld
from tests.support.signing import SIGNING_SECRET
from tests.support.slack_api import SlackApiStandIn
from tests.support.slack_driver import Acked, SlackDriver

SETTLE_TIMEOUT_S = 60.0


@dataclass
class BuiltApp:
    """The Bolt app and what `serve` keeps beside it."""

    app: AsyncApp
    work: BackgroundWork
    metrics: Metrics


@asynccontextmanager
async def build_app(runtime: Runtime) -> AsyncIterator[BuiltApp]:
    """The app as `serve` builds it (bot/server.py create_app), having learned its workspace."""
    client = build_web_client(runtime)
    identity = BotIdentity()
    work = BackgroundWork(AckGate())
    metrics = Metrics()
    app = build_slack_app(runtime, client=client, work=work, metrics=metrics, identity=identity)
    await learn_identity(client, identity)
    try:
        yield BuiltApp(app, work, metrics)
    finally:
        await work.close()


class SlackScenario(SlackDriver):
    """One bot in-process: dispatch signed requests, then read the stand-in and the store."""

    def __init__(
        self, runtime: Runtime, built: BuiltApp, standin: SlackApiStandIn, database_url: str
    ) -> None:
        super().__init__(standin, database_url, TARGET_REDIS_DB)
        self.runtime = runtime
        self.app = built.app
        self.work = built.work
        self.metrics = built.metrics

    async def deliver(self, body: bytes, headers: Mapping[str, str], *, timeout: float = 10.0) -> Acked:
        """Dispatch as the server does (an ack in flight holds background work back); settle."""
        request = AsyncBoltRequest(body=body.decode("utf-8"), headers=dict(headers))
        self.work.gate.enter()
        try:
            response = await asyncio.wait_for(self.app.async_dispatch(request), timeout)
        finally:
            self.work.gate.leave()
        await self.settle()
        return Acked(response.status, response.body)

    async def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until the handed-over work, every job it started and the watchers that show those jobs
        in Slack (bot/slack_app.py names them `slack-watch-<job>`) are done."""
        runner = self.runtime.pipeline.runner
        async with asyncio.timeout(timeout):
            while True:
                await self.work.drain(timeout)
                running = runner.running()
                watching = [t for t in asyncio.all_tasks() if t.get_name().startswith("slack-watch-")]
                if not running and not watching and self.work.pending() == 0:
                    return
                await asyncio.gather(*(runner.wait(job_id) for job_id in running), return_exceptions=True)
                await asyncio.gather(*watching, return_exceptions=True)


def slack_env(standin: SlackApiStandIn) -> dict[str, str]:
    """What `serve` needs to talk to Slack, pointed at the stand-in."""
    return {
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": standin.url,
    }


@asynccontextmanager
async def slack_scenario(
    world: BotWorld, standin: SlackApiStandIn, **env: str
) -> AsyncIterator[SlackScenario]:
    """`world`'s bot opened in-process with the Slack app on top; `env` adds environment variables."""
    world.extra_env.update({**slack_env(standin), **env})
    async with world.runtime() as runtime, build_app(runtime) as built:
        yield SlackScenario(runtime, built, standin, world.database_url)
