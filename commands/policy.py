"""Roles and approvers from the configuration: user IDs, user-group IDs and the system actors."""

from __future__ import annotations

from commands.base import Actor, Role
from core.config import SYSTEM_ACTORS, Settings


class Policy:
    def __init__(self, settings: Settings) -> None:
        self._roles: dict[str, Role] = {}
        # Ascending, so an ID listed under several roles keeps the highest.
        for role, ids in (
            (Role.VIEWER, settings.roles.viewer),
            (Role.OPERATOR, settings.roles.operator),
            (Role.ADMIN, settings.roles.admin),
        ):
            for member in ids:
                self._roles[member] = role
        self._approvers = frozenset(settings.approvers)
        self._default = Role.VIEWER if settings.default_role == "viewer" else Role.NONE
        configured = settings.system_actors
        self._system = {name: Role[str(getattr(configured, name)).upper()] for name in SYSTEM_ACTORS}

    def role_of(self, actor: Actor) -> Role:
        if actor.system:
            return self._system.get(actor.user_id, Role.NONE)
        ids = {actor.user_id, *actor.group_ids}
        return max((self._roles.get(i, Role.NONE) for i in ids), default=Role.NONE) or self._default

    def is_approver(self, actor: Actor) -> bool:
        """Listed in `approvers` by user or group, and an operator or admin: approver is a flag on a role.
        A system actor never is: a person decides what the scheduler or the webhook asked for."""
        if actor.system:
            return False
        listed = bool({actor.user_id, *actor.group_ids} & self._approvers)
        return listed and self.role_of(actor) >= Role.OPERATOR

    def approvers_without_role(self) -> list[str]:
        """Listed approvers who are not themselves operator or admin: they cannot decide anything."""
        return sorted(i for i in self._approvers if self._roles.get(i, Role.NONE) < Role.OPERATOR)

    def group_ids(self) -> frozenset[str]:
        """The user groups (S…) named by any role or as approvers: whose membership matters."""
        return frozenset(i for i in (*self._roles, *self._approvers) if i.startswith("S"))
