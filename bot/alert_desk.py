"""Alert groups to Slack: one message per group in the alerts channel, kept current.

`receive()` stores the group's latest state (store/alerts.py), audits its receipt as the system
actor "webhook", and queues the group's message on a SlackPacer keyed by the thread: while the
channel is behind, newer states of a group merge into one send. A send reads the thread again, so
it shows the latest state whichever replica stored it: it posts the message when the thread has
none (one replica claims that), else updates it. Commands reach it through `refresh()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.alert_message import alert_reply
from bot.blocks import render_message
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.slack_pacing import SlackPacer
from commands.base import Actor, Request
from commands.boundary import audit_record
from core.alerts import AlertGroup
from core.errors import StoreUnavailable
from core.i18n import Translator
from store import alerts as alert_store

log = logging.getLogger(__name__)

WEBHOOK_ACTOR = Actor(user_id="webhook", system=True)


class AnotherReplicaPosts(RuntimeError):
    """The thread's first message is being posted elsewhere: try again once it has its ts."""


def alert_client(runtime: Runtime, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """Like the bot's client but with no rate-limit retry handler: a 429 goes back to the pacer,
    which merges newer states meanwhile instead of sleeping inside the call."""
    slack = runtime.settings.slack
    return AsyncWebClient(
        token=slack.bot_token.get_secret_value() if slack.bot_token else None,
        base_url=slack.api_url,
        session=session,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class AlertDesk:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        client: AsyncWebClient | None,
        *,
        per_second: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.client = client
        self.channel = runtime.settings.channels.alerts
        self.now = now
        self.pacer = SlackPacer(per_second, observe=metrics.observe_slack_pacing)
        self.t = Translator(runtime.settings.locale)
        self._tasks: set[asyncio.Task[alert_store.AlertThread | None]] = set()
        if client is None or self.channel is None:
            log.warning("alerts are stored and audited but not posted: Slack or channels.alerts not set")

    def accept(self, group: AlertGroup) -> None:
        """Take a notification now; store, audit and Slack happen in the background."""
        self.metrics.count_alert_notification(group.status)
        task = asyncio.create_task(self.receive(group), name=f"alert-{group.group_key[:40]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def receive(self, group: AlertGroup) -> alert_store.AlertThread | None:
        services = self.runtime.services
        thread: alert_store.AlertThread | None = None
        try:
            thread = await alert_store.record_notification(services.store, group, at=self.now())
        except StoreUnavailable:
            log.error("alert group %s not stored (store unreachable)", group.group_key)
        except Exception:
            log.exception("alert group %s not stored", group.group_key)
        await self._audit(group, thread)
        if thread is not None:
            self.refresh(thread.id)
        return thread

    def refresh(self, thread_id: int) -> None:
        """Show the thread's current state (AlertMessages seam for commands)."""
        self.metrics.slack_posts_pending.set(self.pacer.pending())
        if self.client is None or self.channel is None:
            return
        self.pacer.submit(self.channel, str(thread_id), lambda: self._send(thread_id))

    async def _send(self, thread_id: int) -> None:
        assert self.client is not None and self.channel is not None
        store = self.runtime.services.store
        thread = await alert_store.get_thread(store, thread_id)
        message = render_message(alert_reply(thread, self.t, self.runtime.settings.zone))
        if thread.ts is None or thread.channel is None:
            if not await alert_store.claim_posting(store, thread_id, now=self.now()):
                raise AnotherReplicaPosts(f"alert thread {thread_id}")
            try:
                answer = await self._call("chat.postMessage", channel=self.channel, **message)
            except BaseException:
                await alert_store.release_posting(store, thread_id)
                raise
            channel, ts = str(answer.get("channel") or self.channel), str(answer["ts"])
            await alert_store.remember_message(store, thread_id, channel=channel, ts=ts)
            return
        await self._call("chat.update", channel=thread.channel, ts=thread.ts, **message)

    async def _call(self, method: str, **params: object) -> dict[str, object]:
        assert self.client is not None
        try:
            response = await self.client.api_call(method, json=params)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            self.metrics.count_slack_error(method, error)
            raise
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def _audit(self, group: AlertGroup, thread: alert_store.AlertThread | None) -> None:
        request = Request(
            actor=WEBHOOK_ACTOR,
            text=f"alert {group.status} {group.name}",
            source="webhook",
            channel=self.channel,
        )
        detail = {
            "group_key": group.group_key[:500],
            "alerts": group.alert_count,
            "firing": len(group.firing),
            "severity": group.severity,
        }
        if thread is not None:
            detail["alert_id"] = thread.id
        record = audit_record(request, "alert", "alert_received", group.status, detail=detail)
        try:
            await self.runtime.services.audit.record(record)
        except Exception:
            log.exception("alert receipt not audited")

    async def close(self) -> None:
        """Finish what was received, send what is queued (bounded), then stop."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        try:
            await asyncio.wait_for(self.pacer.drain(), timeout=10)
        except TimeoutError:
            log.warning("alert messages still queued at shutdown: %d", self.pacer.pending())
        await self.pacer.close()


def open_alert_desk(runtime: Runtime, metrics: Metrics) -> AlertDesk:
    """The process's AlertDesk, also given to commands as their alert-message seam."""
    client = alert_client(runtime) if runtime.settings.slack.bot_token is not None else None
    desk = AlertDesk(runtime, metrics, client)
    runtime.services.alert_messages = desk
    return desk
