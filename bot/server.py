"""`gardenbot serve`: Starlette under uvicorn. Slack events, health and readiness, metrics.

The Bolt app, the stores and the background workers are built in the lifespan, from settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.alert_desk import AlertDesk, open_alert_desk
from bot.alerts_webhook import ALERTS_PATH, alert_webhook
from bot.audit_head import publish_daily
from bot.background import AckGate, BackgroundWork
from bot.escalation import escalate_forever
from bot.interrupted import announce_interrupted
from bot.metrics import Metrics
from bot.metrics_feed import MetricsFeed
from bot.notify import SlackNotifier
from bot.runtime import Runtime, keep_sweeping, open_runtime
from bot.scheduling import start_scheduling, stop_scheduling
from bot.slack_app import BotIdentity, build_slack_app, build_web_client
from core.config import Settings
from core.i18n import Translator

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
MAX_BODY_BYTES = 1_000_000  # Slack's payloads are far smaller; refuse anything bigger unread
READY_TIMEOUT_S = 2.0


@dataclass
class Served:
    runtime: Runtime
    handler: AsyncSlackRequestHandler | None
    work: BackgroundWork
    gate: AckGate
    metrics: Metrics
    alerts: AlertDesk
    feed: MetricsFeed


@dataclass
class _SlackSide:
    """What serving Slack holds open for the process's life: closed in reverse at shutdown."""

    handler: AsyncSlackRequestHandler | None = None
    session: aiohttp.ClientSession | None = None
    socket_mode: AsyncSocketModeHandler | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        if self.socket_mode is not None:
            await self.socket_mode.close_async()  # type: ignore[no-untyped-call]
        for task in self.background:
            task.cancel()


def create_app(settings: Settings) -> SlackFirst:
    """The ASGI application; nothing is connected until uvicorn runs its lifespan."""
    served: list[Served] = []
    routes = _Routes(served, settings)
    rest = Starlette(routes=routes.table(), lifespan=_lifespan(settings, served))
    return SlackFirst(rest, routes.slack_events)


def _lifespan(
    settings: Settings, served: list[Served]
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Open the runtime and Slack at start-up into `served`; close them at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime(settings)
        gate, metrics = AckGate(), Metrics()
        work = BackgroundWork(gate)
        alerts, feed = open_alert_desk(runtime, metrics), MetricsFeed(runtime, metrics)
        await feed.start()
        slack = await _open_slack(runtime, work, metrics)
        slack.background.append(asyncio.create_task(_sweep(runtime, slack), name="sweep-interrupted"))
        slack.background.append(asyncio.create_task(escalate_forever(runtime.services), name="escalation"))
        scheduler = await start_scheduling(runtime, slack.handler)
        served.append(Served(runtime, slack.handler, work, gate, metrics, alerts, feed))
        # Start-up objects live as long as the process: keep the collector from rescanning them,
        # so a full collection does not stall an ack.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await stop_scheduling(scheduler)
            await slack.close()
            await work.close()
            await alerts.close()
            await feed.close()
            if slack.session is not None:
                await slack.session.close()
            await runtime.close()

    return lifespan


def _sweep(runtime: Runtime, slack: _SlackSide) -> Coroutine[Any, Any, None]:
    """Sweep for jobs of replicas gone meanwhile; Slack hears of each one found (when it is served)."""
    client = slack.handler.app.client if slack.handler is not None else None
    if client is None:
        return keep_sweeping(runtime)
    return keep_sweeping(runtime, on_interrupted=partial(announce_interrupted, runtime.settings, client))


async def _open_slack(runtime: Runtime, work: BackgroundWork, metrics: Metrics) -> _SlackSide:
    """Bolt behind /slack/events (and Socket Mode with an app token), with its start-up chores."""
    settings = runtime.settings
    side = _SlackSide()
    if settings.slack.signing_secret is None:
        log.warning("SLACK_SIGNING_SECRET not set: /slack/events answers 503")
        return side
    side.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    client = build_web_client(runtime, side.session)
    identity = BotIdentity()
    bolt = build_slack_app(runtime, client=client, work=work, metrics=metrics, identity=identity)
    runtime.services.notifier = SlackNotifier(client)  # notices share the session
    side.handler = AsyncSlackRequestHandler(bolt)
    side.background.append(asyncio.create_task(learn_identity(client, identity)))
    side.background.append(asyncio.create_task(_announce_interrupted(runtime, client)))
    if settings.channels.ops is not None:
        side.background.append(
            asyncio.create_task(_publish_audit_head(runtime, client, settings.channels.ops))
        )
    if settings.slack.app_token is not None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        side.socket_mode = AsyncSocketModeHandler(bolt, settings.slack.app_token.get_secret_value())
        await side.socket_mode.connect_async()  # type: ignore[no-untyped-call]
    return side


class _Routes:
    """The HTTP endpoints, reading the state the lifespan opened."""

    def __init__(self, served: list[Served], settings: Settings) -> None:
        self.served = served
        self.settings = settings

    def _alert_desk(self) -> AlertDesk | None:
        return self.served[0].alerts if self.served else None

    def table(self) -> list[Route]:
        return [
            Route(SLACK_PATH, self.slack_events, methods=["POST"]),
            Route(ALERTS_PATH, alert_webhook(self.settings, self._alert_desk), methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    async def slack_events(self, request: Request) -> Response:
        state = self.served[0]
        if state.handler is None:
            return PlainTextResponse("Slack is not configured", status_code=503)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return _count(state, "slack", PlainTextResponse("request body too large", status_code=413))
        state.gate.enter()
        started = time.perf_counter()
        try:
            if length is None and len(await _read_capped(request)) > MAX_BODY_BYTES:
                return _count(state, "slack", PlainTextResponse("request body too large", status_code=413))
            response = await state.handler.handle(request)
        finally:
            state.gate.leave()
            state.metrics.ack_seconds.observe(time.perf_counter() - started)
        return _count(state, "slack", response)

    async def healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        services = self.served[0].runtime.services
        store_ok, redis_ok = await asyncio.gather(
            _within(services.store.is_reachable(), READY_TIMEOUT_S),
            _within(services.coordination.is_reachable(), READY_TIMEOUT_S),
        )
        body = {
            "store": "ok" if store_ok else "unreachable",
            "redis": "ok" if redis_ok else "unreachable",
            "audit_spooled": services.audit.spooled(),
        }
        return JSONResponse(body, status_code=200 if store_ok and redis_ok else 503)

    async def metrics(self, _: Request) -> Response:
        state = self.served[0]
        state.metrics.background_pending.set(state.work.pending())
        await state.feed.at_scrape(state.alerts.pacer.pending())
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


class SlackFirst:
    """ASGI front: POST /slack/events goes straight to the ack path, everything else to Starlette.

    Slack's 3-second clock runs on that one route; skipping the router and middleware stack for it
    is the cheapest ack there is.
    """

    def __init__(self, rest: Starlette, slack_events: Callable[[Request], Awaitable[Response]]) -> None:
        self.rest = rest
        self.slack_events = slack_events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SLACK_PATH or scope["method"] != "POST":
            await self.rest(scope, receive, send)
            return
        try:
            response = await self.slack_events(Request(scope, receive))
        except Exception:
            log.exception("Slack request failed before its ack")
            response = PlainTextResponse("internal error", status_code=500)
        await response(scope, receive, send)


def serve(settings: Settings, *, host: str, port: int) -> int:
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=15,
    )
    uvicorn.Server(config).run()
    return 0


async def _read_capped(request: Request) -> bytes:
    """Read a body sent without Content-Length, stopping just past the cap."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    body = b"".join(chunks)
    request._body = body  # Bolt's adapter reads request.body(); hand it what we read
    return body


def _count(state: Served, route: str, response: Response) -> Response:
    state.metrics.http_requests.labels(route=route, status=str(response.status_code)).inc()
    return response


async def _within(check: Awaitable[bool], timeout: float) -> bool:
    try:
        return bool(await asyncio.wait_for(check, timeout))
    except (TimeoutError, OSError):
        return False


async def learn_identity(client: AsyncWebClient, identity: BotIdentity) -> None:
    """auth.test once, off the ack path; retried a few times if Slack is not there yet."""
    for attempt in range(5):
        try:
            response = await client.auth_test()
        except (SlackApiError, OSError) as exc:
            log.warning("auth.test failed (attempt %d): %s", attempt + 1, type(exc).__name__)
            await asyncio.sleep(2**attempt)
            continue
        identity.team_id = response.get("team_id")
        identity.enterprise_id = response.get("enterprise_id")
        identity.bot_user_id = response.get("user_id")
        identity.bot_id = response.get("bot_id")
        identity.settled.set()
        return
    log.error("auth.test never answered: unless SLACK_TEAM_ID is set, Slack requests are refused")
    identity.settled.set()


async def _publish_audit_head(runtime: Runtime, client: AsyncWebClient, channel: str) -> None:
    zone = runtime.settings.zone
    await publish_daily(
        runtime.services.audit,
        client,
        channel,
        Translator(runtime.settings.locale),
        today=lambda: datetime.now(zone).date(),
    )


async def _announce_interrupted(runtime: Runtime, client: AsyncWebClient) -> None:
    """Tell Slack about the jobs a stopped process left behind, found at start-up."""
    await announce_interrupted(runtime.settings, client, runtime.startup.interrupted)
