"""The command registry: the explicit list of sub-commands and the hooks they declare.

Importing a command module registers nothing by itself; `build_registry()` lists them. (The
backup *catalog* is store/backups.py: a different thing.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from commands import (
    alert,
    approvals,
    audit,
    backup,
    cache,
    db,
    health,
    hosts,
    incident,
    jobs,
    logs,
    probe,
    release,
    report,
    restore,
    schedules,
    security_days,
    users,
)
from commands import help as help_command
from commands.command import Command
from commands.services import Services
from core.errors import UsageError
from store.jobs import Job

Hook = TypeVar("Hook")

ALL_COMMANDS: tuple[Command, ...] = (
    *health.COMMANDS,
    *jobs.COMMANDS,
    *audit.COMMANDS,
    *cache.COMMANDS,
    *backup.COMMANDS,
    *restore.COMMANDS,
    *users.COMMANDS,
    *db.COMMANDS,
    *logs.COMMANDS,
    *security_days.COMMANDS,
    *alert.COMMANDS,
    *hosts.COMMANDS,
    *release.COMMANDS,
    *incident.COMMANDS,
    *report.COMMANDS,
    *schedules.COMMANDS,
    *probe.COMMANDS,
    *approvals.COMMANDS,
)


class Registry:
    """The sub-commands by name; the longest name that starts the request wins."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self._by_name: dict[str, Command] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command) -> None:
        if command.name in self._by_name:
            raise ValueError(f"command {command.name!r} declared twice")
        self._by_name[command.name] = command

    def __iter__(self) -> Iterator[Command]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Command | None:
        return self._by_name.get(name)

    def find(self, words: Sequence[str]) -> tuple[Command, list[str]]:
        for size in (3, 2, 1):
            name = " ".join(words[:size]).lower()
            if len(words) >= size and name in self._by_name:
                return self._by_name[name], list(words[size:])
        raise UsageError("usage.unknown_command", usage="help", word=words[0][:40])

    def family(self, word: str) -> list[Command]:
        """Every command whose name starts with this word (help for 'backup' shows all three)."""
        return [c for c in self._by_name.values() if c.name.split()[0] == word.lower()]

    async def recover(self, services: Services, interrupted: Sequence[Job]) -> None:
        """Run each declared crash-recovery hook once (commands sharing one run it once)."""
        for hook in _distinct(c.recover for c in self):
            await hook(services, interrupted)

    async def start(self, services: Services) -> None:
        """Run each declared start-up hook once."""
        for hook in _distinct(c.on_start for c in self):
            await hook(services)


def _distinct(hooks: Iterable[Hook | None]) -> list[Hook]:
    seen: list[Hook] = []
    for hook in hooks:
        if hook is not None and hook not in seen:
            seen.append(hook)
    return seen


def build_registry(commands: Sequence[Command] = ALL_COMMANDS) -> Registry:
    """The registry of these commands, with `help` answering from it."""
    registry = Registry(())
    registry.add(help_command.help_command(registry))
    for command in commands:
        registry.add(command)
    return registry
