"""How the console shows a reply: `run --json` pinned byte for byte, plain text, colours on a terminal."""

from __future__ import annotations

import asyncio
import io
import json
from types import SimpleNamespace

import pytest
from rich.cells import cell_len

from bot.blocks import render_blocks
from bot.console import reply_json, watch_job
from bot.console_render import print_reply, render_text, terminal
from commands.job_watch import JobBoard
from core.reply import (
    Actions,
    Attachment,
    Button,
    Element,
    Fields,
    Header,
    Note,
    Progress,
    Reply,
    Table,
    Text,
    mention,
)
from tests.bot.test_blocks import section_texts

JAPANESE_CHECKS = Reply(
    status="failed",
    summary="ヘルスチェック: 1 件失敗",
    elements=(
        Header("ヘルスチェック"),
        Table(
            ("項目", "状態", "詳細"),
            (
                ("データベース", "正常", "12 ms"),
                ("API", "失敗", "接続できません"),
                ("ディスク", "警告", "91 %"),
            ),
            levels=("ok", "fail", "warn"),
        ),
        Note("実行者 テスト太郎 · 2026-11-28 09:00 JST"),
    ),
)
APPROVAL = Reply(
    status="pending",
    summary="restore 42 waits for approval",
    elements=(
        Text("*restore 42* needs approval from `U0LEAD`"),
        Fields((("Requested by", mention("U0OPS")), ("承認者", "U0LEAD"))),
        Actions((Button("approve", "Approve", "12", style="primary"), Button("deny", "Deny", "12"))),
    ),
    ids={"approval_id": 12},
)
JAPANESE_TABLE = Reply(
    status="succeeded",
    summary="2 backups",
    elements=(
        Table(
            ("id", "ファイル", "size"),
            (("7", "garden_dx_20261128.dump", "1.2 MB"), ("6", "見積.dump", "980 KB")),
        ),
    ),
    ids={"backup_id": 7, "job_id": 3},
)
SUMMARY_ONLY = Reply(status="refused", summary="Unknown sub-command 'x'")

# `gardenbot run --json` as it was before the console got a rendering library: scripts parse it.
PINNED_JSON = [
    (
        JAPANESE_CHECKS,
        '{"status": "failed", "text": "== ヘルスチェック ==\\n   項目          状態  詳細\\n'
        "-  ------------  ----  --------------\\n✓  データベース  正常  12 ms\\n"
        "✗  API           失敗  接続できません\\n!  ディスク      警告  91 %\\n"
        '(実行者 テスト太郎 · 2026-11-28 09:00 JST)", "summary": "ヘルスチェック: 1 件失敗"}',
    ),
    (
        APPROVAL,
        '{"status": "pending", "text": "restore 42 needs approval from `U0LEAD`\\n'
        'Requested by : @U0OPS\\n承認者       : U0LEAD\\n[1] Approve (approve 12)  [2] Deny (deny 12)", '
        '"summary": "restore 42 waits for approval", "approval_id": 12}',
    ),
    (
        JAPANESE_TABLE,
        '{"status": "succeeded", "text": "id  ファイル                 size\\n'
        "--  -----------------------  ------\\n7   garden_dx_20261128.dump  1.2 MB\\n"
        '6   見積.dump                980 KB", "summary": "2 backups", "backup_id": 7, "job_id": 3}',
    ),
    (
        SUMMARY_ONLY,
        '{"status": "refused", "text": "Unknown sub-command \'x\'", "summary": "Unknown sub-command \'x\'"}',
    ),
]


@pytest.mark.parametrize(
    ("reply", "expected"), PINNED_JSON, ids=["checks-ja", "approval", "table-ja", "summary"]
)
def test_run_json_output_is_byte_for_byte_unchanged(reply: Reply, expected: str) -> None:
    assert reply_json(reply) == expected


# --- plain text: every element kind --------------------------------------------------------------


def plain(*elements: Element) -> str:
    return render_text(Reply(status="succeeded", summary="the summary", elements=elements))


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (Header("バックアップ"), "== バックアップ =="),
        (Text("*restore 42* needs `U0LEAD`"), "restore 42 needs `U0LEAD`"),
        (Note("by テスト太郎"), "(by テスト太郎)"),
        (Fields((("名前", "テスト太郎"), ("role", "owner"))), "名前 : テスト太郎\nrole : owner"),
        (
            Table(("名前", "状態"), (("テスト太郎", "有効"), ("bob", "ok"))),
            "名前        状態\n----------  ----\nテスト太郎  有効\nbob         ok",
        ),
        (
            Table(("check", "detail"), (("api", "200"), ("disk", "91 %")), levels=("info", "warn")),
            "   check  detail\n-  -----  ------\n·  api    200\n!  disk   91 %",
        ),
        (Progress(50, "dumping 見積"), "▓▓▓▓▓░░░░░ 50% dumping 見積"),
        (
            Actions((Button("approve", "承認", "12"), Button("deny", "Deny", "12"))),
            "[1] 承認 (approve 12)  [2] Deny (deny 12)",
        ),
        (Text(f"asked by {mention('U0OPS')}"), "asked by @U0OPS"),
    ],
    ids=["header", "text", "note", "fields-ja", "table-ja", "checks", "progress", "actions", "mention"],
)
def test_plain_text_of_every_element_kind(element: Element, expected: str) -> None:
    assert plain(element) == expected


def test_an_attachment_is_named_with_its_size_in_text_json_and_on_a_terminal() -> None:
    chart = Reply(
        status="succeeded",
        summary="Weekly report",
        elements=(Text("Weekly report"),),
        attachment=Attachment("report-weekly.png", b"\x89PNG" + bytes(2044)),
    )
    assert render_text(chart) == "Weekly report\n📎 report-weekly.png (2.0 KB)"
    assert json.loads(reply_json(chart))["attachment"] == "report-weekly.png"
    out = io.StringIO()
    print_reply(chart, out, console=terminal(out, force_terminal=True, width=60))
    assert "report-weekly.png" in out.getvalue()


def test_a_reply_without_elements_shows_its_summary() -> None:
    assert plain() == "the summary"


def test_the_console_and_slack_draw_the_same_progress_bar() -> None:
    slack = section_texts(render_blocks(Reply("running", "x", (Progress(70, "dumping"),))))
    assert slack == [plain(Progress(70, "dumping"))] == ["▓▓▓▓▓▓▓░░░ 70% dumping"]


async def test_job_progress_on_stderr_uses_the_one_bar() -> None:
    stream, board = io.StringIO(), JobBoard()
    board.opened(7)
    watching = asyncio.create_task(watch_job(SimpleNamespace(jobs=board), 7, stream))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # subscribed before the job reports
    board.progress(7, 30, "verifying")
    board.finished(7, Reply("succeeded", "done"))
    result = await watching
    assert result.summary == "done"
    assert stream.getvalue() == "job 7 ▓▓▓░░░░░░░ 30% verifying\n"


# --- a terminal: rich ----------------------------------------------------------------------------


def shown(reply: Reply, *, colours: bool, width: int = 80) -> str:
    stream = io.StringIO()
    print_reply(reply, stream, console=terminal(stream, force_terminal=colours, width=width))
    return stream.getvalue()


def test_off_a_terminal_the_reply_is_the_plain_text_without_colour_codes() -> None:
    stream = io.StringIO()  # not a tty, like a pipe
    print_reply(APPROVAL, stream)
    assert stream.getvalue() == render_text(APPROVAL) + "\n"
    assert "\x1b" not in stream.getvalue()


def test_on_a_terminal_marks_become_colours_and_levels_are_coloured() -> None:
    out = shown(Reply("failed", "x", (*APPROVAL.elements, *JAPANESE_CHECKS.elements)), colours=True)
    assert "\x1b[" in out
    assert "\x1b[1mrestore 42\x1b[0m" in out  # *bold* drawn bold, the stars gone
    assert "\x1b[36mU0LEAD\x1b[0m" in out  # `code` drawn as code, the backticks gone
    assert "*" not in out and "`" not in out
    assert "\x1b[32m✓" in out and "\x1b[1;31m✗" in out and "\x1b[33m!" in out
    assert "[1] \x1b[0mApprove (approve 12)" in out


def test_without_colours_a_terminal_shows_the_same_words_with_no_codes() -> None:
    out = shown(APPROVAL, colours=False)
    assert "\x1b" not in out
    assert out.splitlines() == [
        "restore 42 needs approval from U0LEAD",
        "Requested by  @U0OPS",
        "承認者        U0LEAD",
        "[1] Approve (approve 12)  [2] Deny (deny 12)",
    ]


def test_rich_tables_line_up_japanese_columns() -> None:
    lines = shown(JAPANESE_CHECKS, colours=False).splitlines()
    rows = [line for line in lines if any(word in line for word in ("詳細", "12 ms", "接続", "91 %"))]
    assert len(rows) == 4
    thirds = ("詳細", "12", "接続", "91")
    starts = {cell_len(line[: line.index(third)]) for line, third in zip(rows, thirds, strict=True)}
    assert len(starts) == 1


def test_user_text_is_never_read_as_rich_markup_or_emoji_codes() -> None:
    out = shown(Reply("succeeded", "x", (Text("[bold red]見積[/] :x: 3 * 4 * 5"),)), colours=True)
    assert "[bold red]見積[/] :x: 3 * 4 * 5" in out


def test_progress_on_a_terminal_is_a_bar_with_its_percentage() -> None:
    out = shown(Reply("running", "x", (Progress(45, "dumping 見積"),)), colours=False)
    assert "45% dumping 見積" in out
    assert "━" in out
