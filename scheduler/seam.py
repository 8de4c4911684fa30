"""What the scheduler hands to the pipeline, and what it gets back.

The scheduler knows no command: it submits command lines as the system actor `scheduler`, and
whoever builds it (bot/runtime.py) supplies `Submit`, which runs the line through the same pipeline
as a typed command (authorised, locked, audited), shows the reply in the run's channel, waits for a
background job to end, and says how it went.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Trigger = Literal["cron", "catch_up", "manual"]
OutcomeStatus = Literal["succeeded", "failed", "refused", "pending"]

# Now, timezone-aware. Injected so tests decide what time it is.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ScheduledRun:
    """One command line of one scheduled fire."""

    schedule: str  # e.g. "nightly_backup"
    command: str  # the command line as typed, e.g. "backup", "report weekly"
    channel: str | None  # a key of `channels` ("ops", "reports"), None: shown nowhere, only audited
    fire_time: datetime  # the cron time this run belongs to (aware)
    run_id: int  # the schedule_runs row
    trigger: Trigger = "cron"
    step: int = 0  # index of this command in the schedule's list


@dataclass(frozen=True)
class RunOutcome:
    """How one submitted command line ended (after its job, when it had one)."""

    status: OutcomeStatus
    text: str = ""  # a short summary for `schedule list` (no secrets: it is stored)
    job_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


Submit = Callable[[ScheduledRun], Awaitable[RunOutcome]]
