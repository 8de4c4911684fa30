"""Render a core.reply.Reply as Slack Block Kit, always within Slack's limits.

Blocks are built with slack_sdk's models so their own validation runs; every text is cut to its
limit first, so that validation never raises. Long output is cut with a note, never rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from core.formatting import display_width, progress_bar
from core.reply import (
    MENTION_PATTERN,
    Actions,
    Button,
    Confirm,
    Element,
    Fields,
    Header,
    Level,
    Note,
    Progress,
    Reply,
    Table,
    Text,
)

# Slack's documented limits (https://docs.slack.dev/reference/block-kit/).
MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
CONTEXT_TEXT_MAX = 3000
ACTIONS_ELEMENTS_MAX = 25
BUTTON_LABEL_MAX = 75
BUTTON_VALUE_MAX = 2000
ACTION_ID_MAX = 255
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
CONFIRM_BUTTON_MAX = 30
FALLBACK_MAX = 40000

# Table cells wider than this are cut so one long value cannot swallow the message.
CELL_WIDTH_MAX = 60
ELLIPSIS = "…"
CODE_FENCE = "```"

LEVEL_EMOJI: dict[Level, str] = {
    "ok": ":white_check_mark:",
    "warn": ":warning:",
    "fail": ":x:",
    "info": ":information_source:",
}
# Check-table header rows get a neutral emoji so their columns line up with the rows below.
HEADER_EMOJI = ":heavy_minus_sign:"

Group = Element | tuple[Note, ...]


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return MENTION_PATTERN.sub(r"<@\1>", escaped)


def cut(text: str, limit: int) -> str:
    """Cut to at most `limit` characters, ending with an ellipsis, never inside an &entity;."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - len(ELLIPSIS), 0)]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + ELLIPSIS


def fit_width(text: str, width: int) -> str:
    """Cut to `width` columns (ellipsis included) and pad with spaces to exactly `width`."""
    if display_width(text) > width:
        kept = ""
        for char in text:
            if display_width(kept + char) > width - 1:
                break
            kept += char
        text = kept + ELLIPSIS
    return text + " " * (width - display_width(text))


def cut_note(count: int, what: str) -> str:
    return f"_{ELLIPSIS} {count} more {what} cut_"


def _mrkdwn(text: str) -> MarkdownTextObject:
    # verbatim: Slack must not turn user text into links or @channel mentions.
    return MarkdownTextObject(text=text or " ", verbatim=True)


def _plain(text: str, limit: int) -> PlainTextObject:
    return PlainTextObject(text=cut(text, limit) or " ", emoji=True)


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_mrkdwn(cut(text, SECTION_TEXT_MAX)))


def _chunks(lines: Sequence[str], limit: int) -> list[list[str]]:
    """Pack lines into groups whose newline-joined length stays within `limit`."""
    chunks: list[list[str]] = []
    size = 0
    for line in lines:
        line = cut(line, limit)
        if chunks and size + 1 + len(line) <= limit:
            chunks[-1].append(line)
            size += 1 + len(line)
        else:
            chunks.append([line])
            size = len(line)
    return chunks


def _render_header(header: Header, room: int) -> list[Block]:
    if not header.text.strip():
        return []  # Slack refuses empty text
    return [HeaderBlock(text=_plain(header.text, HEADER_MAX))]


def _render_text(text: Text, room: int) -> list[Block]:
    if not text.text.strip():
        return []  # Slack refuses empty text
    lines = [piece for line in escape(text.text).split("\n") for piece in _split(line)]
    chunks = _chunks(lines, SECTION_TEXT_MAX)
    sections = ["\n".join(chunk) for chunk in chunks[:room]]
    if len(chunks) > room:
        lost = sum(len(chunk) for chunk in chunks[room:])
        sections[-1] = _append_line(sections[-1], cut_note(lost, "lines"), SECTION_TEXT_MAX)
    return [_section(body) for body in sections]


def _split(line: str, limit: int = SECTION_TEXT_MAX) -> list[str]:
    """A line too long for one section becomes several, never splitting an &entity;."""
    pieces: list[str] = []
    while len(line) > limit:
        head = line[:limit]
        amp = head.rfind("&")
        if amp > 0 and ";" not in head[amp:]:
            head = head[:amp]
        pieces.append(head)
        line = line[len(head) :]
    return [*pieces, line]


def _append_line(body: str, line: str, limit: int) -> str:
    return cut(body, limit - len(line) - 1) + "\n" + line


def _cap(items: list[MarkdownTextObject], per: int, room: int, what: str) -> list[list[Any]]:
    """Groups of `per` items, at most `room` of them; the last slot says how many were cut."""
    groups = [items[i : i + per] for i in range(0, len(items), per)]
    if len(groups) > room:
        shown = room * per - 1
        groups = groups[:room]
        groups[-1] = [*groups[-1][:-1], _mrkdwn(cut_note(len(items) - shown, what))]
    return groups


def _render_notes(notes: tuple[Note, ...], room: int) -> list[Block]:
    texts = [_mrkdwn(cut(escape(n.text), CONTEXT_TEXT_MAX)) for n in notes if n.text.strip()]
    return [ContextBlock(elements=g) for g in _cap(texts, CONTEXT_ELEMENTS_MAX, room, "notes")]


def _render_fields(fields: Fields, room: int) -> list[Block]:
    texts = [
        _mrkdwn(cut(f"*{escape(label)}*\n{escape(value)}", FIELD_TEXT_MAX)) for label, value in fields.pairs
    ]
    return [SectionBlock(fields=g) for g in _cap(texts, SECTION_FIELDS_MAX, room, "fields")]


def _table_lines(table: Table) -> tuple[str | None, list[str]]:
    """Aligned header and row lines; widths measured as displayed, then escaped for mrkdwn."""

    # A backtick would close the code span; the look-alike keeps the cell readable.
    def clean(cell: str) -> str:
        return cell.replace("`", "ˋ").replace("\n", " ")

    count = max([len(table.columns), *(len(row) for row in table.rows)], default=0)
    header = [clean(c) for c in table.columns] + [""] * (count - len(table.columns))
    rows = [[clean(c) for c in row] + [""] * (count - len(row)) for row in table.rows]
    widths = [
        min(max([display_width(r[i]) for r in [header, *rows]], default=0), CELL_WIDTH_MAX)
        for i in range(count)
    ]

    def line(cells: list[str]) -> str:
        return escape("  ".join(fit_width(c, w) for c, w in zip(cells, widths, strict=True)))

    head = line(header).rstrip() if table.columns else None
    return head, [line(row).rstrip() for row in rows]


def _render_table(table: Table, room: int) -> list[Block]:
    head, lines = _table_lines(table)
    if table.levels:
        # Emoji do not render inside a code block, so each check row is its own code span.
        def span(text: str) -> str:
            return f"`{text or ' '}`"

        rows = [
            f"{LEVEL_EMOJI[table.levels[i]] if i < len(table.levels) else HEADER_EMOJI} {span(t)}"
            for i, t in enumerate(lines)
        ]
        header = [f"{HEADER_EMOJI} {span(head)}"] if head is not None else []
        return _pack_rows(header, rows, room, "", "")
    header = [head] if head is not None else []
    return _pack_rows(header, lines, room, CODE_FENCE + "\n", "\n" + CODE_FENCE)


def _pack_rows(header: list[str], rows: list[str], room: int, opening: str, closing: str) -> list[Block]:
    """Spread rows over at most `room` sections, repeating the header; cut the rest with a note."""
    if not header and not rows:
        return []
    note_room = len(cut_note(len(rows), "rows")) + 1
    limit = SECTION_TEXT_MAX - len(opening) - len(closing) - note_room
    head_size = sum(len(h) + 1 for h in header)
    chunks = _chunks(rows, limit - head_size) or [[]]
    kept = chunks[:room]
    shown = sum(len(chunk) for chunk in kept)
    bodies = [opening + "\n".join([*header, *chunk]) + closing for chunk in kept]
    if shown < len(rows):
        bodies[-1] += "\n" + cut_note(len(rows) - shown, "rows")
    return [_section(body) for body in bodies]


def _render_progress(progress: Progress, room: int) -> list[Block]:
    return [_section(f"{progress_bar(progress.percent)} {escape(progress.text)}")]


def _confirm(confirm: Confirm) -> ConfirmObject:
    return ConfirmObject(
        title=_plain(confirm.title, CONFIRM_TITLE_MAX),
        text=_mrkdwn(cut(escape(confirm.text), CONFIRM_TEXT_MAX)),
        confirm=_plain(confirm.confirm, CONFIRM_BUTTON_MAX),
        deny=_plain(confirm.deny, CONFIRM_BUTTON_MAX),
    )


def _button(button: Button) -> ButtonElement:
    return ButtonElement(
        text=_plain(button.label, BUTTON_LABEL_MAX),
        action_id=button.action_id[:ACTION_ID_MAX],
        value=button.value[:BUTTON_VALUE_MAX] or None,  # Slack refuses an empty value
        style=button.style,
        confirm=_confirm(button.confirm) if button.confirm is not None else None,
    )


def _render_actions(actions: Actions, room: int) -> list[Block]:
    buttons = [_button(b) for b in actions.buttons[:ACTIONS_ELEMENTS_MAX]]
    return [ActionsBlock(elements=list(buttons))] if buttons else []


def _group(elements: Sequence[Element]) -> list[Group]:
    """Consecutive notes share one context block."""
    groups: list[Group] = []
    for element in elements:
        if isinstance(element, Note):
            last = groups[-1] if groups else None
            if isinstance(last, tuple):
                groups[-1] = (*last, element)
            else:
                groups.append((element,))
        else:
            groups.append(element)
    return groups


def _render_group(group: Group, room: int) -> list[Block]:
    if isinstance(group, tuple):
        return _render_notes(group, room)
    if isinstance(group, Header):
        return _render_header(group, room)
    if isinstance(group, Text):
        return _render_text(group, room)
    if isinstance(group, Fields):
        return _render_fields(group, room)
    if isinstance(group, Table):
        return _render_table(group, room)
    if isinstance(group, Progress):
        return _render_progress(group, room)
    if isinstance(group, Note):
        return _render_notes((group,), room)
    return _render_actions(group, room)


def _fit_groups(groups: list[Group]) -> tuple[list[Group], int]:
    """When there are more groups than blocks, drop from the end but keep every Actions."""
    if len(groups) <= MAX_BLOCKS:
        return groups, 0
    budget = MAX_BLOCKS - 1  # one block for the cut note
    actions = sum(isinstance(g, Actions) for g in groups)
    others = max(budget - actions, 0)
    kept: list[Group] = []
    for group in groups:
        if isinstance(group, Actions) or others > 0:
            if not isinstance(group, Actions):
                others -= 1
            if len(kept) < budget:
                kept.append(group)
    return kept, len(groups) - len(kept)


def render_blocks(reply: Reply) -> list[dict[str, Any]]:
    """Block Kit blocks for the reply; a reply without elements shows its summary."""
    groups, dropped = _fit_groups(_group(reply.elements) or [Text(reply.summary)])
    blocks: list[Block] = []
    for index, group in enumerate(groups):
        # Leave one block for every group still to come.
        room = MAX_BLOCKS - len(blocks) - (len(groups) - index - 1) - (1 if dropped else 0)
        blocks.extend(_render_group(group, max(room, 1)))
    if dropped:
        blocks.append(ContextBlock(elements=[_mrkdwn(cut_note(dropped, "blocks"))]))
    return [block.to_dict() for block in blocks[:MAX_BLOCKS]]


def fallback_text(reply: Reply) -> str:
    """The notification text: the summary alone, escaped."""
    return cut(escape(reply.summary), FALLBACK_MAX) or " "


def render_message(reply: Reply) -> dict[str, Any]:
    """Arguments for chat.postMessage / chat.update / respond(): fallback text and blocks."""
    return {"text": fallback_text(reply), "blocks": render_blocks(reply)}
