"""Block Kit rendering: every element, Slack's limits, alignment and escaping."""

from __future__ import annotations

import re
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.blocks import escape, render_blocks, render_message
from core.formatting import display_width, progress_bar
from core.reply import (
    Actions,
    Button,
    Confirm,
    Element,
    Fields,
    Header,
    Note,
    Progress,
    Reply,
    Table,
    Text,
)


def reply(*elements: Element, summary: str = "done") -> Reply:
    return Reply(status="succeeded", summary=summary, elements=elements)


def revalidate(blocks: list[dict[str, Any]]) -> None:
    """Parse back with slack_sdk and validate: what we send must pass Slack's own models."""
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None
        parsed.validate_json()


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]


def code_lines(section: str) -> list[str]:
    return section.split("```")[1].strip("\n").split("\n")


def test_message_has_fallback_text_and_blocks() -> None:
    message = render_message(reply(Text("body"), summary="Backup 42 finished"))
    assert message["text"] == "Backup 42 finished"
    assert message["blocks"][0]["text"]["text"] == "body"


def test_reply_without_elements_shows_its_summary() -> None:
    assert section_texts(render_blocks(reply(summary="nothing to do"))) == ["nothing to do"]


def test_header_is_plain_text_cut_to_150() -> None:
    (block,) = render_blocks(reply(Header("H" * 400)))
    assert block["type"] == "header"
    assert block["text"]["type"] == "plain_text"
    assert len(block["text"]["text"]) == 150
    assert block["text"]["text"].endswith("…")


def test_text_is_mrkdwn_verbatim_section() -> None:
    (block,) = render_blocks(reply(Text("*bold* and `code`")))
    assert block["text"] == {"type": "mrkdwn", "text": "*bold* and `code`", "verbatim": True}


def test_long_text_is_split_into_sections_of_at_most_3000() -> None:
    blocks = render_blocks(reply(Text("\n".join(f"line {i:04d} " + "x" * 80 for i in range(200)))))
    texts = section_texts(blocks)
    assert len(texts) > 1
    assert all(len(t) <= 3000 for t in texts)
    assert "line 0199" in texts[-1]
    revalidate(blocks)


def test_one_huge_line_is_split_not_rejected() -> None:
    blocks = render_blocks(reply(Text("&" * 10000)))
    texts = section_texts(blocks)
    assert all(len(t) <= 3000 for t in texts)
    # No &amp; entity is cut in half at a section boundary.
    assert "".join(texts) == "&amp;" * 10000
    revalidate(blocks)


def test_notes_share_one_context_block() -> None:
    (block,) = render_blocks(reply(Note("asked by <@U1>"), Note("id 7f3a")))
    assert block["type"] == "context"
    assert [e["text"] for e in block["elements"]] == ["asked by &lt;@U1&gt;", "id 7f3a"]


def test_more_than_ten_notes_make_more_context_blocks() -> None:
    blocks = render_blocks(reply(*(Note(f"n{i}") for i in range(23))))
    assert [len(b["elements"]) for b in blocks] == [10, 10, 3]
    revalidate(blocks)


def test_fields_are_label_and_value_ten_per_section() -> None:
    pairs = tuple((f"key{i}", "v" * 5000) for i in range(14))
    blocks = render_blocks(reply(Fields(pairs)))
    assert [len(b["fields"]) for b in blocks] == [10, 4]
    first = blocks[0]["fields"][0]["text"]
    assert first.startswith("*key0*\nvvv")
    assert all(len(f["text"]) <= 2000 for b in blocks for f in b["fields"])
    revalidate(blocks)


def test_table_is_an_aligned_code_block() -> None:
    table = Table(("name", "size"), (("orders", "12 MB"), ("price_master", "3 kB")))
    (text,) = section_texts(render_blocks(reply(table)))
    assert code_lines(text) == ["name          size", "orders        12 MB", "price_master  3 kB"]


def test_japanese_table_columns_line_up() -> None:
    table = Table(
        ("名前", "役割", "状態"),
        (("テスト太郎", "owner", "有効"), ("bob", "従業員", "ok"), ("ｶﾅ", "employee", "無効")),
    )
    (text,) = section_texts(render_blocks(reply(table)))
    lines = code_lines(text)
    # The third column starts at the same display column on every line.
    starts = set()
    for line, third in zip(lines, ("状態", "有効", "ok", "無効"), strict=True):
        starts.add(display_width(line[: line.index(third)]))
    assert len(starts) == 1
    assert display_width("テスト太郎") == 10
    assert display_width("ｶﾅ") == 2


def test_200_row_table_fits_in_50_blocks_with_sections_under_3000() -> None:
    rows = tuple((f"table_{i:03d}", f"{i * 7} MB", "ok" * 20) for i in range(200))
    blocks = render_blocks(reply(Header("Tables"), Table(("name", "size", "note"), rows)))
    assert len(blocks) <= 50  # Slack refuses more
    texts = section_texts(blocks)
    assert len(texts) > 1
    assert all(len(t) <= 3000 for t in texts)
    shown = [ln for t in texts for ln in code_lines(t) if ln.startswith("table_")]
    assert len(shown) == 200
    revalidate(blocks)


def test_huge_table_is_cut_with_a_note_and_buttons_survive() -> None:
    rows = tuple((f"row {i}", "x" * 200) for i in range(5000))
    approve = Actions((Button("approve", "Approve", "1"),))
    blocks = render_blocks(reply(Table(("a", "b"), rows), approve))
    assert len(blocks) == 50
    assert blocks[-1]["type"] == "actions"
    texts = section_texts(blocks)
    assert all(len(t) <= 3000 for t in texts)
    shown = sum(1 for t in texts for ln in code_lines(t) if ln.startswith("row "))
    assert f"… {5000 - shown} more rows cut" in texts[-1]
    revalidate(blocks)


def test_check_table_puts_an_emoji_per_row_by_level() -> None:
    table = Table(
        ("check", "result"),
        (("api", "200"), ("disk", "85%"), ("db", "down"), ("tls", "30 days")),
        levels=("ok", "warn", "fail", "info"),
    )
    (text,) = section_texts(render_blocks(reply(table)))
    lines = text.split("\n")
    assert [ln.split(" ", 1)[0] for ln in lines[1:]] == [
        ":white_check_mark:",
        ":warning:",
        ":x:",
        ":information_source:",
    ]
    assert lines[2] == ":warning: `disk   85%`"
    # The second column starts at the same place in every code span, header included.
    spans = [re.fullmatch(r":[a-z_]+: `(.*)`", ln) for ln in lines]
    values = ("result", "200", "85%", "down", "30 days")
    starts = {s.group(1).index(v) for s, v in zip(spans, values, strict=True) if s}
    assert starts == {len("check  ")}


def test_backticks_in_cells_cannot_close_the_code_block() -> None:
    (text,) = section_texts(render_blocks(reply(Table(("a",), (("x```y",),)))))
    assert text.count("```") == 2


def test_progress_is_a_text_bar() -> None:
    (text,) = section_texts(render_blocks(reply(Progress(50, "dumping garden_dx"))))
    assert text == "▓▓▓▓▓░░░░░ 50% dumping garden_dx"


@pytest.mark.parametrize(
    ("percent", "bar"),
    [
        (0, "░░░░░░░░░░ 0%"),
        (99, "▓▓▓▓▓▓▓▓▓░ 99%"),
        (100, "▓▓▓▓▓▓▓▓▓▓ 100%"),
        (140, "▓▓▓▓▓▓▓▓▓▓ 100%"),
    ],
)
def test_progress_bar_bounds(percent: int, bar: str) -> None:
    assert progress_bar(percent) == bar


def test_buttons_with_confirm_dialogs() -> None:
    confirm = Confirm("Restore backup 42?", "This replaces garden_dx.", "Restore", "Cancel")
    actions = Actions(
        (
            Button("approve", "Approve", "17", style="primary", confirm=confirm),
            Button("deny", "Deny", "17", style="danger"),
        )
    )
    (block,) = render_blocks(reply(actions))
    approve, deny = block["elements"]
    assert approve["action_id"] == "approve"
    assert approve["value"] == "17"
    assert approve["style"] == "primary"
    assert approve["confirm"]["title"]["text"] == "Restore backup 42?"
    assert approve["confirm"]["confirm"]["text"] == "Restore"
    assert approve["confirm"]["deny"]["text"] == "Cancel"
    assert deny["style"] == "danger"
    assert "confirm" not in deny


def test_long_button_label_and_confirm_texts_are_cut() -> None:
    confirm = Confirm("T" * 300, "x" * 1000, "C" * 100, "D" * 100)
    button = Button("approve", "L" * 100, "v" * 3000, confirm=confirm)
    blocks = render_blocks(reply(Actions((button,))))
    element = blocks[0]["elements"][0]
    assert len(element["text"]["text"]) == 75
    assert element["text"]["text"].endswith("…")
    assert len(element["value"]) == 2000
    assert len(element["confirm"]["title"]["text"]) == 100
    assert len(element["confirm"]["text"]["text"]) == 300
    assert len(element["confirm"]["confirm"]["text"]) == 30
    assert len(element["confirm"]["deny"]["text"]) == 30
    revalidate(blocks)


def test_slack_special_characters_are_escaped() -> None:
    hostile = "<!channel> a&b <https://evil.example|click> <@U123>"
    message = render_message(
        reply(
            Text(hostile),
            Note(hostile),
            Fields(((hostile, hostile),)),
            Table(("col",), ((hostile,),)),
            Progress(10, hostile),
            summary=hostile,
        )
    )
    expected = "&lt;!channel&gt; a&amp;b &lt;https://evil.example|click&gt; &lt;@U123&gt;"
    assert message["text"] == expected
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == expected
    assert blocks[1]["elements"][0]["text"] == expected
    assert blocks[2]["fields"][0]["text"] == f"*{expected}*\n{expected}"
    assert expected in blocks[3]["text"]["text"]
    assert blocks[4]["text"]["text"].endswith(expected)
    assert "<" not in str(blocks) and ">" not in str(blocks)


def test_escape_is_ampersand_first() -> None:
    assert escape("<&>") == "&lt;&amp;&gt;"


def test_many_elements_never_exceed_50_blocks_and_keep_actions() -> None:
    elements: list[Element] = [Text(f"t{i}") for i in range(80)]
    elements.append(Actions((Button("deny", "Deny", "3"),)))
    blocks = render_blocks(reply(*elements))
    assert len(blocks) == 50
    assert blocks[-2]["type"] == "actions"
    assert "more blocks cut" in blocks[-1]["elements"][0]["text"]
    revalidate(blocks)


def test_empty_texts_are_skipped_rather_than_refused_by_slack() -> None:
    blocks = render_blocks(reply(Header(""), Text("  "), Note(""), Text("kept")))
    assert section_texts(blocks) == ["kept"]
