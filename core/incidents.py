"""Incidents as data, and the rules that need no store: severities, input checks, deadlines,
who to page and when, durations, and the name of an incident's own Slack channel.

Time is always passed in (`now`, `at`): the rules are the same under a test's clock and the real one.

Escalation (SPEC, the manual's rule), per unresolved incident:
- at declaration the severity's `incidents.notify` levels are paged (P1 1-3, P2 1-2, P3/P4 1);
- not acknowledged by `respond_minutes` after declaration: the level after the highest notified one;
- not resolved `unresolved_minutes` after declaration: `unresolved_to` (level 3).
A level is paged at most once per incident; a level with nobody configured is never due.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from core.config import SEVERITIES, Contact, Settings, Severity
from core.errors import UsageError

TITLE_MAX = 200
TEXT_MAX = 3000  # impact, updates, summaries: a Slack section holds 3000 characters
CHANNEL_NAME_MAX = 80  # Slack's limit for a channel name
LEVELS = (1, 2, 3, 4)
INCIDENT_REF = re.compile(r"^(?:inc-?|#)?(\d{1,12})$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

Status = Literal["open", "acknowledged", "resolved"]
PageReason = Literal["declared", "unacknowledged", "unresolved"]
# What a timeline line records. `action` is any bot action (restore, restart...) run while it was open.
TimelineKind = Literal[
    "declared",
    "acknowledged",
    "update",
    "paged",
    "page_failed",
    "notice_failed",
    "mail_sent",
    "mail_failed",
    "channel_created",
    "channel_failed",
    "action",
    "resolved",
]


@dataclass(frozen=True)
class Incident:
    id: int
    severity: Severity
    title: str
    impact: str | None
    status: Status
    declared_by: str
    declared_at: datetime
    acked_by: str | None = None
    acked_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    summary: str | None = None
    channel_ref: dict[str, Any] = field(default_factory=dict)  # the inc-<n>-<slug> channel, if opened
    message_ref: dict[str, Any] = field(default_factory=dict)  # the notice in the incidents channel
    postmortem: str | None = None
    # Who else stood behind the declaration and the acknowledgement: an admin acting as the Slack
    # user at a console, and that console's OS login (NULL from Slack, the demo and before 0013).
    declared_impersonated_by: str | None = None
    declared_from_os_login: str | None = None
    acked_impersonated_by: str | None = None
    acked_from_os_login: str | None = None

    @property
    def ref(self) -> str:
        return incident_ref(self.id)

    @property
    def is_open(self) -> bool:
        """Not resolved yet (acknowledged incidents are still open)."""
        return self.status != "resolved"

    @property
    def holder(self) -> str | None:
        """Who holds it: whoever acknowledged it."""
        return self.acked_by

    def declared_by_people(self) -> frozenset[str]:
        """Every person behind the declaration (see `people_behind`)."""
        return people_behind(self.declared_by, self.declared_impersonated_by, self.declared_from_os_login)

    def acked_by_people(self) -> frozenset[str]:
        """Every person behind the acknowledgement; nobody while it is not acknowledged."""
        if self.acked_by is None:
            return frozenset()
        return people_behind(self.acked_by, self.acked_impersonated_by, self.acked_from_os_login)


def people_behind(
    user: str, impersonated_by: str | None = None, os_login: str | None = None
) -> frozenset[str]:
    """Every person behind one act: the Slack user, an admin who acted as them at a console, and that
    console's OS login (as `os:<login>`, so a login is never taken for a Slack ID)."""
    people = {p for p in (user, impersonated_by) if p}
    if os_login:
        people.add(f"os:{os_login}")
    return frozenset(people)


@dataclass(frozen=True)
class TimelineEntry:
    id: int
    incident_id: int
    at: datetime
    actor: str
    kind: TimelineKind
    text: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One level to page for one incident, and since when it has been due."""

    incident_id: int
    level: int
    reason: PageReason
    due_at: datetime
    contacts: tuple[Contact, ...] = ()


@dataclass(frozen=True)
class Durations:
    """declared → acknowledged, acknowledged → resolved, declared → resolved (or → now while open)."""

    duration: timedelta
    time_to_acknowledge: timedelta | None
    time_to_resolve: timedelta | None


# --- input --------------------------------------------------------------------------------------


def parse_severity(raw: str) -> Severity:
    """P1-P4 in any case; anything else is a usage error naming what was given."""
    value = raw.strip().upper()
    if value not in SEVERITIES:
        raise UsageError("incident.bad_severity", severity=_shown(raw), severities=", ".join(SEVERITIES))
    return cast(Severity, value)


def check_title(raw: str) -> str:
    """The title as stored: trimmed, 1 to TITLE_MAX characters, no control characters."""
    title = " ".join(raw.split())  # a pasted line break or tab becomes a space
    if not title:
        raise UsageError("incident.empty_title")
    if len(title) > TITLE_MAX:
        raise UsageError("incident.title_too_long", limit=TITLE_MAX, length=len(title))
    if _CONTROL.search(title):
        raise UsageError("incident.bad_title")
    return title


def check_text(raw: str, *, what: Literal["impact", "update", "summary"]) -> str:
    """Free text (impact, update, summary): trimmed, non-empty, at most TEXT_MAX characters."""
    text = raw.strip()
    if not text:
        raise UsageError(f"incident.empty_{what}")
    if len(text) > TEXT_MAX:
        raise UsageError("incident.text_too_long", limit=TEXT_MAX, length=len(text))
    if _CONTROL.search(text.replace("\n", "").replace("\t", "")):
        raise UsageError("incident.bad_text")
    return text


def parse_incident_id(raw: str) -> int:
    """`12`, `INC-12`, `inc12` or `#12` → 12; anything else is a usage error."""
    match = INCIDENT_REF.match(raw.strip())
    if match is None or int(match.group(1)) == 0:
        raise UsageError("incident.bad_id", value=_shown(raw))
    return int(match.group(1))


def incident_ref(incident_id: int) -> str:
    return f"INC-{incident_id}"


def _shown(raw: str) -> str:
    """User text echoed in an error: one line, short."""
    flat = _CONTROL.sub("?", " ".join(raw.split()))
    return flat if len(flat) <= 40 else flat[:39] + "…"


# --- deadlines and pages ------------------------------------------------------------------------


def respond_deadline(incident: Incident, settings: Settings) -> datetime:
    return incident.declared_at + timedelta(minutes=settings.incidents.respond_minutes[incident.severity])


def unresolved_deadline(incident: Incident, settings: Settings) -> datetime:
    return incident.declared_at + timedelta(minutes=settings.incidents.unresolved_minutes)


def levels_to_notify(severity: Severity, settings: Settings) -> tuple[int, ...]:
    """The levels a declaration pages, in order (P1 → 1, 2, 3 by default)."""
    return tuple(sorted({_level_number(name) for name in settings.incidents.notify[severity]}))


def declaration_pages(incident: Incident, settings: Settings) -> list[Page]:
    """The pages a declaration makes at once; levels with nobody configured are left out."""
    return [
        Page(incident.id, level, "declared", incident.declared_at, tuple(settings.escalation.contacts(level)))
        for level in levels_to_notify(incident.severity, settings)
        if settings.escalation.contacts(level)
    ]


def due_pages(
    incident: Incident, pages_done: Collection[int], now: datetime, settings: Settings
) -> list[Page]:
    """Pages owed at `now` and not yet made, earliest deadline first; none once resolved."""
    if not incident.is_open:
        return []
    due: dict[int, tuple[datetime, PageReason]] = {}
    if incident.status == "open":
        deadline = respond_deadline(incident, settings)
        following = max(levels_to_notify(incident.severity, settings), default=0) + 1
        if following in LEVELS and now >= deadline:
            due[following] = (deadline, "unacknowledged")
    deadline = unresolved_deadline(incident, settings)
    level = _level_number(settings.incidents.unresolved_to)
    if now >= deadline and (level not in due or deadline < due[level][0]):
        due[level] = (deadline, "unresolved")
    pages = [
        Page(incident.id, level, reason, at, tuple(settings.escalation.contacts(level)))
        for level, (at, reason) in due.items()
        if level not in pages_done and settings.escalation.contacts(level)
    ]
    return sorted(pages, key=lambda p: (p.due_at, p.level))


def next_deadline(incident: Incident, pages_done: Collection[int], settings: Settings) -> datetime | None:
    """When the next page of this incident falls due (None: nothing more will be), for schedulers."""
    far = incident.declared_at + timedelta(days=3650)
    owed = due_pages(incident, pages_done, far, settings)
    return min((p.due_at for p in owed), default=None)


def _level_number(name: str) -> int:
    return int(name.removeprefix("level"))


# --- durations and names ------------------------------------------------------------------------


def durations(incident: Incident, now: datetime) -> Durations:
    end = incident.resolved_at or now
    acked = incident.acked_at
    return Durations(
        duration=end - incident.declared_at,
        time_to_acknowledge=acked - incident.declared_at if acked else None,
        time_to_resolve=incident.resolved_at - acked if acked and incident.resolved_at else None,
    )


def channel_name(incident_id: int, title: str) -> str:
    """`inc-<n>-<slug>` within Slack's rules (lowercase ASCII, digits, hyphens, at most 80).

    A title that does not spell in ASCII (Japanese, say) gives just `inc-<n>`: half a slug misleads.
    """
    base = f"inc-{incident_id}"
    folded = "".join(c for c in unicodedata.normalize("NFKD", title) if not unicodedata.combining(c))
    if any(not c.isascii() and (c.isalnum() or unicodedata.category(c).startswith("L")) for c in folded):
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if not slug:
        return base
    return f"{base}-{slug}"[:CHANNEL_NAME_MAX].rstrip("-")
