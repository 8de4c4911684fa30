"""The monthly chores of the manual, for `report monthly`: security updates waiting on each host
(`apt list --upgradable`), disk usage per mount, and database backups and file archives kept past
their retentions (backup.retention_days, backup.files_retention_days).

The hosts part runs only where `hosts.inventory` is configured; each part that cannot be read
says so in the report instead of failing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from commands.services import Services
from core.errors import GardenBotError
from core.i18n import Translator
from core.reply import Element, Header, Level, Table, Text
from core.secrets import mask_text
from runbooks import hosts
from runbooks.backups import archives_past_retention, backups_past_retention
from runbooks.hosts import HostChores, HostsReport
from runbooks.playbook_runner import HostsSetup
from store.backups import BackupRecord, list_backups
from store.releases import FileArchiveRecord, list_file_archives

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chores:
    hosts: HostsReport[HostChores] | None  # None: the playbook could not run at all
    hosts_error: str | None
    past_retention: tuple[BackupRecord, ...] | None  # None: the catalog could not be read
    retention_days: int
    archives_past_retention: tuple[FileArchiveRecord, ...] | None  # None: the catalog could not be read
    files_retention_days: int
    disk_percent: int  # the warning level (thresholds.disk_percent)


async def gather_chores(services: Services, *, now: datetime) -> Chores | None:
    """The chores, or None when no hosts are configured (the monthly report then has no such part)."""
    settings = services.settings
    if settings.hosts.inventory is None:
        return None
    setup = HostsSetup(inventory=settings.hosts.inventory, vars=settings.hosts.vars.model_dump(mode="json"))
    report: HostsReport[HostChores] | None = None
    error: str | None = None
    try:
        report = await hosts.monthly_chores(setup=setup)
    except GardenBotError as exc:
        error = Translator(settings.locale)(exc.message_key, **exc.params)
    past: tuple[BackupRecord, ...] | None = None
    archives: tuple[FileArchiveRecord, ...] | None = None
    kept = settings.backup
    try:
        good = await list_backups(services.store, limit=None, statuses=("good",))
        past = tuple(backups_past_retention(good, retention_days=kept.retention_days, now=now))
        files = await list_file_archives(services.store, limit=None, statuses=("good",))
        archives = tuple(archives_past_retention(files, retention_days=kept.files_retention_days, now=now))
    except GardenBotError as exc:
        log.warning("monthly chores: backup catalog unavailable (%s)", type(exc).__name__)
    return Chores(
        hosts=report,
        hosts_error=error,
        past_retention=past,
        retention_days=kept.retention_days,
        archives_past_retention=archives,
        files_retention_days=kept.files_retention_days,
        disk_percent=settings.thresholds.disk_percent,
    )


def chores_elements(t: Translator, chores: Chores) -> list[Element]:
    """A table per host (security updates, upgradable packages, disks) and the backups past retention."""
    elements: list[Element] = [Header(t("chores.header"))]
    if chores.hosts is not None:
        elements.append(_hosts_table(t, chores, chores.hosts))
        elements += [
            Text(t("hosts.problem", host=host, problem=mask_text(text)[:300]))
            for host, text in chores.hosts.problems.items()
        ]
    else:
        elements.append(Text(t("chores.hosts_failed", error=mask_text(chores.hosts_error or "")[:300])))
    elements.append(Text(_retention_line(t, chores)))
    elements.append(Text(_files_retention_line(t, chores)))
    return elements


def _hosts_table(t: Translator, chores: Chores, report: HostsReport[HostChores]) -> Table:
    rows: list[tuple[str, ...]] = []
    levels: list[Level] = []
    for host, found in report.by_host.items():
        full = [d for d in found.disks if d.percent >= chores.disk_percent]
        disks = ", ".join(f"{d.mount} {d.percent:.0f}%" for d in found.disks) or "-"
        security = "-" if found.security is None else str(found.security)
        upgradable = t("chores.no_apt") if found.upgradable is None else str(found.upgradable)
        rows.append((host, security, upgradable, disks))
        levels.append("fail" if full else "warn" if found.security else "ok")
    columns = (
        t("hosts.col.host"),
        t("chores.col.security"),
        t("chores.col.upgradable"),
        t("chores.col.disks"),
    )
    return Table(columns=columns, rows=tuple(rows), levels=tuple(levels))


def _retention_line(t: Translator, chores: Chores) -> str:
    if chores.past_retention is None:
        return t("chores.retention_unknown")
    if not chores.past_retention:
        return t("chores.retention_none", days=chores.retention_days)
    ids = ", ".join(f"#{b.id}" for b in chores.past_retention[:20])
    return t("chores.retention_past", days=chores.retention_days, count=len(chores.past_retention), ids=ids)


def _files_retention_line(t: Translator, chores: Chores) -> str:
    past, days = chores.archives_past_retention, chores.files_retention_days
    if past is None:
        return t("chores.files_retention_unknown")
    if not past:
        return t("chores.files_retention_none", days=days)
    ids = ", ".join(f"#{a.id}" for a in past[:20])
    return t("chores.files_retention_past", days=days, count=len(past), ids=ids)
