"""runbooks.mail against a real local SMTP server (aiosmtpd) on a free port."""

from __future__ import annotations

import pytest

from core.errors import RunbookFailed, UsageError
from runbooks.mail import parse_smtp_url, send_mail
from tests.support.serve import free_port
from tests.support.smtp import Inbox


async def test_a_utf8_message_reaches_the_smtp_server(inbox: Inbox) -> None:
    port = inbox.port
    sent = await send_mail(
        smtp_url=f"smtp://127.0.0.1:{port}",
        sender="gardenbot@example.com",
        to=["taro@example.com"],
        subject="ようこそ",
        body="テスト太郎 様\nこんにちは",
    )
    assert sent.server == f"127.0.0.1:{port}"
    assert len(inbox.received) == 1
    got = inbox.received[0]
    assert (got.mail_from, got.rcpt_tos) == ("gardenbot@example.com", ["taro@example.com"])
    assert got.message["Subject"] == "ようこそ"
    assert "テスト太郎 様" in got.message.get_content()


async def test_a_server_that_is_down_is_one_clear_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(RunbookFailed) as caught:
        await send_mail(
            smtp_url=f"smtp://mailer:s3cret@127.0.0.1:{port}",
            sender="gardenbot@example.com",
            to=["taro@example.com"],
            subject="x",
            body="y",
            timeout=3,
        )
    assert caught.value.message_key == "mail.send_failed"
    assert caught.value.params["server"] == f"127.0.0.1:{port}"
    assert "s3cret" not in str(caught.value)


def test_smtp_urls_are_parsed_and_credentials_never_printed() -> None:
    server = parse_smtp_url("smtps://bot%40example.com:p%40ss@mail.example.com")
    assert (server.host, server.port, server.use_tls) == ("mail.example.com", 465, True)
    assert (server.username, server.password) == ("bot@example.com", "p@ss")
    assert "p@ss" not in repr(server)
    assert parse_smtp_url("smtp://mail.example.com:587").port == 587
    for bad in ("http://mail.example.com", "smtp://", "mail.example.com:25", "smtp://h:notaport"):
        with pytest.raises(UsageError):
            parse_smtp_url(bad)
