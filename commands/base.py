"""What every sub-command is made of: who asks, what they may do, how arguments are read."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config import SYSTEM_ACTORS
from core.errors import UsageError
from core.i18n import Translator
from core.incidents import people_behind

if TYPE_CHECKING:
    from commands.services import Services

MAX_REQUEST_CHARS = 2_000  # Slack's slash-command text is far shorter; anything longer is not a command
Source = Literal["slack", "console", "scheduler", "webhook"]
ProgressCallback = Callable[[int, str], Awaitable[None]]


class Role(IntEnum):
    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


@dataclass(frozen=True)
class Actor:
    """Who asks: a Slack user (with the user groups they belong to) or one of the bot's own actors."""

    user_id: str
    group_ids: frozenset[str] = frozenset()
    system: bool = False  # the scheduler or the alert webhook: its role is configured, audited by name

    @classmethod
    def system_actor(cls, name: str) -> Actor:
        """The scheduler or the webhook; any other name is a programming error."""
        if name not in SYSTEM_ACTORS:
            raise ValueError(f"unknown system actor {name!r}; known: {', '.join(SYSTEM_ACTORS)}")
        return cls(user_id=name, system=True)


@dataclass(frozen=True)
class ConsoleOrigin:
    """The person at a console, as the OS knows them: a Slack ID alone cannot tell two people apart."""

    os_login: str
    host: str
    impersonated_by: str | None = None  # the admin's Slack ID when acting as someone else (or as `scheduler`)

    def audit_detail(self) -> dict[str, str]:
        detail = {"os_login": self.os_login, "host": self.host}
        if self.impersonated_by is not None:
            detail["impersonated_by"] = self.impersonated_by
        return detail


DECISION_WORDS = {"approve": "approved", "deny": "denied"}
Verdict = Literal["approved", "denied"]


@dataclass(frozen=True)
class Decision:
    """A typed intent: an approver's answer to one approval (a click, or `approve 12` typed)."""

    approval_id: int
    verdict: Verdict

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Decision | None:
        """`approve 12` / `deny 12` as a Decision; None for any other line; UsageError if malformed."""
        if not words or words[0].lower() not in DECISION_WORDS:
            return None
        if len(words) != 2 or not words[1].isdigit() or len(words[1]) > 18:
            raise UsageError("usage.approval_id", usage=f"{words[0].lower()} <approval-id>")
        verdict: Verdict = "approved" if words[0].lower() == "approve" else "denied"
        return cls(int(words[1]), verdict)


@dataclass(frozen=True)
class Request:
    actor: Actor
    text: str
    source: Source
    channel: str | None = None
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    locale: str | None = None
    console: ConsoleOrigin | None = None  # set by a console outside the demo
    decision: Decision | None = None  # a typed decision; else `text` is a command line
    # A schedule's own fire (cron or catch-up), not a person's: its uneventful replies go unaudited.
    routine: bool = False

    def people_behind(self) -> frozenset[str]:
        """Every person behind this request: the actor, an admin acting as them, the console's login."""
        console = self.console
        if console is None:
            return people_behind(self.actor.user_id)
        return people_behind(self.actor.user_id, console.impersonated_by, console.os_login)


class Args(BaseModel):
    """Base of every argument model: frozen, no extra fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    # Field names filled from the rest of the line (e.g. an incident title with spaces).
    rest_field: ClassVar[str | None] = None
    # Field names shown as `--name <value>` in the usage line (any field may be given that way).
    options: ClassVar[tuple[str, ...]] = ()


class NoArgs(Args):
    pass


@dataclass(frozen=True)
class ApprovalText:
    """What an approver is shown, and facts the action must still match when approved."""

    summary: str
    binding: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a command's handler may use while it runs."""

    request: Request
    services: Services
    t: Translator
    progress: ProgressCallback
    job_id: int | None = None
    approved_by: str | None = None
    binding: dict[str, Any] = field(default_factory=dict)
    # A job calls this right before an irreversible step (a restore's swap): it raises unless the
    # job's lock is still provably held, so a job that lost its lock never does that step.
    fence: Callable[[], Awaitable[None]] = field(default=lambda: no_fence())
    # Start another registered command as a job of its own for the same asker, without waiting for
    # it (a P1's evidence): the job's id, or None where no job can start (outside the pipeline).
    follow_up: Callable[[str, Args], Awaitable[int | None]] = field(
        default=lambda name, args: no_follow_up(name, args)
    )
    # What the preflight found, for describe(): a slow check runs once per request, not twice.
    found: Any = None

    @property
    def actor(self) -> Actor:
        return self.request.actor


async def no_progress(percent: int, text: str) -> None:
    return None


async def no_fence() -> None:
    return None


async def no_follow_up(name: str, args: Args) -> int | None:
    return None


def split_words(text: str) -> list[str]:
    """Split like a shell, so quoted titles keep their spaces; refuse what cannot be a command."""
    if len(text) > MAX_REQUEST_CHARS:
        raise UsageError("usage.too_long", limit=MAX_REQUEST_CHARS)
    if any(ch in text for ch in ("\x00", "\r")):
        raise UsageError("usage.control_chars")
    normalised = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'")
    normalised = normalised.replace("\u2019", "'").replace("\u3000", " ")  # Slack smart quotes, 全角 space
    try:
        return shlex.split(normalised)
    except ValueError:
        raise UsageError("usage.unbalanced_quotes") from None


def parse_args(model: type[Args], words: Sequence[str], *, usage: str) -> Args:
    """Positional words fill the model's fields in order; `--name value` fills a field by name,
    and `--name` alone sets a bool field (a flag).

    The model's `rest_field` takes every remaining word joined by spaces.
    """
    names = list(model.model_fields)
    values: dict[str, Any] = {}
    positional: list[str] = []
    it = iter(words)
    for word in it:
        if word.startswith("--") and len(word) > 2:
            key = word[2:].replace("-", "_")
            if key not in model.model_fields:
                raise UsageError("usage.unknown_option", usage=usage, option=word)
            if model.model_fields[key].annotation is bool:  # a flag (`--vacuum`) takes no value
                values[key] = True
                continue
            value = next(it, None)
            if value is None:
                raise UsageError("usage.option_needs_value", usage=usage, option=word)
            values[key] = value
        else:
            positional.append(word)
    free = [n for n in names if n not in values]
    rest = model.rest_field
    for name in free:
        if not positional:
            break
        if name == rest:
            values[name] = " ".join(positional)
            positional = []
            break
        values[name] = positional.pop(0)
    if positional:
        raise UsageError("usage.too_many_arguments", usage=usage, extra=" ".join(positional)[:80])
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"]) or "?"
        if error["type"] == "missing":
            raise UsageError("usage.missing_argument", usage=usage, argument=loc) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise UsageError("usage.bad_argument", usage=usage, argument=loc, problem=message[:200]) from None
