"""A button click (Slack) or a numbered choice (console) becomes a Request in one place.

`approve` / `deny` become a typed Decision; any other action id listed in CLICK_COMMANDS becomes
that command line (the incident and alert buttons will add their ids here, with no new plumbing).
"""

from __future__ import annotations

from dataclasses import replace

from commands.base import Actor, Decision, Request, Source
from core.errors import UsageError

# action id -> the command line it asks for (the button's value is appended when it has one)
CLICK_COMMANDS: dict[str, str] = {
    "run_health": "health",
    "alert_ack": "alert ack",
    "restore_backup": "restore",
    "incident_ack": "incident ack",
    "declare_incident": "incident declare",  # an alert's button: severity and title pre-filled
    "incident_resolve": "incident resolve",
}

# Buttons whose answer replaces the message they sit on (an incident notice after ack or resolve);
# every other command button answers in the message's thread and leaves the message as it is.
REPLACES_MESSAGE: frozenset[str] = frozenset({"incident_ack", "incident_resolve"})


def request_from_click(
    action_id: str, value: str, actor: Actor, channel: str | None, *, source: Source = "slack"
) -> Request:
    """The request a click asks for; a malformed decision value is refused like a typed one."""
    text = f"{action_id} {value}".strip()
    if action_id in ("approve", "deny"):
        request = Request(actor=actor, text=text, source=source, channel=channel)
        try:
            decision = Decision.from_words([action_id, value])
        except UsageError:
            return request  # the pipeline refuses the words exactly as it refuses them typed
        return replace(request, decision=decision)
    line = CLICK_COMMANDS.get(action_id)
    if line is None:
        raise UsageError("usage.unknown_command", usage="help", word=action_id[:40])
    return Request(actor=actor, text=f"{line} {value}".strip(), source=source, channel=channel)


def click_ids() -> tuple[str, ...]:
    """Every action id a surface routes through `request_from_click`."""
    return ("approve", "deny", *CLICK_COMMANDS)
