"""Secrets stay out of channels, the audit log and log lines."""

from __future__ import annotations

import pytest

from core.secrets import MASK, mask_args, mask_dsn, mask_text


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://garden:s3cret@db:5432/garden_dx", "postgresql://garden:***@db:5432/garden_dx"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://garden@db/garden_dx", "postgresql://garden@db/garden_dx"),
        ("host=db user=garden password=s3cret dbname=x", "host=db user=garden password=*** dbname=x"),
        ("host=db password='a b c' dbname=x", "host=db password=*** dbname=x"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_mask_text_hides_every_password_in_free_text() -> None:
    text = "connect to postgresql://u:pw1@h/db failed; retry redis://:pw2@r:6379 PASSWORD = pw3"

    masked = mask_text(text)

    assert not any(secret in masked for secret in ("pw1", "pw2", "pw3"))
    assert "postgresql://u:***@h/db" in masked


def test_mask_args_hides_secret_named_keys_and_dsns_inside_values() -> None:
    args = {
        "email": "テスト太郎@example.com",
        "password": "tmp-Pass-1",
        "api_token": "xoxb-1",
        "database_url": "postgresql://u@h/db",
        "nested": {"secret": "s", "note": "see postgresql://u:pw@h/db"},
        "list": ["redis://:pw@r/0", 3],
        "count": 3,
        "empty_password": None,
    }

    masked = mask_args(args)

    assert masked["email"] == "テスト太郎@example.com"
    assert masked["password"] == masked["api_token"] == masked["database_url"] == MASK
    assert masked["nested"] == {"secret": MASK, "note": "see postgresql://u:***@h/db"}
    assert masked["list"] == ["redis://:***@r/0", 3]
    assert masked["count"] == 3
    assert masked["empty_password"] is None


def test_tokens_in_log_text_are_masked() -> None:
    line = 'token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T1 {"token": "xoxb-1-2"} Bearer xapp-1-A1-99 secret=s3'
    masked = mask_text(line)
    for secret in ("gIkuvaNzQIHg97ATvDxqgjtO", "xoxb-1-2", "xapp-1-A1-99", "s3"):
        assert secret not in masked, masked
    assert "team_id=T1" in masked
