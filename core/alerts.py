"""Alertmanager's webhook payload (version 4) as typed data, and what the bot shows of it.

One payload is one alert group: `groupKey` names it (the bot keeps one Slack message per group),
`status` is "firing" while any of its alerts fires. Unknown fields are ignored, since newer
Alertmanager releases add some. A payload that is not JSON, not version 4 or has no groupKey
raises AlertPayloadError, whose message says which (the webhook answers it with 400).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

WEBHOOK_VERSION = "4"
# Labels every alert of a setup carries, or that the message shows elsewhere: not worth a line.
QUIET_LABELS = frozenset({"alertname", "severity", "prometheus", "replica", "monitor", "site"})
SEVERITY_ORDER = ("critical", "error", "warning", "info", "none")

AlertStatus = Literal["firing", "resolved"]


class AlertPayloadError(ValueError):
    """The request body is not an Alertmanager version 4 webhook payload."""


def _zero_time_is_none(value: Any) -> Any:
    """Go's zero time (0001-01-01T00:00:00Z) is Alertmanager's "not set"."""
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    _times = field_validator("starts_at", "ends_at", mode="before")(_zero_time_is_none)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def distinct_labels(self, common: dict[str, str]) -> dict[str, str]:
        """What tells this alert apart from the others of its group (instance, mountpoint...)."""
        return {k: v for k, v in self.labels.items() if k not in common and k not in QUIET_LABELS}


class AlertGroup(_Model):
    version: str
    group_key: str = Field(alias="groupKey")
    status: AlertStatus
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    alerts: list[Alert] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return self.group_labels.get("alertname") or self.common_labels.get("alertname", "")

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.status == "firing"]

    @property
    def resolved(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.status == "resolved"]

    @property
    def alert_count(self) -> int:
        """Alerts in the group, those cut off by the receiver's max_alerts included."""
        return len(self.alerts) + self.truncated_alerts

    @property
    def severity(self) -> str:
        """The group's severity: the common one, else the most severe of its alerts."""
        common = self.common_labels.get("severity") or self.group_labels.get("severity")
        if common:
            return common
        seen = {alert.labels.get("severity", "none") for alert in self.alerts}
        return next((s for s in SEVERITY_ORDER if s in seen), "none")

    @property
    def summary(self) -> str:
        """One line for the message title: the common summary, else the first alert's, else the name."""
        return self._annotation("summary") or self.name or self.group_key

    @property
    def description(self) -> str:
        return self._annotation("description")

    @property
    def runbook(self) -> str:
        return self._annotation("runbook") or self._annotation("runbook_url")

    def _annotation(self, key: str) -> str:
        if self.common_annotations.get(key):
            return self.common_annotations[key]
        for alert in self.firing or self.alerts:
            if alert.annotations.get(key):
                return alert.annotations[key]
        return ""

    def shown_labels(self) -> dict[str, str]:
        """The labels that matter: the group's and common ones, without the ones shown elsewhere."""
        labels = {**self.common_labels, **self.group_labels}
        return {k: v for k, v in sorted(labels.items()) if k not in QUIET_LABELS}

    def silence_url(self) -> str:
        """Alertmanager's "new silence" page, pre-filled with the matchers that define the group."""
        labels = self.group_labels or self.common_labels
        matchers = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
        base = self.external_url.rstrip("/")
        return f"{base}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"

    def started_at(self) -> datetime | None:
        starts = [alert.starts_at for alert in self.alerts if alert.starts_at is not None]
        return min(starts) if starts else None

    def fires_anew_after(self, before: AlertGroup) -> bool:
        """Firing again after `before`: it was resolved, or an alert fires that did not then
        (matched by fingerprint, else labels). An acknowledgement does not carry over."""
        if self.status != "firing":
            return False
        if before.status != "firing":
            return True
        was_firing = {_identity(alert) for alert in before.firing}
        return any(_identity(alert) not in was_firing for alert in self.firing)

    def resolved_after(self) -> timedelta | None:
        """How long a resolved group fired: first start to last end; None while it fires."""
        if self.status != "resolved":
            return None
        start = self.started_at()
        ends = [alert.ends_at for alert in self.alerts if alert.ends_at is not None]
        if start is None or not ends:
            return None
        return max(ends) - start


def _identity(alert: Alert) -> str:
    return alert.fingerprint or repr(sorted(alert.labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_alert_group(body: bytes | str) -> AlertGroup:
    """The payload as typed data, or AlertPayloadError saying what is wrong with it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertPayloadError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AlertPayloadError(f"the body is a JSON {type(data).__name__}, not an object")
    version = data.get("version")
    if version != WEBHOOK_VERSION:
        raise AlertPayloadError(f"webhook version {version!r} is not supported (expected '4')")
    if not isinstance(data.get("groupKey"), str) or not data["groupKey"]:
        raise AlertPayloadError("the payload has no groupKey")
    try:
        return AlertGroup.model_validate(data)
    except ValidationError as exc:
        raise AlertPayloadError(f"the payload is malformed: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
