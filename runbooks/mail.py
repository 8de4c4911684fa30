"""Send one plain-text e-mail through the configured SMTP server (aiosmtplib).

The server is named by a URL: `smtp://host:port` (STARTTLS when the server offers it),
`smtps://host:port` (TLS from the first byte), with optional `user:password@` for AUTH.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from core.errors import RunbookFailed, UsageError
from core.secrets import mask_text

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    use_tls: bool
    username: str | None = None
    password: str | None = None

    @property
    def where(self) -> str:
        """host:port, never the credentials."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"SmtpServer({self.where}, tls={self.use_tls}, auth={self.username is not None})"


@dataclass(frozen=True)
class SentMail:
    to: tuple[str, ...]
    subject: str
    server: str  # host:port


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://[user:pass@]host[:port]` or `smtps://…` as an SmtpServer."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError("mail.bad_url", url=mask_text(url))
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise UsageError("mail.bad_url", url=mask_text(url)) from None
    return SmtpServer(
        host=parts.hostname,
        port=port,
        use_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


async def send_mail(
    *,
    smtp_url: str,
    sender: str,
    to: list[str],
    subject: str,
    body: str,
    timeout: float = 10.0,
) -> SentMail:
    """Send one UTF-8 text message; a server that is down or refuses is one RunbookFailed."""
    server = parse_smtp_url(smtp_url)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body)
    try:
        await aiosmtplib.send(
            message,
            hostname=server.host,
            port=server.port,
            use_tls=server.use_tls,
            username=server.username,
            password=server.password,
            timeout=timeout,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        detail = mask_text(str(exc).strip() or type(exc).__name__)[:200]
        raise RunbookFailed("mail.send_failed", server=server.where, detail=detail) from None
    return SentMail(to=tuple(to), subject=subject, server=server.where)
