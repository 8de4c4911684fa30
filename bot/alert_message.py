"""The Slack message of one alert group: status, severity, alert names, the labels that matter,
summary and description, start time (and how long it lasted once resolved), who acknowledged it,
links to the alert's source and to a pre-filled silence, and the buttons.

Built from the thread's stored state, so whichever replica sends it shows the group's latest state.
"""

from __future__ import annotations

import zoneinfo

from core.alerts import AlertGroup
from core.formatting import format_duration, format_time
from core.i18n import Translator
from core.reply import Actions, Button, Confirm, Element, Fields, Header, Note, Reply, Text, mention
from store.alerts import AlertThread

MAX_INSTANCES = 10  # distinct alerts listed by what tells them apart; the rest are counted


def alert_reply(thread: AlertThread, t: Translator, zone: zoneinfo.ZoneInfo, *, stored: bool = True) -> Reply:
    """The group's message; `stored=False` for one posted while the bot's store was down: no id
    yet, so only the buttons that need no store (the group's own message takes over later)."""
    group = thread.group
    status = t(f"alert.status.{group.status}")
    names = _names(group)
    summary = t("alert.summary", status=status, severity=group.severity, names=names, summary=group.summary)
    elements: list[Element] = [
        Header(t("alert.header", status=status, summary=group.summary)),
        Fields(_fields(thread, group, t, zone, names)),
    ]
    elements += _texts(group, t)
    if stored:
        elements.append(Note(t("alert.note", alert=thread.id, count=thread.notifications)))
    else:
        elements.append(Note(t("alert.note_unstored", count=thread.notifications)))
    if group.status == "firing":
        elements.append(_buttons(thread, t) if stored else Actions((_health_button(t),)))
    return Reply(
        status="failed" if group.status == "firing" else "succeeded",
        summary=summary,
        elements=tuple(elements),
        ids={"alert_id": thread.id},
    )


def _names(group: AlertGroup) -> str:
    seen = dict.fromkeys(alert.name for alert in group.alerts if alert.name)
    return ", ".join(seen) or group.name or "?"


def _fields(
    thread: AlertThread, group: AlertGroup, t: Translator, zone: zoneinfo.ZoneInfo, names: str
) -> tuple[tuple[str, str], ...]:
    pairs = [
        (t("alert.field.severity"), group.severity),
        (
            t("alert.field.alerts"),
            t("alert.field.alerts_value", names=names, firing=len(group.firing), total=group.alert_count),
        ),
        (t("alert.field.started"), format_time(group.started_at() or thread.first_at, zone)),
    ]
    lasted = group.resolved_after()
    if lasted is not None:
        pairs.append((t("alert.field.lasted"), format_duration(lasted.total_seconds())))
    if thread.acked_by is not None:
        who = mention(thread.acked_by)
        pairs.append(
            (
                t("alert.field.acknowledged"),
                t("alert.field.acknowledged_value", who=who, time=format_time(thread.acked_at, zone)),
            )
        )
    return tuple(pairs)


def _texts(group: AlertGroup, t: Translator) -> list[Element]:
    texts: list[Element] = []
    if group.description:
        texts.append(Text(group.description))
    labels = group.shown_labels()
    if labels:
        texts.append(Text(t("alert.labels", labels=", ".join(f"{k}={v}" for k, v in labels.items()))))
    instances = _instances(group)
    if instances:
        texts.append(Text(t("alert.instances", instances=instances)))
    if group.runbook:
        texts.append(Text(t("alert.runbook", runbook=group.runbook)))
    links = [t("alert.link.generator", url=url) for url in _generators(group)]
    if group.external_url:
        links.append(t("alert.link.silence", url=group.silence_url()))
    if links:
        texts.append(Text("\n".join(links)))
    return texts


def _instances(group: AlertGroup) -> str:
    common = group.common_labels
    parts = []
    for alert in group.alerts:
        distinct = alert.distinct_labels(common)
        if distinct:
            mark = "" if alert.status == "firing" else " ✓"
            parts.append(" ".join(f"{k}={v}" for k, v in sorted(distinct.items())) + mark)
    shown = parts[:MAX_INSTANCES]
    more = len(parts) - len(shown) + group.truncated_alerts
    return "; ".join(shown) + (f" (+{more})" if more > 0 else "")


def _generators(group: AlertGroup) -> list[str]:
    return list(dict.fromkeys(a.generator_url for a in group.alerts if a.generator_url))[:2]


def _health_button(t: Translator) -> Button:
    return Button("run_health", t("alert.button.health"), "")  # `health`: nothing appended


def _buttons(thread: AlertThread, t: Translator) -> Actions:
    buttons = [_health_button(t)]
    if thread.acked_by is None:
        buttons.insert(0, Button("alert_ack", t("alert.button.ack"), str(thread.id), style="primary"))
    buttons.insert(-1, _declare_button(thread.group, t))
    return Actions(tuple(buttons))


# A critical alert is a major function down until someone says it is the whole system (P1).
ALERT_SEVERITY_TO_INCIDENT = {"critical": "P2", "warning": "P3"}
INCIDENT_TITLE_CHARS = 150
QUOTE_LIKE = frozenset("\"'`\\\u201c\u201d\u2018\u2019\u201e\u201f\u00ab\u00bb\uff02\uff07\u3000")


def declare_value(group: AlertGroup) -> str:
    """The rest of `incident declare` pre-filled from the alert: severity and a quoted title."""
    severity = ALERT_SEVERITY_TO_INCIDENT.get(group.severity.lower(), "P4")
    title = _plain_title(group.summary or _names(group)) or _plain_title(_names(group)) or "alert"
    return f'{severity} "{title}"'


def _plain_title(text: str) -> str:
    """Alert text as one quoted word of a command line: no quote of any kind (Slack's curly ones
    included, which the parser reads as quotes), no backslash, no leading dash (never an option)."""
    kept = "".join(" " if ch in QUOTE_LIKE else ch for ch in text)
    return " ".join(kept.split())[:INCIDENT_TITLE_CHARS].lstrip("-").strip()


def _declare_button(group: AlertGroup, t: Translator) -> Button:
    value = declare_value(group)
    confirm = Confirm(
        t("alert.declare_confirm_title"),
        t("alert.declare_confirm_text", incident=value),
        t("alert.button.declare"),
        t("approval.cancel"),
    )
    return Button("declare_incident", t("alert.button.declare"), value, confirm=confirm)
