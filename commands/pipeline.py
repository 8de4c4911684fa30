"""The one way down: parse, authorise, approve, run or start a job, audit, reply.

Slack, the console, the scheduler and the alert webhook all call `Pipeline.handle` and
`Pipeline.decide`; nothing else runs a command.
"""

from __future__ import annotations

import logging
import time
import zoneinfo
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from commands.base import (
    DECISION_WORDS,
    Actor,
    Args,
    Context,
    Decision,
    Request,
    Verdict,
    no_progress,
    parse_args,
    split_words,
)
from commands.boundary import audit_record, note_on_incidents, reply_for
from commands.command import Command
from commands.registry import Registry
from commands.runner import JobRunner
from commands.services import Services
from core.config import SYSTEM_ACTORS
from core.errors import Conflict, GardenBotError, NotAllowed, StoreUnavailable, UsageError
from core.formatting import format_time
from core.i18n import Translator
from core.reply import Actions, Button, Confirm, Fields, Header, Progress, Reply, Text, mention
from store import approvals as approval_store

log = logging.getLogger(__name__)
TARGET_KEY = "target"  # in an approval's binding: Services.target_place() when it was asked for


@dataclass
class _Seen:
    """What a request turned out to name, for its audit record even when it failed."""

    command: Command | None = None
    args: Args | None = None


class Pipeline:
    def __init__(self, services: Services, registry: Registry) -> None:
        self.services = services
        self.registry = registry
        self.runner = JobRunner(services)
        self.jobs = self.runner.board  # watch a job: `async for event in pipeline.jobs.watch(job_id)`

    def command_name(self, text: str) -> str:
        """The sub-command a request names, for metrics labels: 'unknown' for anything else."""
        try:
            words = split_words(text) or ["help"]
            if words[0].lower() in DECISION_WORDS:
                return "approval"
            return self.registry.find(words)[0].name
        except GardenBotError:
            return "unknown"

    def translator(self, request: Request) -> Translator:
        return Translator(request.locale or self.services.settings.locale)

    async def handle(self, request: Request) -> Reply:
        """Answer one request: a command line or a typed decision. Never raises: every failure
        becomes a Reply. A started job is watched through `self.jobs`."""
        t = self.translator(request)
        started = time.monotonic()
        seen = _Seen()
        try:
            words = (split_words(request.text) or ["help"]) if request.decision is None else []
            decision = request.decision or Decision.from_words(words)
            if decision is not None:
                return await self._decide(request, decision, t)
            reply = await self._run_command(request, words, t, seen)
        except Exception as exc:
            reply = reply_for(exc, t, request.correlation_id)
            if isinstance(exc, UsageError) and seen.command is None:
                reply = _with_help_hint(reply, t)
        await self._audit_request(request, seen.command, seen.args, reply, started)
        return reply

    async def decide(self, request: Request, approval_id: int, decision: Verdict) -> Reply:
        """An approver's decision on one approval. Exactly one decision is ever taken."""
        return await self.handle(replace(request, decision=Decision(approval_id, decision)))

    async def refuse(self, request: Request, error: GardenBotError) -> Reply:
        """Turn a request away before any command is looked at (e.g. another workspace's), audited."""
        started = time.monotonic()
        reply = reply_for(error, self.translator(request), request.correlation_id)
        await self._audit_request(request, None, None, reply, started)
        return reply

    async def _run_command(self, request: Request, words: list[str], t: Translator, seen: _Seen) -> Reply:
        command, rest = self.registry.find(words)
        seen.command = command
        self.services.access.require_run(request.actor, command)
        args = seen.args = parse_args(command.args, rest, usage=command.usage)
        if command.needs_store:
            await self._require_store()
        ctx = self._context(request, t)
        if command.preflight is not None:
            await command.preflight(ctx, args)
        if command.risky and not await self._waived(command, ctx, args):
            return await self._open_approval(command, ctx, args)
        if not command.background:
            return await command.run(ctx, args)
        job = await self.runner.start(command, ctx, args)
        return _job_started(t("job.started", job_id=job.id, command=command.name), t, job_id=job.id)

    async def _decide(self, request: Request, decision: Decision, t: Translator) -> Reply:
        started = time.monotonic()
        outcome: str = decision.verdict
        detail: dict[str, Any] = {"approval_id": decision.approval_id}
        try:
            return await self._take_decision(request, decision, t, detail, started)
        except Exception as exc:
            outcome = exc.status if isinstance(exc, GardenBotError) else "failed"
            if isinstance(exc, GardenBotError):
                detail["reason"] = exc.message_key
            reply = reply_for(exc, t, request.correlation_id, doing=f"decision on {decision.approval_id}")
        command_name = str(detail.pop("command", "approval"))
        await self._audit(request, command_name, "approval_decision", outcome, detail, started=started)
        return replace_ids(reply, approval_id=decision.approval_id)

    async def _take_decision(
        self, request: Request, decision: Decision, t: Translator, detail: dict[str, Any], started: float
    ) -> Reply:
        actor, approval_id = request.actor, decision.approval_id
        await self._require_store()
        approval = await approval_store.get_approval(self.services.store, approval_id)
        detail.update(command=approval.command, requested_by=approval.requester)
        self.services.access.may_decide(request, approval).require()
        if decision.verdict == "approved":
            await self._requester_may_still_run(approval)
            self._same_target(approval)
        login = request.console.os_login if request.console is not None else None
        approval = await approval_store.decide_approval(
            self.services.store,
            approval_id,
            decided_by=actor.user_id,
            decision=decision.verdict,
            decided_from_os_login=login,
            decided_for=request.console.impersonated_by if request.console is not None else None,
        )
        audited = {k: v for k, v in detail.items() if k != "command"}
        event = f"approval_{decision.verdict}"
        await self._audit(request, approval.command, event, decision.verdict, audited, started=started)
        if decision.verdict == "denied":
            return Reply(
                status="succeeded",
                summary=t("approval.denied", approval_id=approval_id, by=mention(actor.user_id)),
                ids={"approval_id": approval_id},
            )
        return await self._run_approved(approval, request, t)

    def _same_target(self, approval: approval_store.Approval) -> None:
        """What was approved runs where it was asked for: not on the target of a configuration the
        bot was restarted with meanwhile (an approval older than this check carries no target)."""
        asked_for = approval.binding.get(TARGET_KEY)
        if asked_for is not None and asked_for != self.services.target_place():
            raise Conflict(
                "approval.target_changed", approval_id=approval.id, command=approval.command, target=asked_for
            )

    async def _requester_may_still_run(self, approval: approval_store.Approval) -> None:
        """Roles can change while a request waits (a new configuration, a user group left): what
        runs is what the requester may run now, not what they could when they asked."""
        command = self.registry.get(approval.command)
        if command is None:
            raise UsageError("usage.unknown_command", word=approval.command)
        system = approval.source in SYSTEM_ACTORS
        groups = frozenset() if system else await self.services.directory.groups_of(approval.requester)
        requester = Actor(user_id=approval.requester, system=system, group_ids=groups)
        if not self.services.access.may_run(requester, command).allowed:
            raise NotAllowed(
                "approval.requester_lost_role",
                approval_id=approval.id,
                user=mention(approval.requester),
                command=approval.command,
            )

    async def _run_approved(
        self,
        approval: approval_store.Approval,
        decider: Request,
        t: Translator,
    ) -> Reply:
        command = self.registry.get(approval.command)
        if command is None:
            raise UsageError("usage.unknown_command", word=approval.command)
        # The job runs for the requester, approved by the decider, under the request's correlation id.
        asked_by_system = approval.source in SYSTEM_ACTORS
        request = Request(
            actor=Actor(user_id=approval.requester, system=asked_by_system),
            text=approval.command,
            source=decider.source,
            channel=approval.channel,
            correlation_id=approval.correlation_id,
            locale=decider.locale,
        )
        ctx = self._context(request, t)
        ctx.approved_by = decider.actor.user_id
        ctx.binding = approval.binding
        args = command.args.model_validate(approval.args)
        try:
            job = await self.runner.start(command, ctx, args, approval_id=approval.id)
        except GardenBotError as exc:
            await self._reopen(approval, decider, exc, t)
            raise
        await approval_store.attach_job(self.services.store, approval.id, job.id)
        by = mention(decider.actor.user_id)
        summary = t("approval.approved", approval_id=approval.id, by=by, job_id=job.id)
        return _job_started(summary, t, approval_id=approval.id, job_id=job.id)

    async def _reopen(
        self, approval: approval_store.Approval, decider: Request, exc: GardenBotError, t: Translator
    ) -> None:
        """The job could not start: the approval goes back to pending, not used up. A busy lock
        becomes Conflict('approval.lock_busy') naming the holder; other errors go on as they are."""
        try:
            reopened = await approval_store.reopen_approval(
                self.services.store, approval.id, decided_by=decider.actor.user_id
            )
        except StoreUnavailable:
            log.warning("approval %s could not be set pending again (store unreachable)", approval.id)
            return
        if reopened and isinstance(exc, Conflict) and exc.message_key.startswith("lock.held."):
            held = t(exc.message_key, **exc.params)
            raise Conflict("approval.lock_busy", approval_id=approval.id, held=held) from exc

    async def _require_store(self) -> None:
        if not await self.services.store.ready():
            raise StoreUnavailable("store.unavailable_for_changes")

    def _context(self, request: Request, t: Translator) -> Context:
        async def follow_up(name: str, args: Args) -> int | None:
            return await self._follow_up(request, t, name, args)

        return Context(
            request=request,
            services=self.services,
            t=t,
            progress=no_progress,
            follow_up=follow_up,
        )

    async def _follow_up(self, request: Request, t: Translator, name: str, args: Args) -> int:
        """A command another one starts for the same asker (a P1's evidence): the asker's role must
        allow it; it runs as a job of its own, audited as such, and nobody waits for it here. Never
        a risky command: that needs its own approval."""
        command = self.registry.get(name)
        if command is None or not command.background or command.risky:
            raise UsageError("usage.unknown_command", word=name[:40])
        self.services.access.require_run(request.actor, command)
        job = await self.runner.start(command, self._context(request, t), args)
        return job.id

    async def _waived(self, command: Command, ctx: Context, args: Args) -> bool:
        """Break-glass: the command says it may run without a second person now; audited, and the
        reason goes to the run as its binding."""
        if command.waive_approval is None:
            return False
        why = await command.waive_approval(ctx, args)
        if why is None:
            return False
        ctx.binding = {"break_glass": why}
        detail = {"break_glass": why, "args": args.model_dump(mode="json")}
        await self._audit(ctx.request, command.name, "approval_waived", "waived", detail)
        return True

    async def _open_approval(self, command: Command, ctx: Context, args: Args) -> Reply:
        assert command.describe is not None
        t = ctx.t
        text = await command.describe(ctx, args)
        settings = self.services.settings
        origin = ctx.request.console
        approval = await approval_store.open_approval(
            self.services.store,
            command=command.name,
            args=args.model_dump(mode="json"),
            summary=text.summary,
            binding={**text.binding, TARGET_KEY: self.services.target_place()},
            requester=ctx.actor.user_id,
            channel=ctx.request.channel,
            source=ctx.request.source,
            correlation_id=ctx.request.correlation_id,
            ttl=timedelta(minutes=settings.approval_ttl_minutes),
            requester_os_login=origin.os_login if origin is not None else None,
            requester_host=origin.host if origin is not None else None,
            requester_impersonated_by=origin.impersonated_by if origin is not None else None,
        )
        await self._audit(
            ctx.request,
            command.name,
            "approval_opened",
            "pending",
            {"approval_id": approval.id, "args": args.model_dump(mode="json")},
        )
        return approval_reply(approval, t, settings.zone)

    async def _audit_request(
        self,
        request: Request,
        command: Command | None,
        args: Args | None,
        reply: Reply,
        started: float,
    ) -> None:
        if request.routine and reply.uneventful:
            return  # a routine scheduled run that changed nothing: its schedule_runs row has it
        detail: dict[str, Any] = {"args": args.model_dump(mode="json") if args else {}}
        if reply.status in ("refused", "failed"):
            detail["reason"] = reply.summary[:300]
        detail.update({k: v for k, v in reply.ids.items()})
        name = command.name if command else (request.text.split(" ", 1)[0][:40] or "help")
        await self._audit(request, name, "request", reply.status, detail, started=started)
        if command is not None:  # a job's end, or an approval's, is noted when its job ends
            at = self.services.clock()
            await note_on_incidents(self.services.store, request, command, reply.status, at=at)

    async def _audit(
        self,
        request: Request,
        command: str,
        event: str,
        outcome: str,
        detail: dict[str, Any],
        *,
        approver: str | None = None,
        started: float | None = None,
    ) -> None:
        duration = int((time.monotonic() - started) * 1000) if started is not None else None
        args = detail.pop("args", {})
        record = audit_record(
            request,
            command,
            event,
            outcome,
            approver=approver,
            duration_ms=duration,
            args=args,
            detail=detail,
        )
        await self.services.audit.record(record)


def approval_reply(approval: approval_store.Approval, t: Translator, zone: zoneinfo.ZoneInfo) -> Reply:
    """The message that asks a second person: what will happen, who asked, until when."""
    value = str(approval.id)
    return Reply(
        status="pending",
        summary=t("approval.requested", approval_id=approval.id, command=approval.command),
        elements=(
            Header(t("approval.header", command=approval.command)),
            Text(approval.summary),
            Fields(
                (
                    (t("approval.requested_by"), mention(approval.requester)),
                    (t("approval.expires"), format_time(approval.expires_at, zone)),
                    (t("approval.id"), value),
                )
            ),
            Actions(
                (
                    Button(
                        "approve",
                        t("approval.approve"),
                        value,
                        style="primary",
                        confirm=Confirm(
                            t("approval.confirm_title"),
                            approval.summary[:280],
                            t("approval.approve"),
                            t("approval.cancel"),
                        ),
                    ),
                    Button(
                        "deny",
                        t("approval.deny"),
                        value,
                        style="danger",
                        confirm=Confirm(
                            t("approval.confirm_deny_title"),
                            t("approval.confirm_deny_text"),
                            t("approval.deny"),
                            t("approval.cancel"),
                        ),
                    ),
                )
            ),
        ),
        ids={"approval_id": approval.id},
    )


def replace_ids(reply: Reply, **ids: int | str) -> Reply:
    return replace(reply, ids={**reply.ids, **ids})


def _job_started(summary: str, t: Translator, **ids: int) -> Reply:
    """A job is on its way: the line that says so and an empty progress bar, until it is watched."""
    return Reply(
        status="running",
        summary=summary,
        elements=(Text(summary), Progress(0, t("job.queued"))),
        ids=dict(ids),
    )


def _with_help_hint(reply: Reply, t: Translator) -> Reply:
    return replace(reply, elements=(*reply.elements, Text(t("usage.see_help"))))
