"""The explicit list of sub-commands. Importing a command module registers nothing by itself."""

from __future__ import annotations

from commands import audit, backup, cache, health, jobs, restore
from commands import help as help_command
from commands.base import Command, Registry

ALL_COMMANDS: tuple[Command, ...] = (
    *help_command.COMMANDS,
    *health.COMMANDS,
    *jobs.COMMANDS,
    *audit.COMMANDS,
    *cache.COMMANDS,
    *backup.COMMANDS,
    *restore.COMMANDS,
)


def build_registry() -> Registry:
    return Registry(ALL_COMMANDS)
