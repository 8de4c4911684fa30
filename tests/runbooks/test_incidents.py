"""runbooks/incidents.py and postmortem.py: the notice, the mails (a real local SMTP server, and
one that is down), Slack failing while the mail goes, and the postmortem draft in en and ja."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.config import Settings
from core.i18n import Translator
from core.incidents import Incident, Page, TimelineEntry
from core.reply import Actions, Fields, Header, Reply, Table, Text
from runbooks.incidents import (
    announce,
    list_reply,
    notice_mail,
    notice_reply,
    page_mail,
    page_reply,
    resolved_reply,
)
from runbooks.postmortem import SECTIONS, postmortem_filename, postmortem_markdown
from tests.support.serve import free_port
from tests.support.smtp import Inbox

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)  # 09:00 in Asia/Tokyo
LEVELS: dict[str, Any] = {
    "level1": ["U0OPS", {"name": "当番 花子", "slack": "U0HANA", "email": "hanako@example.com"}],
    "level2": [{"name": "System admin", "slack": "U0ADMIN", "email": "sysadmin@example.com"}],
    "level3": [{"name": "Dev lead", "email": "lead@example.com"}],
    "level4": ["U0ARCH"],
}


def settings(smtp_url: str | None = None, locale: str = "en") -> Settings:
    mail = {"url": smtp_url, "from": "gardenbot@example.com"} if smtp_url else {}
    return Settings(
        escalation=LEVELS,
        incidents={"mail_to": ["admin@example.com", "sysadmin@example.com"]},
        mail=mail,
        locale=locale,
    )


def incident(severity: str = "P1", **changes: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": 12,
        "severity": severity,
        "title": "見積 API が 502",
        "impact": "All shops",
        "status": "open",
        "declared_by": "U0OPS",
        "declared_at": T0,
    }
    return Incident(**(fields | changes))


def test_the_notice_has_deadline_paged_levels_and_both_buttons() -> None:
    reply = notice_reply(incident("P1"), settings(), Translator("en"))

    header, fields, paging, actions = reply.elements
    assert isinstance(header, Header) and header.text == "INC-12 [P1] 見積 API が 502"
    assert isinstance(fields, Fields)
    shown = dict(fields.pairs)
    assert shown["Respond by"] == "2025-04-01 09:15 JST (within 15 min)"
    assert shown["Impact"] == "All shops"
    assert isinstance(paging, Text)
    assert "level 1" in paging.text and "level 3: Dev lead" in paging.text and "level 4" not in paging.text
    assert isinstance(actions, Actions)
    assert [(b.action_id, b.value) for b in actions.buttons] == [
        ("incident_ack", "12"),
        ("incident_resolve", "12"),
    ]
    assert actions.buttons[1].confirm is not None
    assert reply.ids == {"incident_id": 12}


@pytest.mark.parametrize(("severity", "minutes", "levels"), [("P2", 60, "level 2"), ("P3", 240, "level 1")])
def test_each_severity_has_its_own_deadline_and_levels(severity: str, minutes: int, levels: str) -> None:
    reply = notice_reply(incident(severity), settings(), Translator("en"))
    fields = reply.elements[1]
    assert isinstance(fields, Fields)
    assert f"within {minutes} min" in dict(fields.pairs)["Respond by"]
    paging = reply.elements[2]
    assert isinstance(paging, Text) and levels in paging.text


def test_p1_and_p2_are_mailed_to_paged_contacts_and_mail_to_once_each_p3_p4_not() -> None:
    t = Translator("en")
    p1 = notice_mail(incident("P1"), settings(), t)
    p2 = notice_mail(incident("P2"), settings(), t)

    assert p1 is not None and p2 is not None
    assert p1.to == ("hanako@example.com", "sysadmin@example.com", "lead@example.com", "admin@example.com")
    assert p2.to == ("hanako@example.com", "sysadmin@example.com", "admin@example.com")
    assert notice_mail(incident("P3"), settings(), t) is None
    assert notice_mail(incident("P4"), settings(), t) is None
    assert p1.subject == "[P1] INC-12: 見積 API が 502"


def test_the_mail_is_written_in_the_configured_language() -> None:
    ja = notice_mail(incident("P1"), settings(locale="ja"), Translator("ja"))
    assert ja is not None
    assert "P1: システム全体停止" in ja.body and "対応期限" in ja.body and "当番 花子" in ja.body


async def test_a_p1_notice_is_posted_and_its_mail_accepted_by_smtp(inbox: Inbox) -> None:
    config = settings(inbox.url)
    posted: list[Reply] = []

    async def post(reply: Reply) -> dict[str, Any]:
        posted.append(reply)
        return {"channel": "C0INC", "ts": "1.1"}

    t = Translator("en")
    outcome = await announce(
        notice_reply(incident(), config, t), notice_mail(incident(), config, t), post=post, settings=config
    )

    assert outcome.message_ref == {"channel": "C0INC", "ts": "1.1"} and outcome.post_error is None
    assert outcome.mail is not None and outcome.mail_error is None
    assert len(posted) == 1 and len(inbox.received) == 1
    got = inbox.received[0]
    assert set(got.rcpt_tos) == {
        "hanako@example.com",
        "sysadmin@example.com",
        "lead@example.com",
        "admin@example.com",
    }
    assert got.message["Subject"] == "[P1] INC-12: 見積 API が 502"
    assert [kind for kind, _, _ in outcome.timeline_notes()] == ["mail_sent"]


async def test_with_the_smtp_server_down_the_slack_notice_still_goes() -> None:
    config = settings(f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    posted: list[Reply] = []

    async def post(reply: Reply) -> dict[str, Any]:
        posted.append(reply)
        return {"channel": "C0INC", "ts": "1.1"}

    t = Translator("en")
    outcome = await announce(
        notice_reply(incident(), config, t),
        notice_mail(incident(), config, t),
        post=post,
        settings=config,
        mail_timeout=3,
    )

    assert len(posted) == 1 and outcome.message_ref is not None
    assert outcome.mail is None and outcome.mail_error is not None
    assert outcome.mail_error.message_key == "mail.send_failed"
    assert [kind for kind, _, _ in outcome.timeline_notes()] == ["mail_failed"]


async def test_when_slacks_api_fails_the_mail_still_goes_and_the_failure_is_kept(inbox: Inbox) -> None:
    config = settings(inbox.url)

    async def post(reply: Reply) -> dict[str, Any]:
        raise RuntimeError("slack_api_error: ratelimited xoxb-1234567890-secret")

    t = Translator("en")
    outcome = await announce(
        notice_reply(incident(), config, t), notice_mail(incident(), config, t), post=post, settings=config
    )

    assert len(inbox.received) == 1 and outcome.mail is not None
    assert outcome.message_ref is None and outcome.post_error is not None
    assert "ratelimited" in outcome.post_error and "xoxb-1234567890-secret" not in outcome.post_error
    assert [kind for kind, _, _ in outcome.timeline_notes()] == ["notice_failed", "mail_sent"]


async def test_no_mail_server_configured_is_a_recorded_failure_not_a_crash() -> None:
    config = settings()

    async def post(reply: Reply) -> dict[str, Any]:
        return {"ts": "1"}

    t = Translator("en")
    outcome = await announce(
        notice_reply(incident(), config, t), notice_mail(incident(), config, t), post=post, settings=config
    )
    assert outcome.mail_error is not None and outcome.mail_error.message_key == "incident.mail_not_configured"


def test_an_escalation_says_why_and_mails_the_paged_level() -> None:
    t = Translator("en")
    page = Page(12, 4, "unacknowledged", T0 + timedelta(minutes=15), tuple(settings().escalation.contacts(4)))
    reply = page_reply(page, incident(), settings(), t)
    assert "not acknowledged within 15 min: paging level 4" in reply.summary
    mail = page_mail(page, incident(), settings(), t)
    assert mail is not None and mail.to == ("admin@example.com", "sysadmin@example.com")
    assert mail.subject == "[P1] INC-12 escalated to level 4: 見積 API が 502"


def test_resolving_shows_duration_time_to_acknowledge_and_to_resolve() -> None:
    done = incident(
        status="resolved",
        acked_by="U0ADMIN",
        acked_at=T0 + timedelta(minutes=4),
        resolved_by="U0ADMIN",
        resolved_at=T0 + timedelta(minutes=50),
    )
    fields = resolved_reply(done, settings(), Translator("en")).elements[1]
    assert isinstance(fields, Fields)
    assert [v for _, v in fields.pairs] == ["50 min 0 s", "4 min 0 s", "46 min 0 s"]


def test_the_list_has_age_severity_status_and_holder() -> None:
    held = incident(status="acknowledged", acked_by="U0ADMIN", acked_at=T0)
    reply = list_reply([held], T0 + timedelta(minutes=90), Translator("en"))
    table = reply.elements[1]
    assert isinstance(table, Table)
    assert table.rows[0][:4] == ("INC-12", "P1", "acknowledged", "90 min")
    assert "U0ADMIN" in table.rows[0][4]


def entries() -> list[TimelineEntry]:
    def entry(n: int, minutes: int, actor: str, kind: Any, text: str = "", **detail: Any) -> TimelineEntry:
        return TimelineEntry(n, 12, T0 + timedelta(minutes=minutes), actor, kind, text, detail)

    return [
        entry(1, 0, "U0OPS", "declared", "見積 API が 502"),
        entry(2, 4, "U0ADMIN", "acknowledged"),
        entry(3, 10, "U0ADMIN", "action", "service restart", outcome="succeeded"),
        entry(4, 30, "scheduler", "paged", "level3", reason="unresolved"),
        entry(5, 50, "U0ADMIN", "resolved", "bad release"),
    ]


@pytest.mark.parametrize(
    ("locale", "headings"),
    [
        (
            "en",
            [
                "Basic information",
                "Summary",
                "Timeline",
                "Root cause",
                "Impact",
                "Response",
                "Prevention",
                "Action items",
                "Lessons learned",
            ],
        ),
        (
            "ja",
            [
                "基本情報",
                "概要",
                "タイムライン",
                "根本原因",
                "影響範囲",
                "対応内容",
                "再発防止策",
                "アクションアイテム",
                "教訓",
            ],
        ),
    ],
)
def test_the_postmortem_has_the_manuals_sections_in_the_configured_language(
    locale: str, headings: list[str]
) -> None:
    done = incident(
        status="resolved",
        acked_by="U0ADMIN",
        acked_at=T0 + timedelta(minutes=4),
        resolved_by="U0ADMIN",
        resolved_at=T0 + timedelta(minutes=50),
        summary="bad release",
    )
    text = postmortem_markdown(done, entries(), settings(locale=locale), Translator(locale), now=T0)

    assert [line[3:] for line in text.splitlines() if line.startswith("## ")] == headings
    assert len(headings) == len(SECTIONS)
    assert text.startswith("# ")
    assert "09:10" in text and "service restart" in text and "(succeeded)" in text
    assert "46 min 0 s" in text  # time to resolve, in basic information
    assert postmortem_filename(done) == "postmortem-inc-12.md"


def test_user_text_cannot_add_headings_to_the_postmortem() -> None:
    sneaky = incident(title="## Root cause\n# fake", impact="line\n## Lessons")
    text = postmortem_markdown(sneaky, [], settings(), Translator("en"), now=T0)
    assert [line for line in text.splitlines() if line.startswith("#")][1:] == [
        f"## {h}"
        for h in (
            "Basic information",
            "Summary",
            "Timeline",
            "Root cause",
            "Impact",
            "Response",
            "Prevention",
            "Action items",
            "Lessons learned",
        )
    ]
