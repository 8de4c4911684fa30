"""A Reply for a person at a terminal: colours through rich on a tty, plain text everywhere else.

The same renderer-neutral reply as Slack's blocks. Plain text (pipes, files, `run --json`'s "text")
keeps the exact shape scripts already read; a terminal gets rich's tables, rules and bars, which
measure wide (Japanese) characters themselves. User text is never read as rich markup.
"""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from rich import box
from rich.console import Console as RichConsole
from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.table import Table as RichTable
from rich.text import Text as RichText

from core.formatting import display_width, format_bytes, pad, progress_bar, text_table
from core.reply import (
    MENTION_PATTERN,
    Actions,
    Button,
    Fields,
    Header,
    Level,
    Note,
    Progress,
    Reply,
    Table,
    Text,
)

LEVEL_MARK: dict[Level, str] = {"ok": "✓", "warn": "!", "fail": "✗", "info": "·"}
LEVEL_STYLE: dict[Level, str] = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "dim"}
BUTTON_STYLE = {"primary": "bold green", "danger": "bold red", None: "bold"}
CODE_STYLE = "cyan"
# Slack's marks: *bold* and `code`, each starting and ending next to a non-space character.
MARK_PATTERN = re.compile(r"\*(\S(?:[^*\n]*\S)?)\*|`([^`\n]+)`")
RICH_BAR_WIDTH = 20


# --- plain text: pipes, files and `run --json` ---------------------------------------------------


def render_text(reply: Reply) -> str:
    """The reply as plain lines without colour codes; a reply without elements shows its summary."""
    lines = [_plain(element) for element in reply.elements] or [reply.summary]
    if reply.attachment is not None:
        lines.append(attachment_line(reply))
    return MENTION_PATTERN.sub(r"@\1", "\n".join(lines))


def attachment_line(reply: Reply) -> str:
    """The console shows no image: it names the file Slack would get."""
    assert reply.attachment is not None
    return f"📎 {reply.attachment.filename} ({format_bytes(len(reply.attachment.content))})"


def _plain(element: Header | Text | Note | Fields | Table | Progress | Actions) -> str:
    if isinstance(element, Header):
        return f"== {element.text} =="
    if isinstance(element, Text):
        return element.text.replace("*", "")
    if isinstance(element, Note):
        return f"({element.text})"
    if isinstance(element, Fields):
        width = max((display_width(label) for label, _ in element.pairs), default=0)
        return "\n".join(f"{pad(label, width)} : {value}" for label, value in element.pairs)
    if isinstance(element, Table):
        return _plain_table(element)
    if isinstance(element, Progress):
        return f"{progress_bar(element.percent)} {element.text}"
    return "  ".join(f"[{i}] {label}" for i, label in _choice_labels(element.buttons))


def _plain_table(table: Table) -> str:
    if not table.levels:
        return text_table(table.columns, table.rows)
    rows = tuple((LEVEL_MARK[level], *row) for level, row in zip(table.levels, table.rows, strict=False))
    return text_table(("", *table.columns), rows)


def _choice_labels(buttons: tuple[Button, ...]) -> list[tuple[int, str]]:
    """`Approve (approve 12)`: the label and the words that choosing it types."""
    return [(i, f"{b.label} ({b.action_id} {b.value})") for i, b in enumerate(buttons, 1)]


def reply_json(reply: Reply) -> str:
    """`gardenbot run --json`: status, the plain text, the summary and the reply's ids."""
    payload: dict[str, Any] = {
        "status": reply.status,
        "text": render_text(reply),
        "summary": reply.summary,
    }
    payload.update(reply.ids)
    if reply.attachment is not None:
        payload["attachment"] = reply.attachment.filename
    return json.dumps(payload, ensure_ascii=False)


# --- a terminal: rich renderables ----------------------------------------------------------------


def _people(text: str) -> str:
    return MENTION_PATTERN.sub(r"@\1", text)


def marked(text: str, style: str = "") -> RichText:
    """Text with Slack's *bold* and `code` marks shown as styles, not as the raw characters."""
    text = _people(text)
    out = RichText(style=style)
    position = 0
    for match in MARK_PATTERN.finditer(text):
        out.append(text[position : match.start()])
        bold, code = match.groups()
        if bold is not None:
            out.append(bold, style="bold")
        else:
            out.append(code, style=CODE_STYLE)
        position = match.end()
    out.append(text[position:])
    return out


def renderables(reply: Reply) -> list[RenderableType]:
    """One rich renderable per element; a reply without elements shows its summary."""
    shown = [_rich(element) for element in reply.elements] or [marked(reply.summary)]
    if reply.attachment is not None:
        shown.append(RichText(attachment_line(reply), style="dim"))
    return shown


def _rich(element: Header | Text | Note | Fields | Table | Progress | Actions) -> RenderableType:
    if isinstance(element, Header):
        return Rule(RichText(_people(element.text), style="bold"), align="left", style="cyan")
    if isinstance(element, Text):
        return marked(element.text)
    if isinstance(element, Note):
        return RichText(_people(element.text), style="dim")
    if isinstance(element, Fields):
        return _rich_fields(element)
    if isinstance(element, Table):
        return _rich_table(element)
    if isinstance(element, Progress):
        return _rich_progress(element)
    return _rich_choices(element.buttons)


def _rich_fields(fields: Fields) -> RichTable:
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in fields.pairs:
        grid.add_row(RichText(_people(label)), RichText(_people(value)))
    return grid


def _rich_table(table: Table) -> RichTable:
    out = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    if table.levels:
        out.add_column("", no_wrap=True)
    for column in table.columns:
        out.add_column(RichText(_people(column)))
    for index, row in enumerate(table.rows):
        cells = [RichText(_people(cell)) for cell in row]
        if table.levels:
            level = table.levels[index] if index < len(table.levels) else "info"
            cells.insert(0, RichText(LEVEL_MARK[level], style=LEVEL_STYLE[level]))
        out.add_row(*cells)
    return out


def _rich_progress(progress: Progress) -> RichTable:
    percent = min(max(progress.percent, 0), 100)
    grid = RichTable.grid(padding=(0, 1))
    grid.add_row(
        ProgressBar(total=100, completed=percent, width=RICH_BAR_WIDTH),
        RichText(f"{percent}%", style="bold"),
        RichText(_people(progress.text)),
    )
    return grid


def _rich_choices(buttons: tuple[Button, ...]) -> RichText:
    out = RichText()
    for (number, label), button in zip(_choice_labels(buttons), buttons, strict=True):
        if number > 1:
            out.append("  ")
        out.append(f"[{number}] ", style=BUTTON_STYLE[button.style])
        out.append(_people(label))
    return out


def terminal(stream: TextIO, *, force_terminal: bool | None = None, width: int | None = None) -> RichConsole:
    """A rich console writing to `stream`; markup, emoji codes and number highlighting stay off."""
    return RichConsole(
        file=stream,
        force_terminal=force_terminal,
        width=width,
        highlight=False,
        markup=False,
        emoji=False,
    )


def print_reply(reply: Reply, stream: TextIO, *, console: RichConsole | None = None) -> None:
    """Colours on a terminal (or the given rich console); plain text on a pipe or into a file."""
    if console is None and not stream.isatty():
        stream.write(render_text(reply) + "\n")
        stream.flush()
        return
    (console or terminal(stream)).print(*renderables(reply))
