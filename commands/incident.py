"""`incident declare|ack|update|resolve|list|postmortem|evidence`: incident response by severity P1-P4.

Declaring posts the notice to the incidents channel (deadline, who is paged, Acknowledge and
Resolve) and mails P1/P2 at the same time (commands/incident_notices.py); the asker gets the same
notice with how it went out. A P1 with hosts configured then starts `incident evidence <id>` as a
job of its own (the notice never waits for the hosts); the evidence lands on the timeline.
Resolving drafts the postmortem, saves it and uploads it as Markdown.
Times come from `Services.clock`, so a test's clock is the incidents' clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import ClassVar

from pydantic import Field

from commands.base import Args, Context, NoArgs, Role
from commands.command import Command, derive_usage
from commands.hosts import attach_evidence, hosts_setup
from commands.incident_notices import (
    ChannelOutcome,
    announce_declared,
    escalate,
    incidents_channel,
    open_incident_channel,
)
from core.errors import Conflict, GardenBotError, UsageError
from core.i18n import Translator
from core.incidents import (
    Incident,
    check_text,
    check_title,
    levels_to_notify,
    parse_incident_id,
    parse_severity,
)
from core.reply import Actions, Element, Note, Reply, Text, mention
from runbooks.incidents import Announcement, list_reply, notice_reply, resolved_reply
from runbooks.postmortem import postmortem_filename, postmortem_markdown
from store import incidents as incident_store


class DeclareArgs(Args):
    rest_field: ClassVar[str | None] = "title"
    options: ClassVar[tuple[str, ...]] = ("impact",)

    severity: str = Field(title="P1-P4")
    title: str
    impact: str | None = Field(default=None, title="text")


class IdArgs(Args):
    id: str


class UpdateArgs(Args):
    rest_field: ClassVar[str | None] = "text"

    id: str
    text: str


class ResolveArgs(Args):
    rest_field: ClassVar[str | None] = "summary"

    id: str
    summary: str | None = None


def _console_people(ctx: Context) -> tuple[str | None, str | None]:
    """(admin acting as the actor, OS login) behind a declaration or acknowledgement at a console: a
    P1 waives a restart's approval only for someone who is none of them (commands/hosts.py `open_p1`)."""
    console = ctx.request.console
    if console is None:
        return None, None
    return console.impersonated_by, console.os_login


@contextmanager
def _usage(name: str, model: type[Args]) -> Iterator[None]:
    """A bad severity, title, text or id is refused with the command's usage line."""
    try:
        yield
    except UsageError as exc:
        exc.usage = exc.usage or derive_usage(name, model)
        raise


# --- declare ------------------------------------------------------------------------------------


async def declare(ctx: Context, args: DeclareArgs) -> Reply:
    svc, t = ctx.services, ctx.t
    with _usage("incident declare", DeclareArgs):
        severity = parse_severity(args.severity)
        title = check_title(args.title)
        impact = check_text(args.impact, what="impact") if args.impact is not None else None
    impersonated_by, os_login = _console_people(ctx)
    incident = await incident_store.declare_incident(
        svc.store,
        severity=severity,
        title=title,
        impact=impact,
        declared_by=ctx.actor.user_id,
        at=svc.clock(),
        paged_levels=levels_to_notify(severity, svc.settings),
        impersonated_by=impersonated_by,
        from_os_login=os_login,
    )
    sent = await announce_declared(svc, incident)
    opened = None
    if svc.settings.incidents.create_channels:
        opened = await open_incident_channel(svc, incident, ctx.actor.user_id)
    evidence = await _p1_evidence(ctx, incident)
    reply = notice_reply(incident, svc.settings, t)
    notes = (*_delivery_notes(sent, t), *_channel_notes(opened, t), *evidence)
    shown_there = sent.message_ref is not None and ctx.request.channel == svc.settings.channels.incidents
    return replace(
        reply,
        elements=(*reply.elements, *notes),
        visibility="asker" if shown_there else "channel",  # posted there already: once is enough
    )


async def _p1_evidence(ctx: Context, incident: Incident) -> tuple[Note, ...]:
    """A P1 on configured hosts: `incident evidence <id>` starts as a job of its own, after the notice
    went out; the declaration does not wait for it, and a refusal to start only says so."""
    if incident.severity != "P1" or ctx.services.settings.hosts.inventory is None:
        return ()
    try:
        job_id = await ctx.follow_up("incident evidence", IdArgs(id=str(incident.id)))
    except GardenBotError as exc:
        error = ctx.t(exc.message_key, **exc.params)
        return (Note(ctx.t("incident.evidence.not_started", error=error)),)
    if job_id is None:
        return ()
    return (Note(ctx.t("incident.evidence.started", job_id=job_id)),)


def _delivery_notes(sent: Announcement, t: Translator) -> tuple[Note, ...]:
    notes: list[Note] = []
    if sent.message_ref is not None:
        notes.append(Note(t("incident.notice.posted", channel=str(sent.message_ref.get("channel", "")))))
    if sent.post_error is not None:
        notes.append(Note(t("incident.notice.not_posted", error=sent.post_error)))
    if sent.mail is not None:
        notes.append(Note(t("incident.notice.mailed", to=", ".join(sent.mail.to))))
    if sent.mail_error is not None:
        error = t(sent.mail_error.message_key, **sent.mail_error.params)
        notes.append(Note(t("incident.notice.not_mailed", error=error)))
    return tuple(notes)


def _channel_notes(opened: ChannelOutcome | None, t: Translator) -> tuple[Note, ...]:
    if opened is None:
        return ()
    if opened.error is not None:
        return (Note(t("incident.channel.not_opened", name=opened.name, error=opened.error)),)
    return (Note(t("incident.channel.opened", name=opened.name)),)


# --- ack, update, resolve -----------------------------------------------------------------------


async def acknowledge(ctx: Context, args: IdArgs) -> Reply:
    """The first acknowledgement holds the incident; the reply is the notice, now held."""
    svc, t = ctx.services, ctx.t
    with _usage("incident ack", IdArgs):
        incident_id = parse_incident_id(args.id)
    impersonated_by, os_login = _console_people(ctx)
    incident = await incident_store.acknowledge_incident(
        svc.store,
        incident_id,
        by=ctx.actor.user_id,
        at=svc.clock(),
        impersonated_by=impersonated_by,
        from_os_login=os_login,
    )
    notice = notice_reply(incident, svc.settings, t)
    summary = t("incident.acknowledged.summary", incident=incident.ref, by=mention(ctx.actor.user_id))
    elements: list[Element] = [Text(summary)]
    for element in notice.elements:
        if isinstance(element, Actions):  # Acknowledge is done: only Resolve stays
            element = Actions(tuple(b for b in element.buttons if b.action_id != "incident_ack"))
        elements.append(element)
    return Reply(status="succeeded", summary=summary, elements=tuple(elements), ids=notice.ids)


async def update(ctx: Context, args: UpdateArgs) -> Reply:
    svc, t = ctx.services, ctx.t
    with _usage("incident update", UpdateArgs):
        incident_id = parse_incident_id(args.id)
        text = check_text(args.text, what="update")
    entry = await incident_store.add_update(
        svc.store, incident_id, by=ctx.actor.user_id, at=svc.clock(), text=text
    )
    ref = f"INC-{entry.incident_id}"
    summary = t("incident.updated.summary", incident=ref)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Text(summary), Text(text)),
        ids={"incident_id": entry.incident_id},
    )


async def resolve(ctx: Context, args: ResolveArgs) -> Reply:
    """Resolve once (a second is a Conflict), then draft, save and upload the postmortem."""
    svc, t = ctx.services, ctx.t
    with _usage("incident resolve", ResolveArgs):
        incident_id = parse_incident_id(args.id)
        summary = check_text(args.summary, what="summary") if args.summary is not None else None
    incident = await incident_store.resolve_incident(
        svc.store, incident_id, by=ctx.actor.user_id, at=svc.clock(), summary=summary
    )
    reply = resolved_reply(incident, svc.settings, t)
    note = await _share_postmortem(ctx, incident)
    return replace(reply, elements=(*reply.elements, note))


# --- list, postmortem ---------------------------------------------------------------------------


async def list_all(ctx: Context, args: NoArgs) -> Reply:
    svc = ctx.services
    return list_reply(await incident_store.list_incidents(svc.store), svc.clock(), ctx.t)


async def postmortem(ctx: Context, args: IdArgs) -> Reply:
    """The draft of a resolved incident, uploaded as Markdown where it was asked for."""
    svc, t = ctx.services, ctx.t
    with _usage("incident postmortem", IdArgs):
        incident_id = parse_incident_id(args.id)
    incident = await incident_store.get_incident(svc.store, incident_id)
    if incident.is_open:
        raise Conflict("incident.pm.no_postmortem", incident=incident.ref)
    summary = t("incident.pm.file_title", incident=incident.ref)
    note = await _share_postmortem(ctx, incident, channel=ctx.request.channel)
    return Reply(
        status="succeeded", summary=summary, elements=(Text(summary), note), ids={"incident_id": incident.id}
    )


async def _share_postmortem(ctx: Context, incident: Incident, *, channel: str | None = None) -> Note:
    """Draft (or reuse the saved draft), save it, upload it; a Note saying where it went."""
    svc, t = ctx.services, ctx.t
    markdown = incident.postmortem
    if markdown is None:
        entries = await incident_store.timeline(svc.store, incident.id)
        settings_t = Translator(svc.settings.locale)
        markdown = postmortem_markdown(incident, entries, svc.settings, settings_t, now=svc.clock())
        await incident_store.save_postmortem(svc.store, incident.id, markdown)
    filename = postmortem_filename(incident)
    title = t("incident.pm.file_title", incident=incident.ref)
    try:
        where = channel or str(incident.channel_ref.get("channel") or "") or incidents_channel(svc)
        ref = await svc.notifier.upload(where, filename, markdown, title=title)
    except GardenBotError as exc:
        return Note(t("incident.pm.not_uploaded", filename=filename, error=t(exc.message_key, **exc.params)))
    except Exception as exc:  # Slack refused the upload: the draft is saved all the same
        return Note(t("incident.pm.not_uploaded", filename=filename, error=type(exc).__name__))
    if "path" in ref:
        return Note(t("incident.pm.saved", filename=filename, path=str(ref["path"])))
    return Note(t("incident.pm.uploaded", filename=filename, channel=where))


# --- evidence -----------------------------------------------------------------------------------


async def check_evidence(ctx: Context, args: IdArgs) -> None:
    """Before any job: the id names an incident and the hosts are configured."""
    with _usage("incident evidence", IdArgs):
        incident_id = parse_incident_id(args.id)
    await incident_store.get_incident(ctx.services.store, incident_id)
    hosts_setup(ctx.services)


async def evidence(ctx: Context, args: IdArgs) -> Reply:
    """Service states, the error log's end and the services' logs from each host, on the timeline."""
    incident_id = parse_incident_id(args.id)
    reply = await attach_evidence(ctx, incident_id)
    return replace(reply, ids={**reply.ids, "incident_id": incident_id})


async def escalate_now(ctx: Context, args: NoArgs) -> Reply:
    """The `escalation` schedule's tick: page whatever is due now, once across replicas (`serve`
    also ticks every few seconds; this one keeps paging going where only the scheduler runs)."""
    pages = await escalate(ctx.services, ctx.services.clock())
    said = ctx.t("incident.escalated", count=len(pages))
    return Reply(status="succeeded", summary=said, elements=(Text(said),))


COMMANDS = (
    Command(name="incident escalate", role=Role.ADMIN, run=escalate_now, mutates=True),
    Command(name="incident declare", role=Role.OPERATOR, run=declare, args=DeclareArgs, mutates=True),
    Command(name="incident ack", role=Role.OPERATOR, run=acknowledge, args=IdArgs, mutates=True),
    Command(name="incident update", role=Role.OPERATOR, run=update, args=UpdateArgs, mutates=True),
    Command(name="incident resolve", role=Role.OPERATOR, run=resolve, args=ResolveArgs, mutates=True),
    Command(name="incident list", role=Role.VIEWER, run=list_all),
    Command(name="incident postmortem", role=Role.VIEWER, run=postmortem, args=IdArgs),
    Command(
        name="incident evidence",
        role=Role.OPERATOR,
        run=evidence,
        args=IdArgs,
        preflight=check_evidence,
        mutates=True,
        background=True,
    ),
)
