"""A sub-command's declaration: what it is called, what it takes, who may run it, how it runs.

A declaration that breaks a rule (a lock without a stored job, a risky command that changes
nothing or cannot say what it will do) raises when it is made, so a bad one never reaches a registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic.fields import FieldInfo

from commands.base import ApprovalText, Args, Context, NoArgs, Role
from core.reply import Reply

if TYPE_CHECKING:
    from commands.services import Services
    from store.jobs import Job

Handler = Callable[[Context, Any], Awaitable[Reply]]
Describer = Callable[[Context, Any], Awaitable[ApprovalText]]
Preflight = Callable[[Context, Any], Awaitable[None]]
# After a crash: the jobs of dead processes, for the command that owns their leftovers.
RecoverHook = Callable[["Services", Sequence["Job"]], Awaitable[None]]
StartHook = Callable[["Services"], Awaitable[None]]
# Break-glass: a risky command that may run without a second person right now (an open P1) returns
# what says why (kept as the job's binding and audited); None asks for approval as usual.
Waiver = Callable[[Context, Any], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class Command:
    """A sub-command: name, arguments, role, risk, help, and what runs it.

    `usage` is derived from the argument model unless given; `help_key` defaults to
    `help.<name with spaces as _>`.
    """

    name: str  # "health", "cache flush", "backup verify"
    role: Role
    run: Handler
    args: type[Args] = NoArgs
    usage: str = ""  # "backup verify <id>"; derived when empty
    help_key: str = ""  # i18n key of the one-line help; derived when empty
    risky: bool = False  # needs a second person's approval
    mutates: bool = False  # changes something: refused while the bot's store is down
    background: bool = False  # runs as a stored job with progress
    describe: Describer | None = None  # the approval text of a risky command
    lock: str | None = None  # one at a time across replicas (e.g. "backup")
    preflight: Preflight | None = None  # refuse before anything starts (unknown id, unusable backup)
    recover: RecoverHook | None = None  # crash recovery at start-up, given the interrupted jobs
    on_start: StartHook | None = None  # once per process, after the store is prepared
    waive_approval: Waiver | None = None  # risky, except when this says why not (break-glass)

    def __post_init__(self) -> None:
        if not self.usage:
            object.__setattr__(self, "usage", derive_usage(self.name, self.args))
        if not self.help_key:
            object.__setattr__(self, "help_key", "help." + self.name.replace(" ", "_"))
        problem = declaration_problem(self)
        if problem is not None:
            raise ValueError(f"command {self.name!r}: {problem}")

    @property
    def needs_store(self) -> bool:
        """Whether it writes the bot's store (a job row, an approval): refused while it is down."""
        return self.mutates or self.risky or self.background


def declaration_problem(command: Command) -> str | None:
    """The first rule a declaration breaks, or None."""
    if command.name != command.name.lower() or not command.name.strip():
        return "a name is lower-case words"
    if command.lock is not None and not command.background:
        return "a lock is held by a stored job: lock needs background=True"
    if command.risky and not command.mutates:
        return "a risky command changes something: risky needs mutates=True"
    if command.waive_approval is not None and not command.risky:
        return "only a risky command's approval can be waived: waive_approval needs risky=True"
    if command.risky and command.describe is None:
        return "a risky command needs describe() for its approval text"
    return None


def derive_usage(name: str, model: type[Args]) -> str:
    """`name <required> [optional] <rest…> [--option <value>]` from the model's fields in order."""
    words = [name]
    for field_name, info in model.model_fields.items():
        words.append(_usage_word(field_name, info, model))
    return " ".join(words)


def _usage_word(field_name: str, info: FieldInfo, model: type[Args]) -> str:
    placeholder = info.title or field_name.replace("_", "-")
    if info.annotation is bool:
        return f"[--{field_name.replace('_', '-')}]"
    if field_name in model.options:
        word = f"--{field_name.replace('_', '-')} <{placeholder}>"
        return word if info.is_required() else f"[{word}]"
    if field_name == model.rest_field:
        placeholder += "…"
    return f"<{placeholder}>" if info.is_required() else f"[{placeholder}]"
