"""docs/configuration.md and docs/ja/configuration.md are generated from the settings model by
scripts/config_reference.py; they must match what it writes now (one source of truth).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest
from pydantic import Field

from core.config import ENV_KEYS, Settings
from tests.support.runtime import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "config_reference.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_the_configuration_reference_matches_the_settings_model(lang: str) -> None:
    reference = generator()
    written = reference.OUTPUTS[lang].read_text(encoding="utf-8")
    assert written == reference.render(lang), "stale: run `python scripts/config_reference.py`"


def test_a_setting_added_to_the_model_makes_the_reference_stale() -> None:
    """The comparison can fail: a new key shows up in what the generator writes."""

    class Grown(Settings):
        wal_archive_dir: str = Field(default="/var/lib/wal", description="Where WAL segments are archived.")

    reference = generator()
    grown = reference.render("en", Grown)
    assert "`wal_archive_dir`" in grown and "Where WAL segments are archived." in grown
    assert grown != reference.OUTPUTS["en"].read_text(encoding="utf-8")


def test_every_key_of_the_model_has_a_description() -> None:
    missing = [key.dotted for key in generator().reference_keys() if not key.description.strip()]
    assert missing == [], "give these a Field(description=...) or a comment in core/config.py"


def test_every_environment_variable_is_in_the_reference() -> None:
    text = generator().OUTPUTS["en"].read_text(encoding="utf-8")
    for name, dotted in ENV_KEYS.items():
        assert f"| `{name}` | `{dotted}` |" in text


def test_the_check_mode_exits_0_when_the_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
