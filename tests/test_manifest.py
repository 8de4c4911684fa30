"""manifest.yml against Slack's app manifest JSON Schema, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.support.signing import SLACK_FIXTURES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = SLACK_FIXTURES / "manifest-schema"
# Where the root schema's remote $refs point; served from the local copies instead.
REMOTE = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"
EXPECTED_SCOPES = {"commands", "chat:write", "chat:write.public", "usergroups:read", "im:write"}
EVENTS_URL = "https://garden-ops.example.com/slack/events"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resources(
        (REMOTE + path.name, Resource.from_contents(load_json(path), DRAFT7))
        for path in (SCHEMA_DIR / "schemas").glob("*.json")
    )
    root = load_json(SCHEMA_DIR / "manifest.schema.json")
    Draft7Validator.check_schema(root)
    return Draft7Validator(root, registry=registry)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_manifest_is_valid(validator: Draft7Validator, manifest: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []


def test_upstream_examples_pass_and_fail(validator: Draft7Validator) -> None:
    assert validator.is_valid(load_json(SCHEMA_DIR / "tests/v1/manifest.valid.json"))
    assert not validator.is_valid(load_json(SCHEMA_DIR / "tests/v1/manifest.invalid.json"))


def test_unknown_key_in_our_manifest_would_fail(validator: Draft7Validator, manifest: dict[str, Any]) -> None:
    broken = {**manifest, "settings": {**manifest["settings"], "socket_mode": True}}
    assert not validator.is_valid(broken)


def test_scopes_are_exactly_what_the_bot_uses(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}
    assert sorted(scopes["bot"]) == sorted(EXPECTED_SCOPES)


def test_one_slash_command_and_interactivity_on_the_events_url(manifest: dict[str, Any]) -> None:
    assert manifest["_metadata"] == {"major_version": 1, "minor_version": 1}
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/garden"
    assert command["url"] == EVENTS_URL
    assert command["usage_hint"] and command["description"]
    assert manifest["features"]["bot_user"]["display_name"]
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": EVENTS_URL}
    assert manifest["settings"]["socket_mode_enabled"] is False
