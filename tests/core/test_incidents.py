"""core/incidents.py: input checks, deadlines, who is paged when (an injected clock), names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.config import Settings
from core.errors import UsageError
from core.incidents import (
    CHANNEL_NAME_MAX,
    Incident,
    channel_name,
    check_text,
    check_title,
    declaration_pages,
    due_pages,
    durations,
    levels_to_notify,
    next_deadline,
    parse_incident_id,
    parse_severity,
)

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
LEVELS: dict[str, Any] = {
    "level1": ["U0OPS"],
    "level2": [{"name": "System admin", "slack": "U0ADMIN", "email": "sysadmin@example.com"}],
    "level3": ["U0LEAD"],
    "level4": ["U0ARCH"],
}


def settings(**incidents: Any) -> Settings:
    return Settings(escalation=LEVELS, incidents=incidents)


def incident(severity: str = "P2", **changes: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": 7,
        "severity": severity,
        "title": "API down",
        "impact": None,
        "status": "open",
        "declared_by": "U0OPS",
        "declared_at": T0,
    }
    return Incident(**(fields | changes))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize("raw", ["P1", "p2", " P3 ", "p4"])
def test_severities_are_read_in_any_case(raw: str) -> None:
    assert parse_severity(raw) == raw.strip().upper()


@pytest.mark.parametrize("raw", ["P5", "P0", "high", "", "1", "P1; DROP TABLE incidents"])
def test_an_unknown_severity_is_a_usage_error_naming_it(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_severity(raw)
    assert caught.value.message_key == "incident.bad_severity"
    assert caught.value.params["severities"] == "P1, P2, P3, P4"


def test_titles_are_trimmed_and_line_breaks_become_spaces() -> None:
    assert check_title("  API 応答なし \n 全店舗  ") == "API 応答なし 全店舗"
    assert check_title("x" * 200) == "x" * 200


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("", "incident.empty_title"),
        ("   \n\t ", "incident.empty_title"),
        ("x" * 201, "incident.title_too_long"),
        ("x" * 10_240, "incident.title_too_long"),
        ("bell\x07here", "incident.bad_title"),
        ("nul\x00here", "incident.bad_title"),
    ],
)
def test_bad_titles_are_refused_clearly(raw: str, key: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_title(raw)
    assert caught.value.message_key == key


def test_a_10kb_title_says_how_long_it_was_and_the_limit() -> None:
    with pytest.raises(UsageError) as caught:
        check_title("障" * 10_240)
    assert caught.value.params == {"length": 10_240, "limit": 200}


def test_free_text_keeps_its_lines_but_not_empty_or_huge() -> None:
    assert check_text(" line one\nline two ", what="update") == "line one\nline two"
    for raw, key in (("  ", "incident.empty_update"), ("y" * 3001, "incident.text_too_long")):
        with pytest.raises(UsageError) as caught:
            check_text(raw, what="update")
        assert caught.value.message_key == key


@pytest.mark.parametrize(("raw", "expected"), [("12", 12), ("INC-12", 12), ("inc12", 12), ("#3", 3)])
def test_incident_ids_are_read_with_or_without_their_prefix(raw: str, expected: int) -> None:
    assert parse_incident_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "0", "INC-", "twelve", "12a", "-4", "../12", "1" * 13, "INC-1 OR 1=1"])
def test_what_is_not_an_incident_id_is_a_usage_error(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_incident_id(raw)
    assert caught.value.message_key == "incident.bad_id"


def test_the_manuals_levels_are_paged_at_declaration() -> None:
    config = settings()
    assert [levels_to_notify(s, config) for s in ("P1", "P2", "P3", "P4")] == [(1, 2, 3), (1, 2), (1,), (1,)]
    pages = declaration_pages(incident("P1"), config)
    assert [(p.level, p.reason, p.due_at) for p in pages] == [(n, "declared", T0) for n in (1, 2, 3)]


def test_a_level_with_nobody_configured_is_never_paged() -> None:
    config = Settings(escalation={"level1": ["U0OPS"]})
    assert [p.level for p in declaration_pages(incident("P1"), config)] == [1]
    assert due_pages(incident("P1"), {1}, at(60), config) == []


def test_nothing_is_due_before_a_deadline() -> None:
    assert due_pages(incident("P1"), {1, 2, 3}, at(14.9), settings()) == []


def test_an_unacknowledged_p1_pages_level_4_at_its_15_minute_deadline() -> None:
    pages = due_pages(incident("P1"), {1, 2, 3}, at(15), settings())
    assert [(p.level, p.reason, p.due_at) for p in pages] == [(4, "unacknowledged", at(15))]
    assert [c.slack for c in pages[0].contacts] == ["U0ARCH"]


def test_an_acknowledged_p1_pages_no_one_more_before_30_minutes() -> None:
    acked = incident("P1", status="acknowledged", acked_by="U0OPS", acked_at=at(5))
    assert due_pages(acked, {1, 2, 3}, at(29), settings()) == []


def test_an_unresolved_p3_pages_level_3_after_30_minutes_even_when_acknowledged() -> None:
    acked = incident("P3", status="acknowledged", acked_by="U0OPS", acked_at=at(1))
    pages = due_pages(acked, {1}, at(31), settings())
    assert [(p.level, p.reason, p.due_at) for p in pages] == [(3, "unresolved", at(30))]


def test_an_unacknowledged_p3_pages_level_2_at_4_hours_and_level_3_at_30_minutes() -> None:
    config = settings()
    assert [p.level for p in due_pages(incident("P3"), {1}, at(31), config)] == [3]
    later = due_pages(incident("P3"), {1, 3}, at(240), config)
    assert [(p.level, p.reason, p.due_at) for p in later] == [(2, "unacknowledged", at(240))]


def test_a_level_due_for_two_reasons_is_due_once_from_the_earlier_deadline() -> None:
    # P2: level 3 is both the level after the notified ones (60 min) and unresolved_to (30 min).
    pages = due_pages(incident("P2"), {1, 2}, at(61), settings())
    assert [(p.level, p.reason, p.due_at) for p in pages] == [(3, "unresolved", at(30))]


def test_a_level_already_paged_is_not_due_again() -> None:
    assert due_pages(incident("P2"), {1, 2, 3}, at(600), settings()) == []


def test_a_resolved_incident_pages_no_one() -> None:
    done = incident("P1", status="resolved", resolved_by="U0OPS", resolved_at=at(1))
    assert due_pages(done, {1, 2, 3}, at(600), settings()) == []


def test_configured_deadlines_and_unresolved_level_are_honoured() -> None:
    config = settings(respond_minutes={"P2": 5}, unresolved_minutes=10, unresolved_to="level4")
    assert [p.level for p in due_pages(incident("P2"), {1, 2}, at(5), config)] == [3]
    assert [p.level for p in due_pages(incident("P2"), {1, 2, 3}, at(10), config)] == [4]
    assert next_deadline(incident("P2"), {1, 2}, config) == at(5)
    assert next_deadline(incident("P2"), {1, 2, 3, 4}, config) is None


def test_durations_are_declared_to_resolved_and_each_step_between() -> None:
    done = incident(status="resolved", acked_at=at(4), resolved_at=at(50), acked_by="U", resolved_by="U")
    figures = durations(done, at(999))
    assert figures.duration == timedelta(minutes=50)
    assert figures.time_to_acknowledge == timedelta(minutes=4)
    assert figures.time_to_resolve == timedelta(minutes=46)
    never_acked = durations(incident(status="resolved", resolved_at=at(20), resolved_by="U"), at(999))
    assert (never_acked.time_to_acknowledge, never_acked.time_to_resolve) == (None, None)
    assert durations(incident(), at(12)).duration == timedelta(minutes=12)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("API down: 502 on /estimates!", "inc-12-api-down-502-on-estimates"),
        ("Café menu löschen", "inc-12-cafe-menu-loschen"),
        ("ＡＰＩ　ｄｏｗｎ", "inc-12-api-down"),
        ("見積の PDF が作れない", "inc-12"),
        ("API 応答なし", "inc-12"),
        ("!!!", "inc-12"),
    ],
)
def test_channel_names_follow_slack_rules_and_fall_back_for_japanese(title: str, expected: str) -> None:
    assert channel_name(12, title) == expected


def test_a_long_title_gives_a_channel_name_of_at_most_80_characters() -> None:
    name = channel_name(123456, "word " * 60)
    assert len(name) <= CHANNEL_NAME_MAX
    assert name.startswith("inc-123456-word-word")
    assert not name.endswith("-")
