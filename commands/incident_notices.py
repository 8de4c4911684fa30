"""Telling people about an incident: the declaration notice, its channel, escalation pages.

The Slack side goes through the process's Notifier (bot/notify.py) and the mail through SMTP, both
at once (runbooks/incidents.py: announce), so one failing never holds back the other; every
failure is put on the incident's timeline. Notices are in the configured language: they go to a
channel, not to whoever asked.

`escalate` is one tick of escalation (`gardenbot serve` runs it; the scheduler will take it over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from commands.services import Services
from core.errors import GardenBotError, RunbookFailed
from core.i18n import Translator
from core.incidents import Incident, Page, channel_name, levels_to_notify, next_deadline
from core.reply import Reply
from runbooks.incidents import (
    Announcement,
    MailNotice,
    announce,
    notice_mail,
    notice_reply,
    page_mail,
    page_reply,
)
from store import incidents as incident_store
from store.escalation import Pager, escalation_tick, unresolved_with_pages

log = logging.getLogger(__name__)

BOT_ACTOR = "gardenbot"  # who the timeline says sent a notice or opened a channel


@dataclass(frozen=True)
class ChannelOutcome:
    name: str
    channel: str | None = None
    error: str | None = None


def incidents_channel(services: Services) -> str:
    channel = services.settings.channels.incidents
    if channel is None:
        raise RunbookFailed("incident.no_channel")
    return channel


async def _announce(services: Services, reply: Reply, mail: MailNotice | None) -> Announcement:
    """announce() to the incidents channel; our own refusals (no channel) read as translated text."""
    refused: list[GardenBotError] = []

    async def post(message: Reply) -> dict[str, Any]:
        try:
            return await services.notifier.post(incidents_channel(services), message)
        except GardenBotError as exc:
            refused.append(exc)
            raise

    sent = await announce(reply, mail, post=post, settings=services.settings)
    return replace(sent, post_error=_why(refused[0], services)) if refused else sent


async def announce_declared(services: Services, incident: Incident) -> Announcement:
    """The declaration notice (deadline, mentions, Acknowledge and Resolve) posted and mailed."""
    settings = services.settings
    t = Translator(settings.locale)
    reply, mail = notice_reply(incident, settings, t), notice_mail(incident, settings, t)
    sent = await _announce(services, reply, mail)
    await _note_announcement(services, incident.id, sent)
    if sent.message_ref is not None:
        await incident_store.remember_notice(services.store, incident.id, sent.message_ref)
    return sent


async def open_incident_channel(services: Services, incident: Incident, declarer: str) -> ChannelOutcome:
    """`inc-<n>-<slug>` with the paged people (and the declarer) invited; failures on the timeline."""
    name = channel_name(incident.id, incident.title)
    members = _slack_users(services, incident, declarer)
    at = services.clock()
    try:
        ref = await services.notifier.open_channel(name, members)
    except Exception as exc:  # Slack refused (name taken, missing scope): the incident goes on
        error = _why(exc, services)
        await incident_store.note(
            services.store,
            incident.id,
            at=at,
            actor=BOT_ACTOR,
            kind="channel_failed",
            text=name,
            detail={"error": error},
        )
        return ChannelOutcome(name=name, error=error)
    await incident_store.remember_channel(services.store, incident.id, ref)
    await incident_store.note(
        services.store, incident.id, at=at, actor=BOT_ACTOR, kind="channel_created", text=name, detail=ref
    )
    return ChannelOutcome(name=name, channel=str(ref.get("channel") or "") or None)


def _slack_users(services: Services, incident: Incident, declarer: str) -> list[str]:
    """Slack user IDs (not user groups) of the paged levels, and the declarer, once each."""
    escalation = services.settings.escalation
    ids = [
        contact.slack
        for level in levels_to_notify(incident.severity, services.settings)
        for contact in escalation.contacts(level)
        if contact.slack
    ]
    return [i for i in dict.fromkeys([*ids, declarer]) if i[:1] in ("U", "W")]


def _why(exc: Exception, services: Services) -> str:
    if isinstance(exc, GardenBotError):
        return Translator(services.settings.locale)(exc.message_key, **exc.params)
    return type(exc).__name__


async def _note_announcement(services: Services, incident_id: int, sent: Announcement) -> None:
    at = services.clock()
    for kind, text, detail in sent.timeline_notes():
        if kind == "mail_failed" and sent.mail_error is not None:
            text = _why(sent.mail_error, services)
        await incident_store.note(
            services.store, incident_id, at=at, actor=BOT_ACTOR, kind=kind, text=text, detail=detail
        )


# --- escalation ---------------------------------------------------------------------------------


def escalation_pager(services: Services) -> Pager:
    """Posts the page to the incidents channel and mails it; raises only when neither went out."""

    async def page(owed: Page) -> None:
        settings = services.settings
        t = Translator(settings.locale)
        incident = await incident_store.get_incident(services.store, owed.incident_id)
        mail = page_mail(owed, incident, settings, t)
        reply = page_reply(owed, incident, settings, t)
        sent = await _announce(services, reply, mail)
        if sent.message_ref is None and sent.mail is None:
            raise RunbookFailed("incident.page_not_sent", incident=incident.ref, error=sent.post_error or "-")
        await _note_announcement(services, incident.id, sent)

    return page


async def escalate(services: Services, now: datetime) -> list[Page]:
    """One escalation tick: every page due at `now` made once, across replicas."""
    return await escalation_tick(services.store, now, services.settings, escalation_pager(services))


async def next_escalation(services: Services) -> datetime | None:
    """When the next page of any unresolved incident falls due (None: none will)."""
    deadlines = [
        deadline
        for incident, paged in await unresolved_with_pages(services.store)
        if (deadline := next_deadline(incident, paged, services.settings)) is not None
    ]
    return min(deadlines, default=None)
