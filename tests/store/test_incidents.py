"""store/incidents.py on a real PostgreSQL: lifecycle, timeline, conflicts, actions while open."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Conflict, NotFound, UsageError
from core.incidents import Incident
from store.db import Store
from store.incidents import (
    acknowledge_incident,
    add_update,
    declare_incident,
    get_incident,
    list_incidents,
    note,
    note_action,
    remember_channel,
    remember_notice,
    resolve_incident,
    save_postmortem,
    timeline,
)

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def declare(store: Store, severity: str = "P2", title: str = "API down", minutes: int = 0) -> Incident:
    return await declare_incident(
        store,
        severity=severity,  # type: ignore[arg-type]
        title=title,
        impact="全店舗で見積が作れない",
        declared_by="U0OPS",
        at=at(minutes),
        paged_levels=(1, 2),
    )


async def test_a_declared_incident_keeps_who_what_and_when(store: Store) -> None:
    incident = await declare(store, title="  見積 PDF が 502  ")

    again = await get_incident(store, incident.id)
    assert again == incident
    assert (again.severity, again.title, again.status) == ("P2", "見積 PDF が 502", "open")
    assert (again.declared_by, again.declared_at, again.impact) == ("U0OPS", T0, "全店舗で見積が作れない")
    [entry] = await timeline(store, incident.id)
    assert (entry.kind, entry.actor, entry.at, entry.text) == ("declared", "U0OPS", T0, "見積 PDF が 502")
    assert entry.detail["levels"] == [1, 2]


async def test_bad_titles_never_reach_the_table(store: Store) -> None:
    for title in ("", "x" * 10_240, "a\x00b"):
        with pytest.raises(UsageError):
            await declare(store, title=title)
    assert await list_incidents(store) == []


async def test_acknowledge_update_resolve_each_land_on_the_timeline_in_order(store: Store) -> None:
    incident = await declare(store)

    acked = await acknowledge_incident(store, incident.id, by="U0ADMIN", at=at(4))
    await add_update(store, incident.id, by="U0ADMIN", at=at(10), text="rolled back the release")
    done = await resolve_incident(store, incident.id, by="U0LEAD", at=at(45), summary="bad release")

    assert (acked.status, acked.acked_by, acked.acked_at) == ("acknowledged", "U0ADMIN", at(4))
    assert (done.status, done.resolved_by, done.resolved_at, done.summary) == (
        "resolved",
        "U0LEAD",
        at(45),
        "bad release",
    )
    assert done.acked_at == at(4)  # resolving keeps the acknowledgement for the figures
    entries = await timeline(store, incident.id)
    assert [(e.kind, e.actor, e.at) for e in entries] == [
        ("declared", "U0OPS", at(0)),
        ("acknowledged", "U0ADMIN", at(4)),
        ("update", "U0ADMIN", at(10)),
        ("resolved", "U0LEAD", at(45)),
    ]
    assert entries[2].text == "rolled back the release"


async def test_declaring_and_acknowledging_at_a_console_keep_the_admin_behind_and_the_os_login(
    store: Store,
) -> None:
    plain = await declare(store)
    incident = await declare_incident(
        store,
        severity="P1",
        title="API down",
        impact=None,
        declared_by="U0LEAD2",
        at=T0,
        impersonated_by="U0ADMIN",
        from_os_login="alice",
    )

    acked = await acknowledge_incident(
        store, incident.id, by="U0OPS", at=at(2), impersonated_by="U0ADMIN2", from_os_login="bob"
    )

    again = await get_incident(store, incident.id)
    assert again == acked
    assert again.declared_by_people() == {"U0LEAD2", "U0ADMIN", "os:alice"}
    assert again.acked_by_people() == {"U0OPS", "U0ADMIN2", "os:bob"}
    assert plain.declared_by_people() == {"U0OPS"} and plain.acked_by_people() == frozenset()


async def test_two_people_acknowledging_at_once_make_one_holder(store: Store) -> None:
    incident = await declare(store)

    results = await asyncio.gather(
        *(acknowledge_incident(store, incident.id, by=f"U0P{n}", at=at(1)) for n in range(5)),
        return_exceptions=True,
    )

    holders = [r.acked_by for r in results if isinstance(r, Incident)]
    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(holders) == 1 and len(conflicts) == 4
    assert {c.message_key for c in conflicts} == {"incident.already_acknowledged"}
    assert [e.kind for e in await timeline(store, incident.id)].count("acknowledged") == 1


async def test_a_resolved_incident_takes_no_ack_update_or_second_resolve(store: Store) -> None:
    incident = await declare(store)
    await resolve_incident(store, incident.id, by="U0OPS", at=at(5))

    for change in (
        acknowledge_incident(store, incident.id, by="U0ADMIN", at=at(6)),
        add_update(store, incident.id, by="U0ADMIN", at=at(6), text="late"),
        resolve_incident(store, incident.id, by="U0ADMIN", at=at(6)),
    ):
        with pytest.raises(Conflict) as caught:
            await change
        assert caught.value.message_key == "incident.already_resolved"
        assert caught.value.params["by"] == "U0OPS"


async def test_an_unknown_incident_is_not_found_for_every_change(store: Store) -> None:
    for change in (
        get_incident(store, 404),
        acknowledge_incident(store, 404, by="U0ADMIN", at=at(1)),
        add_update(store, 404, by="U0ADMIN", at=at(1), text="x"),
        resolve_incident(store, 404, by="U0ADMIN", at=at(1)),
        save_postmortem(store, 404, "# x"),
    ):
        with pytest.raises(NotFound) as caught:
            await change
        assert caught.value.params == {"incident": "INC-404"}


async def test_the_list_shows_unresolved_first_most_severe_then_oldest(store: Store) -> None:
    p3_old = await declare(store, "P3", "old minor", minutes=0)
    p1 = await declare(store, "P1", "all down", minutes=10)
    done = await declare(store, "P1", "fixed", minutes=5)
    p3_new = await declare(store, "P3", "new minor", minutes=20)
    await resolve_incident(store, done.id, by="U0OPS", at=at(30))
    await acknowledge_incident(store, p1.id, by="U0ADMIN", at=at(11))

    listed = await list_incidents(store)

    assert [i.id for i in listed] == [p1.id, p3_old.id, p3_new.id, done.id]
    assert listed[0].holder == "U0ADMIN"


async def test_bot_actions_while_open_go_on_every_unresolved_incidents_timeline(store: Store) -> None:
    first = await declare(store, minutes=0)
    second = await declare(store, "P1", minutes=1)
    closed = await declare(store, minutes=2)
    await resolve_incident(store, closed.id, by="U0OPS", at=at(3))

    noted = await note_action(
        store, at=at(5), actor="U0ADMIN", command="restore", outcome="succeeded", detail={"backup_id": 12}
    )

    assert noted == 2
    for incident in (first, second):
        action = (await timeline(store, incident.id))[-1]
        assert (action.kind, action.at, action.actor, action.text) == ("action", at(5), "U0ADMIN", "restore")
        assert action.detail == {"outcome": "succeeded", "backup_id": 12}
    assert [e.kind for e in await timeline(store, closed.id)] == ["declared", "resolved"]


async def test_an_action_before_an_incident_was_declared_is_not_on_its_timeline(store: Store) -> None:
    incident = await declare(store, minutes=10)

    assert await note_action(store, at=at(5), actor="U0OPS", command="service restart", outcome="ok") == 0
    assert [e.kind for e in await timeline(store, incident.id)] == ["declared"]


async def test_notes_notice_refs_and_the_postmortem_are_kept(store: Store) -> None:
    incident = await declare(store)

    await note(store, incident.id, at=at(0), actor="gardenbot", kind="notice_failed", text="SlackApiError")
    await remember_notice(store, incident.id, {"channel": "C0INC", "ts": "1.2"})
    await remember_channel(store, incident.id, {"channel": "C0NEW", "name": "inc-1-api-down"})
    await save_postmortem(store, incident.id, "# Postmortem\n")

    kept = await get_incident(store, incident.id)
    assert kept.message_ref == {"channel": "C0INC", "ts": "1.2"}
    assert kept.channel_ref["name"] == "inc-1-api-down"
    assert kept.postmortem == "# Postmortem\n"
    assert (await timeline(store, incident.id))[-1].kind == "notice_failed"
