"""What feeds the process's metrics from outside a request: the job board and the backup catalog.

- every finished job: `observe_job(kind, outcome, seconds)`;
- the newest good backup: read from the catalog at start-up and after each good backup, so
  GardenBackupMissing stops firing once a backup exists (and fires when none is recent);
- the audit spool and the alert posts waiting: read at each scrape (`at_scrape`).
"""

from __future__ import annotations

import asyncio
import logging

from bot.metrics import Metrics
from bot.runtime import Runtime
from commands.job_watch import JobEnd
from core.errors import StoreUnavailable
from store.backups import newest_good_backup

log = logging.getLogger(__name__)

BACKUP_KINDS = frozenset({"backup"})  # jobs after which the catalog may hold a newer good backup


class MetricsFeed:
    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._catalog_read = False

    async def start(self) -> None:
        """Subscribe to job ends and read the catalog once (the store may be down: then later)."""
        self.runtime.pipeline.jobs.on_end(self.job_ended)
        await self.read_backup_catalog()

    def job_ended(self, end: JobEnd) -> None:
        self.metrics.observe_job(end.kind or "unknown", end.outcome, end.seconds)
        if end.kind in BACKUP_KINDS and end.outcome == "succeeded":
            task = asyncio.create_task(self.read_backup_catalog(), name="metrics-backup-catalog")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def read_backup_catalog(self) -> None:
        try:
            newest = await newest_good_backup(self.runtime.services.store)
        except StoreUnavailable:
            log.warning("last good backup unknown for /metrics (store unreachable)")
            return
        self.metrics.set_last_good_backup(newest.finished_at if newest is not None else None)
        self._catalog_read = True

    async def at_scrape(self, alert_posts_pending: int) -> None:
        if not self._catalog_read:  # the store was down at start-up: try again now
            await self.read_backup_catalog()
        self.metrics.set_audit_spool(self.runtime.services.audit.spooled())
        self.metrics.slack_posts_pending.set(alert_posts_pending)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
