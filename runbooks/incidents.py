"""What an incident says and to whom: the Slack notice, the mails, and the postmortem draft.

Everything here is built from an incident, its timeline and the configuration, in the configured
language; nothing knows Slack. `announce` sends a notice both ways at once (the Slack post through
a callable the caller gives, the mail through SMTP), so one failing never holds back the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.config import Contact, Settings
from core.errors import RunbookFailed
from core.formatting import format_age, format_duration, format_time
from core.i18n import Translator
from core.incidents import (
    Incident,
    Page,
    TimelineKind,
    durations,
    levels_to_notify,
    respond_deadline,
)
from core.reply import Actions, Button, Confirm, Fields, Header, Reply, Table, Text, mention
from core.secrets import mask_text
from runbooks.mail import SentMail, send_mail

MAILED_SEVERITIES = ("P1", "P2")
LIST_COLUMNS = ("id", "severity", "status", "age", "holder", "title")
RESPONSE_KINDS: tuple[TimelineKind, ...] = ("acknowledged", "update", "paged", "page_failed", "action")

# Posts a Reply to the incidents channel; returns where it went (channel, ts), raises when it fails.
Poster = Callable[[Reply], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class MailNotice:
    to: tuple[str, ...]
    subject: str
    body: str


@dataclass(frozen=True)
class Announcement:
    """How a notice went out: each way succeeded (its reference) or failed (why)."""

    message_ref: dict[str, Any] | None = None
    post_error: str | None = None
    mail: SentMail | None = None
    mail_error: RunbookFailed | None = None

    def timeline_notes(self) -> list[tuple[TimelineKind, str, dict[str, Any]]]:
        """(kind, text, detail) lines for the incident's timeline (store.incidents.note)."""
        notes: list[tuple[TimelineKind, str, dict[str, Any]]] = []
        if self.post_error is not None:
            notes.append(("notice_failed", self.post_error, {}))
        if self.mail is not None:
            notes.append(("mail_sent", ", ".join(self.mail.to), {"server": self.mail.server}))
        if self.mail_error is not None:
            notes.append(("mail_failed", str(self.mail_error), dict(self.mail_error.params)))
        return notes


# --- who -----------------------------------------------------------------------------------------


def contact_mention(contact: Contact) -> str:
    return mention(contact.slack) if contact.slack else contact.name


def level_mentions(levels: Sequence[int], settings: Settings, t: Translator) -> str:
    """`level 1: @a, @b; level 2: @c` for the levels that have someone."""
    parts = []
    for level in levels:
        people = settings.escalation.contacts(level)
        if people:
            names = ", ".join(contact_mention(c) for c in people)
            parts.append(f"{t('incident.level', level=level)}: {names}")
    return "; ".join(parts) or t("incident.notice.nobody")


def mail_recipients(incident: Incident, levels: Sequence[int], settings: Settings) -> tuple[str, ...]:
    """The paged contacts' addresses and `incidents.mail_to`, for P1 and P2 only, once each."""
    if incident.severity not in MAILED_SEVERITIES:
        return ()
    found = [c.email for level in levels for c in settings.escalation.contacts(level) if c.email]
    return tuple(dict.fromkeys([*found, *settings.incidents.mail_to]))


# --- Slack notices ------------------------------------------------------------------------------


def _labels(incident: Incident) -> dict[str, str]:
    return {"incident": incident.ref, "severity": incident.severity, "title": incident.title}


def notice_reply(incident: Incident, settings: Settings, t: Translator) -> Reply:
    """The declaration notice: severity, deadline, who is paged, Acknowledge and Resolve."""
    deadline = respond_deadline(incident, settings)
    minutes = settings.incidents.respond_minutes[incident.severity]
    fields = [
        (t("incident.field.severity"), t(f"incident.severity.{incident.severity}")),
        (t("incident.field.declared_by"), mention(incident.declared_by)),
        (t("incident.field.declared_at"), format_time(incident.declared_at, settings.zone)),
        (
            t("incident.field.respond_by"),
            t("incident.field.respond_by_value", time=format_time(deadline, settings.zone), minutes=minutes),
        ),
    ]
    if incident.impact:
        fields.append((t("incident.field.impact"), incident.impact))
    paging = level_mentions(levels_to_notify(incident.severity, settings), settings, t)
    return Reply(
        status="succeeded",
        summary=t("incident.notice.summary", **_labels(incident)),
        elements=(
            Header(t("incident.notice.header", **_labels(incident))),
            Fields(tuple(fields)),
            Text(t("incident.notice.paging", mentions=paging)),
            incident_buttons(incident, t),
        ),
        ids={"incident_id": incident.id},
    )


def incident_buttons(incident: Incident, t: Translator) -> Actions:
    confirm = Confirm(
        title=t("incident.confirm.resolve_title", incident=incident.ref),
        text=t("incident.confirm.resolve_text", incident=incident.ref),
        confirm=t("incident.confirm.resolve"),
        deny=t("incident.confirm.cancel"),
    )
    return Actions(
        (
            Button("incident_ack", t("incident.button.ack"), value=str(incident.id), style="primary"),
            Button("incident_resolve", t("incident.button.resolve"), value=str(incident.id), confirm=confirm),
        )
    )


def page_text(page: Page, incident: Incident, settings: Settings, t: Translator) -> str:
    """One line saying why a level is paged now, with its people mentioned."""
    minutes = (
        settings.incidents.respond_minutes[incident.severity]
        if page.reason == "unacknowledged"
        else settings.incidents.unresolved_minutes
    )
    reason = "unresolved" if page.reason == "unresolved" else "unacknowledged"
    return t(
        f"incident.page.{reason}",
        **_labels(incident),
        minutes=minutes,
        level=t("incident.level", level=page.level),
        mentions=", ".join(contact_mention(c) for c in page.contacts),
    )


def page_reply(page: Page, incident: Incident, settings: Settings, t: Translator) -> Reply:
    text = page_text(page, incident, settings, t)
    elements = (Text(text), incident_buttons(incident, t))
    return Reply(status="succeeded", summary=text, elements=elements, ids={"incident_id": incident.id})


def resolved_reply(incident: Incident, settings: Settings, t: Translator) -> Reply:
    """The answer to `incident resolve`: duration, time to acknowledge, time to resolve."""
    figures = durations(incident, incident.resolved_at or incident.declared_at)
    missing = t("incident.not_acknowledged")
    fields = (
        (t("incident.field.duration"), format_duration(figures.duration.total_seconds())),
        (t("incident.field.tta"), span_text(figures.time_to_acknowledge, missing)),
        (t("incident.field.ttr"), span_text(figures.time_to_resolve, missing)),
    )
    summary = t("incident.resolved.summary", incident=incident.ref, by=mention(incident.resolved_by or "?"))
    elements: tuple[Header | Fields | Text, ...] = (Header(summary), Fields(fields))
    if incident.summary:
        elements += (Text(incident.summary),)
    return Reply(status="succeeded", summary=summary, elements=elements, ids={"incident_id": incident.id})


def list_reply(incidents: Sequence[Incident], now: datetime, t: Translator) -> Reply:
    """`incident list`: unresolved first (as the store orders them), with age, severity, holder."""
    if not incidents:
        return Reply(
            status="succeeded", summary=t("incident.list.empty"), elements=(Text(t("incident.list.empty")),)
        )
    columns = tuple(t(f"incident.col.{c}") for c in LIST_COLUMNS)
    rows = tuple(
        (
            i.ref,
            i.severity,
            t(f"incident.status.{i.status}"),
            format_age(durations(i, now).duration),
            mention(i.holder) if i.holder else "-",
            i.title,
        )
        for i in incidents
    )
    return Reply(
        status="succeeded",
        summary=t("incident.list.header"),
        elements=(Header(t("incident.list.header")), Table(columns, rows)),
    )


def span_text(delta: timedelta | None, missing: str) -> str:
    """A duration as shown, or `missing` when there is none (never acknowledged)."""
    return missing if delta is None else format_duration(delta.total_seconds())


# --- mail ---------------------------------------------------------------------------------------


def notice_mail(incident: Incident, settings: Settings, t: Translator) -> MailNotice | None:
    """The declaration mail (P1 and P2), or None when there is nobody to mail or no need."""
    levels = levels_to_notify(incident.severity, settings)
    to = mail_recipients(incident, levels, settings)
    if not to:
        return None
    subject = t("incident.mail.subject", **_labels(incident))
    return MailNotice(to=to, subject=subject, body=_mail_body(incident, levels, settings, t))


def page_mail(page: Page, incident: Incident, settings: Settings, t: Translator) -> MailNotice | None:
    """An escalation's mail (P1 and P2): the paged level's addresses and `incidents.mail_to`."""
    to = mail_recipients(incident, (page.level,), settings)
    if not to:
        return None
    level = t("incident.level", level=page.level)
    subject = t("incident.mail.page_subject", **_labels(incident), level=level)
    body = _mail_body(incident, levels_to_notify(incident.severity, settings), settings, t)
    reason = page_text(page, incident, settings, t)
    return MailNotice(to=to, subject=subject, body=t("incident.mail.page_body", reason=reason, body=body))


def _mail_body(incident: Incident, levels: Sequence[int], settings: Settings, t: Translator) -> str:
    paged = "; ".join(
        f"{t('incident.level', level=level)}: "
        + ", ".join(c.name for c in settings.escalation.contacts(level))
        for level in levels
        if settings.escalation.contacts(level)
    )
    deadline = respond_deadline(incident, settings)
    return t(
        "incident.mail.body",
        severity_text=t(f"incident.severity.{incident.severity}"),
        incident=incident.ref,
        title=incident.title,
        impact=incident.impact or t("incident.not_given"),
        declared_by=incident.declared_by,
        declared_at=format_time(incident.declared_at, settings.zone),
        respond_by=format_time(deadline, settings.zone),
        paged=paged or "-",
    )


async def send_notice_mail(notice: MailNotice, settings: Settings, *, timeout: float = 10.0) -> SentMail:
    """Send through `mail.url` from `mail.from`; no mail server configured is a RunbookFailed too."""
    if settings.mail.url is None or settings.mail.sender is None:
        raise RunbookFailed("incident.mail_not_configured")
    return await send_mail(
        smtp_url=settings.mail.url.get_secret_value(),
        sender=settings.mail.sender,
        to=list(notice.to),
        subject=notice.subject,
        body=notice.body,
        timeout=timeout,
    )


async def announce(
    reply: Reply,
    mail: MailNotice | None,
    *,
    post: Poster,
    settings: Settings,
    mail_timeout: float = 10.0,
) -> Announcement:
    """Post to Slack and send the mail at the same time; each failure is kept, never raised."""
    posting = asyncio.ensure_future(post(reply))
    mailing = asyncio.ensure_future(send_notice_mail(mail, settings, timeout=mail_timeout)) if mail else None
    message_ref: dict[str, Any] | None = None
    post_error: str | None = None
    try:
        message_ref = await posting
    except Exception as exc:  # Slack's API failed: the mail still goes, the failure is recorded
        post_error = mask_text(f"{type(exc).__name__}: {exc}")[:300]
    sent: SentMail | None = None
    mail_error: RunbookFailed | None = None
    if mailing is not None:
        try:
            sent = await mailing
        except RunbookFailed as exc:
            mail_error = exc
    return Announcement(message_ref=message_ref, post_error=post_error, mail=sent, mail_error=mail_error)
