"""`system_actors`: the scheduler's and the webhook's roles come from configuration, checked at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.base import Actor, Role
from commands.policy import Policy
from commands.system import system_request
from core.config import load_settings
from core.errors import ConfigError


def settings_with(tmp_path: Path, **data: Any) -> Any:
    path = tmp_path / "gardenbot.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings({}, path)


def test_system_actor_roles_default_to_scheduler_admin_and_webhook_operator(tmp_path: Path) -> None:
    policy = Policy(settings_with(tmp_path))

    assert policy.role_of(Actor.system_actor("scheduler")) == Role.ADMIN
    assert policy.role_of(Actor.system_actor("webhook")) == Role.OPERATOR


def test_system_actor_roles_come_from_configuration(tmp_path: Path) -> None:
    policy = Policy(settings_with(tmp_path, system_actors={"scheduler": "viewer", "webhook": "none"}))

    assert policy.role_of(Actor.system_actor("scheduler")) == Role.VIEWER
    assert policy.role_of(Actor.system_actor("webhook")) == Role.NONE


def test_a_person_named_like_a_system_actor_gets_no_system_role(tmp_path: Path) -> None:
    policy = Policy(settings_with(tmp_path))

    assert policy.role_of(Actor(user_id="scheduler")) == Role.NONE


@pytest.mark.parametrize(
    ("system_actors", "key"),
    [
        pytest.param({"cron": "admin"}, "system_actors.cron", id="unknown-actor"),
        pytest.param({"webhook": "root"}, "system_actors.webhook", id="unknown-role"),
    ],
)
def test_configuration_rejects_an_unknown_system_actor_or_role_in_one_line(
    tmp_path: Path, system_actors: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, system_actors=system_actors)

    message = str(caught.value)
    assert caught.value.key == key, message
    assert message.startswith(f"configuration error: {key}: ")
    assert "\n" not in message


def test_only_the_scheduler_and_the_webhook_are_system_actors() -> None:
    with pytest.raises(ValueError, match="unknown system actor 'cron'"):
        Actor.system_actor("cron")


def test_a_system_request_names_its_actor_source_and_configured_channel(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, channels={"ops": "C0OPS", "alerts": "C0ALERTS"})

    request = system_request(settings, "webhook", "health", "alerts")

    assert (request.actor, request.source, request.channel) == (
        Actor("webhook", system=True),
        "webhook",
        "C0ALERTS",
    )


def test_a_system_request_to_an_unset_channel_names_the_key(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, channels={"ops": "C0OPS"})

    with pytest.raises(ConfigError) as caught:
        system_request(settings, "scheduler", "health", "reports")

    assert caught.value.key == "channels.reports"
    with pytest.raises(ValueError, match="unknown channel key 'opps'"):
        system_request(settings, "scheduler", "health", "opps")
