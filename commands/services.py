"""The clients a command may use, built once per process by bot/runtime.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
import redis.asyncio as aioredis
from psycopg.conninfo import conninfo_to_dict

from commands.access import Access
from commands.policy import Policy
from core.config import Settings
from core.errors import RunbookFailed
from core.reply import Reply
from runbooks.health import BotHost
from runbooks.pg_tools import database_name
from store.audit import AuditLog
from store.coordination import Coordination
from store.db import Store
from store.jobs import Instance
from store.schedule_runs import ScheduleRunRecord


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlertMessages(Protocol):
    """The bot's seam for alert group messages: a command changed a thread, show it again."""

    def refresh(self, thread_id: int) -> None: ...


class Notifier(Protocol):
    """How a command reaches a channel other than the asker's (bot/notify.py: Slack or console).

    Each method returns a reference to what it made and raises when nothing went out.
    """

    async def post(self, channel: str, reply: Reply) -> dict[str, Any]:
        """Post a message; {"channel": id, "ts": ts}."""
        ...

    async def open_channel(self, name: str, members: Sequence[str]) -> dict[str, Any]:
        """Create a channel and invite these user IDs; {"channel": id, "name": name}."""
        ...

    async def upload(self, channel: str, filename: str, content: str, *, title: str) -> dict[str, Any]:
        """Share a text file in a channel; {"file": id} or {"path": where it was saved}."""
        ...


class NoNotifier:
    """Nothing connects this process to Slack: every notice fails and says so."""

    async def post(self, channel: str, reply: Reply) -> dict[str, Any]:
        raise RunbookFailed("notify.unavailable")

    async def open_channel(self, name: str, members: Sequence[str]) -> dict[str, Any]:
        raise RunbookFailed("notify.unavailable")

    async def upload(self, channel: str, filename: str, content: str, *, title: str) -> dict[str, Any]:
        raise RunbookFailed("notify.unavailable")


class ScheduleLike(Protocol):
    """One schedule as `schedule list` shows it (scheduler.listing.ScheduleStatus has these)."""

    @property
    def name(self) -> str: ...
    @property
    def cron(self) -> str: ...
    @property
    def commands(self) -> tuple[str, ...]: ...
    @property
    def next_fire(self) -> datetime | None: ...
    @property
    def last_run(self) -> ScheduleRunRecord | None: ...


class Directory(Protocol):
    """Which of the user groups that roles name a person is in (bot/membership.py asks Slack)."""

    async def groups_of(self, user_id: str) -> frozenset[str]: ...


class NoDirectory:
    """Outside Slack (the console, the scheduler) nobody is in a user group."""

    async def groups_of(self, user_id: str) -> frozenset[str]:
        return frozenset()


# The schedules as of `now`; the process wiring supplies it (commands cannot import scheduler/).
ScheduleSource = Callable[[datetime], Awaitable[Sequence[ScheduleLike]]]


@dataclass
class Services:
    settings: Settings
    store: Store
    coordination: Coordination
    audit: AuditLog
    http: httpx.AsyncClient
    policy: Policy
    instance: Instance = field(default_factory=Instance.current)
    bot_host: BotHost = field(default_factory=BotHost)  # what `health` measures locally
    alert_messages: AlertMessages | None = None  # set by `serve` when it keeps alert messages
    notifier: Notifier = field(default_factory=NoNotifier)  # set by bot/ (Slack, or the console)
    clock: Callable[[], datetime] = utc_now  # incidents' times; a test sets its own
    schedules: ScheduleSource | None = None  # set by bot/scheduling.py
    directory: Directory = field(default_factory=NoDirectory)  # set by bot/slack_app.py

    @property
    def access(self) -> Access:
        """The one authorisation rule, over this process's roles."""
        return Access(self.policy)

    def target_place(self) -> str:
        """Where risky work lands, with no secret in it: the target database's host and name, the
        cache's host and database number, the API's host and the inventory. An approval is bound
        to it: a bot restarted on another target does not run what was approved for the first.
        Ports and socket paths are left out (an embedded demo server may come back on others)."""
        target = self.settings.target
        database = "-"
        if target.database_url is not None:
            dsn = target.database_url.get_secret_value()
            host = str(conninfo_to_dict(dsn).get("host") or "")
            database = f"{'local' if not host or host.startswith('/') else host}/{database_name(dsn) or '-'}"
        cache = "-"
        if target.redis_url is not None:
            url = urlsplit(target.redis_url.get_secret_value())
            socket = url.scheme == "unix"  # its path is the socket's; the database is in ?db=
            db = parse_qs(url.query).get("db", [""])[0] or ("" if socket else url.path.lstrip("/"))
            cache = f"{'local' if socket else url.hostname or 'local'}/{db or '0'}"
        api = urlsplit(target.api_url).hostname or "-" if target.api_url else "-"
        inventory = str(self.settings.hosts.inventory or "-")
        return f"db={database} cache={cache} api={api} inventory={inventory}"

    def target_database_url(self) -> str:
        if self.settings.target.database_url is None:
            raise RunbookFailed("target.not_configured", what="GARDEN_DATABASE_URL")
        return self.settings.target.database_url.get_secret_value()

    def target_redis(self) -> aioredis.Redis:
        """A fresh client for the operated system's cache; the caller closes it."""
        if self.settings.target.redis_url is None:
            raise RunbookFailed("target.not_configured", what="GARDEN_REDIS_URL")
        return aioredis.Redis.from_url(
            self.settings.target.redis_url.get_secret_value(),
            socket_connect_timeout=self.settings.health.timeout_seconds,
            socket_timeout=self.settings.health.timeout_seconds,
        )
