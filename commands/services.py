"""The clients a command may use, built once per process by bot/runtime.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import httpx
import redis.asyncio as aioredis

from commands.access import Access
from commands.policy import Policy
from core.config import Settings
from core.errors import RunbookFailed
from runbooks.health import BotHost
from store.audit import AuditLog
from store.coordination import Coordination
from store.db import Store
from store.jobs import Instance
from store.schedule_runs import ScheduleRunRecord


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    schedules: ScheduleSource | None = None  # set by bot/scheduling.py

    @property
    def access(self) -> Access:
        """The one authorisation rule, over this process's roles."""
        return Access(self.policy)

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
