"""The postmortem draft: Markdown in the manual's sections, headings in the configured language.

Filled from what the bot knows (the incident and its timeline); the sections only people can write
(root cause, prevention, lessons) are left marked as to be written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.config import Settings
from core.formatting import format_duration, format_time
from core.i18n import Translator
from core.incidents import Incident, TimelineEntry, durations
from runbooks.incidents import RESPONSE_KINDS, span_text

SECTIONS = (
    "basic",
    "summary",
    "timeline",
    "root_cause",
    "impact",
    "response",
    "prevention",
    "action_items",
    "lessons",
)


def postmortem_filename(incident: Incident) -> str:
    return f"postmortem-{incident.ref.lower()}.md"


def postmortem_markdown(
    incident: Incident,
    entries: Sequence[TimelineEntry],
    settings: Settings,
    t: Translator,
    *,
    now: datetime,
) -> str:
    """The draft, one `##` section per heading of the manual, in order."""
    todo = t("incident.pm.todo")
    bodies = {
        "basic": _basic(incident, settings, t),
        "summary": _one_line(incident.summary) or todo,
        "timeline": _timeline(entries, settings, t) or todo,
        "root_cause": todo,
        "impact": _one_line(incident.impact) or todo,
        "response": _timeline([e for e in entries if e.kind in RESPONSE_KINDS], settings, t)
        or t("incident.pm.no_response"),
        "prevention": todo,
        "action_items": t("incident.pm.action_item"),
        "lessons": todo,
    }
    lines = [
        f"# {_one_line(t('incident.pm.title', incident=incident.ref, title=incident.title))}",
        "",
        f"_{t('incident.pm.draft_note', time=format_time(now, settings.zone))}_",
    ]
    for section in SECTIONS:
        lines += ["", f"## {t(f'incident.pm.{section}')}", "", bodies[section]]
    return "\n".join(lines) + "\n"


def _basic(incident: Incident, settings: Settings, t: Translator) -> str:
    figures = durations(incident, incident.resolved_at or incident.declared_at)
    missing = t("incident.not_acknowledged")

    def by_at(who: str | None, when: datetime | None) -> str:
        if who is None or when is None:
            return t("incident.not_yet")
        return t("incident.by_at", who=who, time=format_time(when, settings.zone))

    rows = [
        ("ID", incident.ref),
        (t("incident.field.severity"), t(f"incident.severity.{incident.severity}")),
        (t("incident.field.status"), t(f"incident.status.{incident.status}")),
        (t("incident.field.declared_by"), by_at(incident.declared_by, incident.declared_at)),
        (t("incident.field.acknowledged"), by_at(incident.acked_by, incident.acked_at)),
        (t("incident.field.resolved"), by_at(incident.resolved_by, incident.resolved_at)),
        (t("incident.field.duration"), format_duration(figures.duration.total_seconds())),
        (t("incident.field.tta"), span_text(figures.time_to_acknowledge, missing)),
        (t("incident.field.ttr"), span_text(figures.time_to_resolve, missing)),
    ]
    return "\n".join(f"- **{name}**: {_one_line(value)}" for name, value in rows)


def _timeline(entries: Sequence[TimelineEntry], settings: Settings, t: Translator) -> str:
    lines = []
    for entry in entries:
        what = t(f"incident.kind.{entry.kind}")
        text = f": {_one_line(entry.text)}" if entry.text else ""
        outcome = entry.detail.get("outcome") if entry.kind == "action" else None
        tail = f" ({_one_line(str(outcome))})" if outcome else ""
        lines.append(f"- {format_time(entry.at, settings.zone)} {entry.actor} {what}{text}{tail}")
    return "\n".join(lines)


def _one_line(text: str | None) -> str:
    """User text inside a Markdown list item or heading: one line, no heading marks at its start."""
    if not text:
        return ""
    return " ".join(text.split()).lstrip("#").strip()
