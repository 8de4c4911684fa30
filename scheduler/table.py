"""The schedule table: each schedule's name, cron line, what it runs, where it reports, its grace time.

Names and defaults follow SPEC (keys under `schedules` in the configuration override the cron line).
A schedule runs one or more command lines, in order, through the same pipeline as a typed command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

# Where a run's reply is shown: a key of `channels` in the configuration, or None (recorded only).
ChannelKey = str | None


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    cron: str  # five fields, in the configured time zone
    commands: tuple[str, ...]  # command lines, run in this order
    channel: ChannelKey
    grace: timedelta  # a fire missed by at most this much is still run at start-up
    second: str = "0"  # the cron's seconds field: tests fire every second with "*"

    def with_cron(self, cron: str) -> ScheduleSpec:
        return replace(self, cron=cron)


def _spec(
    name: str, cron: str, commands: tuple[str, ...], channel: ChannelKey, grace: timedelta
) -> ScheduleSpec:
    return ScheduleSpec(name=name, cron=cron, commands=commands, channel=channel, grace=grace)


MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

DEFAULT_SCHEDULES: tuple[ScheduleSpec, ...] = (
    _spec("probe", "* * * * *", ("probe",), None, timedelta(seconds=30)),
    _spec("morning_health", "0 9 * * *", ("health",), "ops", 2 * HOUR),
    # its last step keeps yesterday's security counts, so reports need not read old logs again
    _spec("nightly_backup", "0 2 * * *", ("backup", "db maintain", "security keep"), "ops", 3 * HOUR),
    _spec("backup_verify", "0 4 * * *", ("backup verify latest",), "ops", 3 * HOUR),
    _spec("wal_check", "0 */6 * * *", ("db stats",), "ops", HOUR),  # its WAL archiving and lag lines
    _spec("tls_check", "0 8 * * *", ("health tls",), "ops", 6 * HOUR),
    _spec("weekly_report", "0 9 * * 1", ("report weekly",), "reports", 12 * HOUR),
    _spec("monthly_report", "0 9 1 * *", ("report monthly",), "reports", 24 * HOUR),
    _spec("approval_sweep", "* * * * *", ("approvals sweep",), None, timedelta(seconds=30)),
    _spec("escalation", "* * * * *", ("incident escalate",), None, timedelta(seconds=30)),
)
# Only when hosts (an Ansible inventory) are configured.
FILE_BACKUP = _spec("file_backup", "0 3 * * 0", ("backup files",), "ops", 3 * HOUR)  # Sundays 03:00

SCHEDULE_NAMES: tuple[str, ...] = (*(s.name for s in DEFAULT_SCHEDULES), FILE_BACKUP.name)


def build_table(overrides: Mapping[str, str], *, hosts_configured: bool = False) -> tuple[ScheduleSpec, ...]:
    """The defaults with the configured cron lines laid over them (configuration validates the names).

    An empty cron line ("" or "off") turns a schedule off.
    """
    specs: Sequence[ScheduleSpec] = (
        (*DEFAULT_SCHEDULES, FILE_BACKUP) if hosts_configured else DEFAULT_SCHEDULES
    )
    table = []
    for spec in specs:
        cron = overrides.get(spec.name, spec.cron).strip()
        if cron in ("", "off"):
            continue
        table.append(spec.with_cron(cron))
    return tuple(table)


def find(table: Sequence[ScheduleSpec], name: str) -> ScheduleSpec | None:
    return next((spec for spec in table if spec.name == name), None)
