"""What a command answers, independent of where it is shown.

Commands return a `Reply` made of a few plain elements; `bot/blocks.py` renders it as Block Kit
and `bot/console.py` as text. Nothing here knows Slack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# A user reference inside any text: Slack shows it as the user's name, the console as @ID.
MENTION_PATTERN = re.compile("\ue000([UW][A-Z0-9]{2,})\ue001")


def mention(user_id: str) -> str:
    """Refer to a Slack user in reply text without knowing how the surface shows people."""
    return f"\ue000{user_id}\ue001" if re.fullmatch(r"[UW][A-Z0-9]{2,}", user_id) else user_id


Status = Literal["succeeded", "failed", "refused", "pending", "running"]
Level = Literal["ok", "warn", "fail", "info"]
Visibility = Literal["channel", "asker"]


@dataclass(frozen=True)
class Header:
    text: str


@dataclass(frozen=True)
class Text:
    """A paragraph. `*bold*` and `code` marks are allowed; nothing else is interpreted."""

    text: str


@dataclass(frozen=True)
class Note:
    """Small print under the main content (who, when, correlation id)."""

    text: str


@dataclass(frozen=True)
class Fields:
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # One level per row (ok/warn/fail/info) when the rows are checks; empty otherwise.
    levels: tuple[Level, ...] = ()


@dataclass(frozen=True)
class Progress:
    percent: int
    text: str


@dataclass(frozen=True)
class Confirm:
    title: str
    text: str
    confirm: str
    deny: str


@dataclass(frozen=True)
class Button:
    action_id: str
    label: str
    value: str
    style: Literal["primary", "danger"] | None = None
    confirm: Confirm | None = None


@dataclass(frozen=True)
class Actions:
    buttons: tuple[Button, ...]


Element = Header | Text | Note | Fields | Table | Progress | Actions


@dataclass(frozen=True)
class Attachment:
    """A file that goes with the reply (the weekly report's chart): Slack uploads it, the console names it."""

    filename: str
    content: bytes = field(repr=False)
    title: str = ""


@dataclass(frozen=True)
class Edit:
    """An earlier message to change in place (an expired approval loses its buttons).

    `ref` is where that message was shown, as stored with it ({"channel": …, "ts": …}).
    """

    ref: dict[str, str]
    reply: Reply


@dataclass(frozen=True)
class Reply:
    """A command's answer: status, a one-line summary (Slack's fallback text), and elements."""

    status: Status
    summary: str
    elements: tuple[Element, ...] = ()
    visibility: Visibility = "channel"
    # Ids of what the request created or waits on: approval_id, job_id, backup_id, incident_id.
    ids: dict[str, int | str] = field(default_factory=dict)
    attachment: Attachment | None = None
    edits: tuple[Edit, ...] = ()
    # Nothing happened worth an audit record (a sweep that expired nothing, a probe whose paths kept
    # their state): a routine scheduled fire that answers so is not audited (commands/pipeline.py).
    uneventful: bool = False

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "failed": 1, "refused": 2, "pending": 3, "running": 0}[self.status]
