"""Commands declare themselves: derived usage and help keys, invariants checked when declared,
hooks run by the registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import Field

from commands.base import ApprovalText, Args, Context, Role
from commands.command import Command
from commands.registry import Registry, build_registry
from core.locales.en import MESSAGES as EN
from core.locales.ja import MESSAGES as JA
from core.reply import Reply


async def _run(ctx: Context, args: Any) -> Reply:
    return Reply(status="succeeded", summary="ok")


async def _describe(ctx: Context, args: Any) -> ApprovalText:
    return ApprovalText(summary="it")


class IncidentArgs(Args):
    severity: str
    title: str | None = None
    owner: str | None = Field(default=None, title="@user")
    rest_field = "title"
    options = ("owner",)


def test_usage_is_derived_from_the_argument_model_in_field_order() -> None:
    command = Command(name="incident open", role=Role.OPERATOR, run=_run, args=IncidentArgs)

    assert command.usage == "incident open <severity> [title…] [--owner <@user>]"
    assert command.help_key == "help.incident_open"


def test_an_explicit_usage_and_help_key_override_the_derived_ones() -> None:
    command = Command(name="x", role=Role.VIEWER, run=_run, usage="x [thing]", help_key="jobs.help")

    assert (command.usage, command.help_key) == ("x [thing]", "jobs.help")


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ({"lock": "backup"}, "lock needs background"),
        ({"lock": "backup", "background": True, "mutates": True}, None),
        ({"risky": True, "describe": _describe}, "risky needs mutates"),
        ({"risky": True, "mutates": True}, "needs describe"),
        ({"risky": True, "mutates": True, "describe": _describe}, None),
    ],
)
def test_a_bad_declaration_raises_when_it_is_made(declaration: dict[str, Any], problem: str | None) -> None:
    if problem is None:
        Command(name="x", role=Role.ADMIN, run=_run, **declaration)
        return
    with pytest.raises(ValueError, match=problem):
        Command(name="x", role=Role.ADMIN, run=_run, **declaration)


def test_every_registered_command_has_its_help_in_both_languages() -> None:
    keys = {c.help_key for c in build_registry()}

    assert len(keys) >= 10
    assert sorted(keys - set(EN)) == [] and sorted(keys - set(JA)) == []


async def test_the_registry_runs_each_declared_recovery_hook_once_with_the_interrupted_jobs() -> None:
    calls: list[Sequence[Any]] = []

    async def recover(services: Any, jobs: Sequence[Any]) -> None:
        calls.append(jobs)

    shared = {"background": True, "mutates": True, "lock": "l", "recover": recover}
    registry = Registry(
        (
            Command(name="a", role=Role.ADMIN, run=_run, **shared),
            Command(name="b", role=Role.ADMIN, run=_run, **shared),
            Command(name="c", role=Role.ADMIN, run=_run),
        )
    )
    await registry.recover(object(), ["job"])  # type: ignore[arg-type, list-item]

    assert calls == [["job"]]


def test_the_backup_commands_declare_their_crash_recovery() -> None:
    registry = build_registry()

    assert registry.get("backup") is not None and registry.get("backup").recover is not None  # type: ignore[union-attr]
