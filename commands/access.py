"""THE authorisation rule: who may run a command, decide an approval, read whose audit trail.

Everything asks here: the pipeline before it runs anything, `help` as a dry run (it lists only
what the asker may run), the audit command for its own-actions rule, and button clicks (they
reach the pipeline as requests). commands/policy.py only says who holds which role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from commands.base import Actor, Request, Role
from commands.policy import Policy
from core.errors import NotAllowed

if TYPE_CHECKING:
    from commands.command import Command
    from store.approvals import Approval


@dataclass(frozen=True)
class Verdict:
    """Allowed, or why not (an i18n key and its parameters)."""

    allowed: bool
    reason_key: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def require(self) -> None:
        if not self.allowed:
            raise NotAllowed(self.reason_key, **self.params)


ALLOWED = Verdict(True)


class Access:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def may_run(self, actor: Actor, command: Command) -> Verdict:
        role = self.policy.role_of(actor)
        if role == Role.NONE:
            return Verdict(False, "role.unknown_user", {"user": actor.user_id})
        if role < command.role:
            needed, have = command.role.name.lower(), role.name.lower()
            return Verdict(False, "role.too_low", {"command": command.name, "needed": needed, "have": have})
        return ALLOWED

    def require_run(self, actor: Actor, command: Command) -> None:
        self.may_run(actor, command).require()

    def may_decide(self, request: Request, approval: Approval) -> Verdict:
        """Not from the requester's console login, nobody behind the request (the requester or an admin
        acting as them), and an approver with a role."""
        actor, approval_id = request.actor, approval.id
        login = request.console.os_login if request.console is not None else None
        if login is not None and login == approval.requester_os_login:
            return Verdict(False, "approval.same_os_login", {"approval_id": approval_id, "login": login})
        if deciders(request) & approval.requested_by():
            return Verdict(False, "approval.own_request", {"approval_id": approval_id})
        behind = request.console.impersonated_by if request.console is not None else None
        people = [actor] if behind is None else [actor, Actor(user_id=behind)]
        if not all(self.policy.is_approver(person) for person in people):
            return Verdict(False, "approval.not_an_approver", {"approval_id": approval_id})
        return ALLOWED

    def may_read_audit_of(self, actor: Actor, user: str | None) -> Verdict:
        """Admins read anyone's trail (None: everyone's); others only their own."""
        if self.policy.role_of(actor) >= Role.ADMIN or user == actor.user_id:
            return ALLOWED
        return Verdict(False, "audit.only_own")

    def is_approver(self, actor: Actor) -> bool:
        return self.policy.is_approver(actor)


def deciders(request: Request) -> frozenset[str]:
    """Every person behind a decision: the actor and an admin acting as them at a console."""
    console = request.console
    behind = console.impersonated_by if console is not None else None
    return frozenset(p for p in (request.actor.user_id, behind) if p)
