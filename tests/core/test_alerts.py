"""core/alerts.py against what Alertmanager really sends (tests/fixtures/alertmanager/, captured
from Alertmanager 0.25.0) and against a live Alertmanager started here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from core.alerts import AlertPayloadError, parse_alert_group
from tests.support.alertmanager import HOSTS, run_scenario
from tests.support.fixtures import FIXTURES

ALERTMANAGER = FIXTURES / "alertmanager"


def fixture(name: str) -> bytes:
    return (ALERTMANAGER / name).read_bytes()


def test_a_firing_group_from_alertmanager_parses_into_typed_data() -> None:
    group = parse_alert_group(fixture("GardenDiskSpaceLow-firing.json"))
    assert group.version == "4"
    assert group.status == "firing"
    assert group.receiver == "gardenbot"
    assert group.group_key == '{}:{alertname="GardenDiskSpaceLow", service="node", severity="warning"}'
    assert group.group_labels == {"alertname": "GardenDiskSpaceLow", "service": "node", "severity": "warning"}
    assert group.external_url == "http://alertmanager.garden.internal:9093"
    assert (len(group.alerts), group.truncated_alerts, group.alert_count) == (2, 1, 3)
    alert = group.alerts[0]
    assert alert.status == "firing" and alert.ends_at is None  # Go's zero time
    # Alertmanager writes nanoseconds; the microseconds survive
    assert alert.starts_at == datetime(2026, 11, 28, 22, 0, 0, 123456, tzinfo=UTC)
    assert alert.fingerprint and alert.generator_url.startswith("http://prometheus.garden.internal")


def test_severity_summary_and_description_come_from_the_group_or_its_first_alert() -> None:
    group = parse_alert_group(fixture("GardenDiskSpaceLow-firing.json"))
    assert group.severity == "warning"
    # summaries differ by host, so none is common: the first alert's is the title
    assert "summary" not in group.common_annotations
    assert group.summary == group.alerts[0].annotations["summary"]
    assert group.description.startswith("Less than 15 %")
    assert group.runbook == "`/garden system info`; old backups, logs, WAL."
    critical = parse_alert_group(fixture("GardenPostgresDown-firing.json"))
    assert critical.severity == "critical"
    assert critical.summary == "PostgreSQL on db1.garden.internal:9187 is down"


def test_severity_without_a_common_one_is_the_most_severe_of_the_alerts() -> None:
    data = json.loads(fixture("GardenDiskSpaceLow-firing.json"))
    for key in ("groupLabels", "commonLabels"):
        del data[key]["severity"]
    data["alerts"][1]["labels"]["severity"] = "critical"
    assert parse_alert_group(json.dumps(data)).severity == "critical"


def test_the_labels_that_matter_leave_out_the_name_and_severity_and_tell_alerts_apart() -> None:
    group = parse_alert_group(fixture("GardenDiskSpaceLow-firing.json"))
    assert group.shown_labels() == {
        "device": "/dev/sda1",
        "fstype": "ext4",
        "job": "node-exporter",
        "mountpoint": "/",
        "service": "node",
    }
    assert [a.distinct_labels(group.common_labels) for a in group.alerts] == [
        {"instance": HOSTS[0]},
        {"instance": HOSTS[1]},
    ]


def test_the_silence_link_opens_alertmanager_with_the_groups_matchers() -> None:
    group = parse_alert_group(fixture("GardenDiskSpaceLow-firing.json"))
    url = urlsplit(group.silence_url())
    assert f"{url.scheme}://{url.netloc}" == "http://alertmanager.garden.internal:9093"
    route, _, query = url.fragment.partition("?")
    assert route == "/silences/new"
    assert parse_qs(query)["filter"] == ['{alertname="GardenDiskSpaceLow",service="node",severity="warning"}']


def test_the_silence_link_escapes_quotes_in_label_values() -> None:
    data = json.loads(fixture("GardenPostgresDown-firing.json"))
    data["groupLabels"] = {"alertname": 'Odd "name"'}
    query = urlsplit(parse_alert_group(json.dumps(data)).silence_url()).fragment.partition("?")[2]
    assert parse_qs(query)["filter"] == ['{alertname="Odd \\"name\\""}']


def test_a_resolved_group_says_how_long_it_fired_and_a_firing_one_does_not() -> None:
    resolved = parse_alert_group(fixture("GardenDiskSpaceLow-resolved.json"))
    assert resolved.status == "resolved" and not resolved.firing
    duration = resolved.resolved_after()
    assert duration is not None
    ends = [a.ends_at for a in resolved.alerts if a.ends_at is not None]
    assert duration == max(ends) - datetime(2026, 11, 28, 22, 0, 0, 123456, tzinfo=UTC)
    assert parse_alert_group(fixture("GardenDiskSpaceLow-firing.json")).resolved_after() is None


def test_unknown_fields_from_newer_alertmanagers_are_ignored() -> None:
    data = json.loads(fixture("GardenPostgresDown-firing.json"))
    data["groupID"] = "new-in-a-later-release"
    data["alerts"][0]["silenceURL"] = "http://example/"
    data["alerts"][0]["values"] = {"B": 1}
    assert parse_alert_group(json.dumps(data)).alerts[0].name == "GardenPostgresDown"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (fixture("upstream-exec-success.json"), "version '1' is not supported"),
    ],
)
def test_a_body_that_is_not_a_version_4_payload_is_refused_clearly(body: bytes, says: str) -> None:
    with pytest.raises(AlertPayloadError, match=says):
        parse_alert_group(body)


def without(name: str, key: str) -> str:
    data: dict[str, Any] = json.loads(fixture(name))
    del data[key]
    return json.dumps(data)


def test_a_payload_without_a_group_key_or_version_is_refused() -> None:
    with pytest.raises(AlertPayloadError, match="no groupKey"):
        parse_alert_group(without("GardenPostgresDown-firing.json", "groupKey"))
    with pytest.raises(AlertPayloadError, match="version None"):
        parse_alert_group(without("GardenPostgresDown-firing.json", "version"))


def test_a_malformed_alert_is_refused_naming_the_field() -> None:
    data = json.loads(fixture("GardenPostgresDown-firing.json"))
    data["alerts"][0]["status"] = "exploded"
    with pytest.raises(AlertPayloadError, match=r"alerts\.0\.status"):
        parse_alert_group(json.dumps(data))


def test_every_payload_a_live_alertmanager_sends_parses_and_carries_the_bearer_token() -> None:
    """Alertmanager 0.25 (Debian) with the webhook shape of deploy/alertmanager: three disk alerts
    (max_alerts 2) and a PostgreSQL one fire, then the disk alerts resolve."""
    deliveries = run_scenario(max_alerts=2)
    groups = [parse_alert_group(d.body) for d in deliveries]
    assert all(d.headers["authorization"] == "Bearer test-alert-token" for d in deliveries)
    by_state = {(g.name, g.status, g.alert_count): g for g in groups}  # the last of each
    disk = by_state[("GardenDiskSpaceLow", "firing", 3)]
    assert (len(disk.alerts), disk.truncated_alerts) == (2, 1)
    assert by_state[("GardenPostgresDown", "firing", 1)].severity == "critical"
    resolved = by_state[("GardenDiskSpaceLow", "resolved", 3)]
    assert resolved.group_key == disk.group_key
    after = resolved.resolved_after()
    assert after is not None and after > timedelta(0)
