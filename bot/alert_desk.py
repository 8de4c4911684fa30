"""Alert groups to Slack: one message per group in the alerts channel, kept current.

`receive()` stores the group's latest state (store/alerts.py), audits its receipt as the system
actor "webhook", and queues the group's message on a SlackPacer keyed by the thread: while the
channel is behind, newer states of a group merge into one send. Before its turn to send, a send
reads the thread (so it shows the latest state whichever replica stored it) and claims the first
post when the thread has none (one replica posts it); only the Slack call is paced, and the
message's ts is stored after it, in the background. A replica keeps the threads it has seen in
memory; after each send it reads the thread once more and sends again when another replica
stored a newer state meanwhile (latest state wins across replicas too).

When the store is down (or frozen) as a notification arrives, the alert is posted anyway: on the
group's message when this replica knows it, else as a message of its own that says it is not
stored yet (no id, no Acknowledge). The notification waits in memory (latest state per group) and
is stored when the store is back; then that message becomes the group's message, or, when the
group already had one, is deleted and the group's message updated: nothing lost, one message per
group. Commands reach the desk through `refresh()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

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
from bot.slack_pacing import Send, SlackPacer
from commands.base import Actor, Request
from commands.boundary import audit_record
from core.alerts import AlertGroup
from core.errors import NotFound, StoreUnavailable
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


KNOWN_THREADS = 1000  # threads a replica keeps in memory (most recent first out)
RECONCILE_EVERY_S = 2.0  # how often a replica holding unstored notifications tries the store


@dataclass
class Unstored:
    """A group's latest notification received while the store was down, and its message."""

    group: AlertGroup
    first_at: datetime
    received_at: datetime
    notifications: int = 0
    stored: bool = False
    channel: str | None = None
    ts: str | None = None

    def provisional(self) -> alert_store.AlertThread:
        group = self.group
        return alert_store.AlertThread(
            0,
            group.group_key,
            group.status,
            group.model_dump(mode="json", by_alias=True),
            self.notifications,
            self.first_at,
            self.received_at,
            self.channel,
            self.ts,
            None,
            None,
        )


def _signature(thread: alert_store.AlertThread) -> tuple[object, ...]:
    """What the message shows that may change: the state received, and its acknowledgement."""
    return (thread.notifications, thread.received_at, thread.acked_by, thread.acked_at)


async def _nothing() -> None:
    return None


class AlertDesk:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        client: AsyncWebClient | None,
        *,
        per_second: float = 1.0,
        reconcile_every_s: float = RECONCILE_EVERY_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.client = client
        self.channel = runtime.settings.channels.alerts
        self.now = now
        self.pacer = SlackPacer(per_second, observe=metrics.observe_slack_pacing)
        self.t = Translator(runtime.settings.locale)
        self.reconcile_every_s = reconcile_every_s
        self._tasks: set[asyncio.Task[object]] = set()
        self._known: OrderedDict[str, alert_store.AlertThread] = OrderedDict()  # by group key
        self._shown: dict[int, alert_store.AlertThread] = {}  # thread id: state last sent
        self._claimed: dict[int, datetime] = {}  # threads whose first post this replica holds, until
        self._unsaved: dict[int, tuple[str, str]] = {}  # thread id: (channel, ts) not stored yet
        self.unstored: dict[str, Unstored] = {}  # by group key
        self._refresh_later: set[int] = set()  # threads to show once the store is back
        self._reconciler: asyncio.Task[None] | None = None
        if client is None or self.channel is None:
            log.warning("alerts are stored and audited but not posted: Slack or channels.alerts not set")

    def accept(self, group: AlertGroup) -> None:
        """Take a notification now; store, audit and Slack happen in the background."""
        self.metrics.count_alert_notification(group.status)
        self._background(self.receive(group), f"alert-{group.group_key[:40]}")

    def _background(self, work: Coroutine[object, object, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def receive(self, group: AlertGroup) -> alert_store.AlertThread | None:
        services = self.runtime.services
        thread: alert_store.AlertThread | None = None
        at = self.now()
        try:
            thread = await alert_store.record_notification(services.store, group, at=at)
        except StoreUnavailable:
            log.error("alert group %s not stored (store unreachable): posted, stored later", group.group_key)
            self._keep_unstored(group, at)
        except Exception:
            log.exception("alert group %s not stored", group.group_key)
        await self._audit(group, thread)
        if thread is not None:
            entry = self.unstored.get(group.group_key)
            if entry is not None:
                entry.stored = True  # a newer state than the one kept is stored now
            self.refresh(self._remember(thread).id)
        return thread

    def refresh(self, thread_id: int) -> None:
        """Show the thread's current state (AlertMessages seam for commands)."""
        self.metrics.slack_posts_pending.set(self.pacer.pending())
        if self.client is None or self.channel is None:
            return
        self.pacer.submit_prepared(self.channel, str(thread_id), lambda: self._prepare(thread_id))

    # --- the group's message, from the stored thread -------------------------------------------

    async def _prepare(self, thread_id: int) -> Send:
        """Before the pace wait: the thread's latest state, and the first post claimed."""
        assert self.channel is not None
        store = self.runtime.services.store
        try:
            thread = self._remember(await alert_store.get_thread(store, thread_id))
        except StoreUnavailable:
            known = self._known_thread(thread_id)
            if known is None or known.ts is None:
                return self._when_store_is_back(thread_id)
            thread = known  # the store is down: what this replica knows is the latest it can show
        message = render_message(alert_reply(thread, self.t, self.runtime.settings.zone))
        if thread.ts is not None and thread.channel is not None:
            channel, ts = thread.channel, thread.ts
            return lambda: self._update(thread, channel, ts, message)
        try:  # this replica's own lease (a failed post kept it) is renewed
            lease = await alert_store.claim_posting(
                store, thread_id, now=self.now(), renewing=self._claimed.get(thread_id)
            )
        except StoreUnavailable:
            return self._when_store_is_back(thread_id)
        if lease is None:
            raise AnotherReplicaPosts(f"alert thread {thread_id}")
        self._claimed[thread_id] = lease
        return lambda: self._post(thread, message)

    def _when_store_is_back(self, thread_id: int) -> Send:
        """Nothing to show without the store: the reconciler shows the thread once it is back,
        instead of the pacer's retries running out meanwhile."""
        self._refresh_later.add(thread_id)
        self._reconcile_later()
        return _nothing

    async def _post(self, thread: alert_store.AlertThread, message: dict[str, Any]) -> None:
        assert self.channel is not None
        try:
            answer = await self._call("chat.postMessage", channel=self.channel, **message)
        except BaseException:
            if await self._release(thread.id):  # before any retry claims it again
                self._claimed.pop(thread.id, None)
            raise  # not released (store down): this replica still holds the lease for its retry
        channel, ts = str(answer.get("channel") or self.channel), str(answer["ts"])
        self._claimed.pop(thread.id, None)
        self._remember(replace(thread, channel=channel, ts=ts))
        self._unsaved[thread.id] = (channel, ts)
        self._sent(thread)

    async def _update(
        self, thread: alert_store.AlertThread, channel: str, ts: str, message: dict[str, Any]
    ) -> None:
        await self._call("chat.update", channel=channel, ts=ts, **message)
        self._sent(thread)

    def _sent(self, thread: alert_store.AlertThread) -> None:
        """After the Slack call, off the channel's pace: store the ts, check nothing newer came."""
        if len(self._shown) > KNOWN_THREADS:
            self._shown.clear()
        self._shown[thread.id] = thread
        self._background(self._after_send(thread.id), f"alert-sent-{thread.id}")

    async def _after_send(self, thread_id: int) -> None:
        store = self.runtime.services.store
        try:
            if thread_id in self._unsaved:
                channel, ts = self._unsaved[thread_id]
                await alert_store.remember_message(store, thread_id, channel=channel, ts=ts)
                self._unsaved.pop(thread_id, None)
            current = await alert_store.get_thread(store, thread_id)
        except Exception as exc:  # the store is down: the reconciler stores the ts later
            log.warning("alert thread %s: not checked after sending: %s", thread_id, exc)
            self._reconcile_later()
            return
        shown = self._shown.get(thread_id)
        if (
            shown is not None
            and _signature(current) != _signature(shown)
            and current.received_at >= shown.received_at
        ):
            self.refresh(thread_id)  # another replica stored a newer state while this one sent

    async def _release(self, thread_id: int) -> bool:
        try:
            await alert_store.release_posting(self.runtime.services.store, thread_id)
        except Exception as exc:  # the lease runs out by itself
            log.warning("alert thread %s: posting lease not released: %s", thread_id, exc)
            return False
        return True

    def _remember(self, thread: alert_store.AlertThread) -> alert_store.AlertThread:
        """Merge what the store says with what this replica knows (a ts not stored yet, a state
        received while the store was down) and keep the result."""
        known = self._known.get(thread.group_key)
        if known is not None and known.id in (thread.id, 0):
            if thread.ts is None and known.ts is not None:
                thread = replace(thread, channel=known.channel, ts=known.ts)
            if known.received_at > thread.received_at:
                thread = replace(
                    thread, payload=known.payload, status=known.status, received_at=known.received_at
                )
        self._known[thread.group_key] = thread
        self._known.move_to_end(thread.group_key)
        while len(self._known) > KNOWN_THREADS:
            self._known.popitem(last=False)
        return thread

    def _known_thread(self, thread_id: int) -> alert_store.AlertThread | None:
        return next((t for t in reversed(self._known.values()) if t.id == thread_id), None)

    async def _call(self, method: str, **params: object) -> dict[str, object]:
        assert self.client is not None
        try:
            response = await self.client.api_call(method, json=params)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            self.metrics.count_slack_error(method, error)
            raise
        return dict(response.data) if isinstance(response.data, dict) else {}

    # --- notifications received while the store is down ----------------------------------------

    def _keep_unstored(self, group: AlertGroup, at: datetime) -> None:
        """Show the notification now and keep it (latest state per group) for the store."""
        entry = self.unstored.get(group.group_key)
        if entry is None:
            entry = self.unstored[group.group_key] = Unstored(group, at, at)
        entry.group, entry.received_at, entry.stored = group, at, False
        entry.notifications += 1
        self._reconcile_later()
        if self.client is None or self.channel is None:
            return
        known = self._known.get(group.group_key)
        if known is not None and known.id != 0 and known.ts is not None:
            self._remember(self._with_state(known, group, at))  # this replica has its message
            self.refresh(known.id)
            return
        key = f"unstored:{group.group_key}"
        self.pacer.submit_prepared(self.channel, key, lambda: self._prepare_unstored(group.group_key))

    @staticmethod
    def _with_state(
        thread: alert_store.AlertThread, group: AlertGroup, at: datetime
    ) -> alert_store.AlertThread:
        acked = not group.fires_anew_after(thread.group)
        return replace(
            thread,
            payload=group.model_dump(mode="json", by_alias=True),
            status=group.status,
            received_at=at,
            notifications=thread.notifications + 1,
            acked_by=thread.acked_by if acked else None,
            acked_at=thread.acked_at if acked else None,
        )

    async def _prepare_unstored(self, group_key: str) -> Send:
        """Post (or update) the message of a group received while the store was down."""
        entry = self.unstored.get(group_key)
        if entry is None or entry.stored:
            return _nothing  # stored meanwhile: the group's own message shows it
        reply = alert_reply(entry.provisional(), self.t, self.runtime.settings.zone, stored=False)
        message = render_message(reply)
        if entry.ts is not None and entry.channel is not None:
            channel, ts = entry.channel, entry.ts
            return lambda: self._call("chat.update", channel=channel, ts=ts, **message)

        async def post() -> None:
            answer = await self._call("chat.postMessage", channel=self.channel, **message)
            entry.channel, entry.ts = str(answer.get("channel") or self.channel), str(answer["ts"])

        return post

    def _reconcile_later(self) -> None:
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.create_task(self._reconcile(), name="alert-reconcile")

    async def _reconcile(self) -> None:
        """Until everything kept while the store was down is stored and settled in Slack."""
        while self.unstored or self._unsaved or self._refresh_later:
            await asyncio.sleep(self.reconcile_every_s)
            try:
                await self._reconcile_once()
            except StoreUnavailable:
                continue
            except Exception:
                log.exception("alert notifications not reconciled yet")

    async def _reconcile_once(self) -> None:
        store = self.runtime.services.store
        for thread_id, (channel, ts) in list(self._unsaved.items()):
            await alert_store.remember_message(store, thread_id, channel=channel, ts=ts)
            self._unsaved.pop(thread_id, None)
        for thread_id in list(self._refresh_later):
            try:
                await alert_store.get_thread(store, thread_id)  # raises while the store is still down
            except NotFound:
                self._refresh_later.discard(thread_id)
                continue
            self._refresh_later.discard(thread_id)
            self.refresh(thread_id)
        for group_key, entry in list(self.unstored.items()):
            if entry.stored:
                thread = await alert_store.thread_of(store, group_key)
            else:
                thread = await alert_store.record_notification(
                    store, entry.group, at=entry.received_at, notifications=entry.notifications
                )
                entry.stored = True
            if thread is None:
                continue
            self._remember(thread)
            if self.client is None or self.channel is None:
                self.unstored.pop(group_key, None)
                continue
            settle = partial(self._prepare_settle, group_key, thread.id)
            self.pacer.submit_prepared(self.channel, f"unstored:{group_key}", settle)

    async def _prepare_settle(self, group_key: str, thread_id: int) -> Send:
        """The group is stored again: its message is the one posted meanwhile when it had none,
        else that one is deleted; either way the group's message is updated to its state."""
        entry = self.unstored.get(group_key)
        if entry is None or not entry.stored:
            return _nothing  # settled already, or a newer notification is waiting for the store
        store = self.runtime.services.store
        thread = await alert_store.get_thread(store, thread_id)
        if entry.ts is None or entry.channel is None or thread.ts == entry.ts:
            return self._settled(group_key, thread_id)
        adopted = await alert_store.adopt_message(
            store, thread_id, channel=entry.channel, ts=entry.ts, now=self.now()
        )
        if adopted:
            self._remember(replace(thread, channel=entry.channel, ts=entry.ts))
            return self._settled(group_key, thread_id)
        channel, ts = entry.channel, entry.ts

        async def delete_copy() -> None:
            await self._call("chat.delete", channel=channel, ts=ts)
            await self._settled(group_key, thread_id)()

        return delete_copy

    def _settled(self, group_key: str, thread_id: int) -> Send:
        async def settle() -> None:
            self.unstored.pop(group_key, None)
            self.refresh(thread_id)

        return settle

    # --- audit and shutdown ---------------------------------------------------------------------

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
        """Finish what was received, send what is queued (bounded), then stop. Notifications
        still waiting for the store are in the audit spool; Alertmanager repeats the groups."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
        if self.unstored:
            log.warning("alert groups received while the store was down, not stored: %d", len(self.unstored))
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
