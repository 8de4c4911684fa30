"""How the console shows a reply: `run --json` pinned byte for byte, plain text, colours on a terminal."""

from __future__ import annotations

import pytest

from bot.console import reply_json
from core.reply import Actions, Button, Fields, Header, Note, Reply, Table, Text, mention

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
