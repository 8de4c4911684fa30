"""docs/configuration.md and docs/ja/configuration.md are generated from the settings model by
scripts/config_reference.py; they must match what it writes now (one source of truth), and every key
has exactly one Japanese description in docs/ja/config-descriptions.yml.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
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


def test_every_key_of_the_model_has_a_japanese_description() -> None:
    reference = generator()
    missing, _ = reference.japanese_gaps(reference.japanese_descriptions())
    assert missing == [], "describe these in docs/ja/config-descriptions.yml"


def test_the_japanese_descriptions_name_only_keys_of_the_model() -> None:
    reference = generator()
    _, unknown = reference.japanese_gaps(reference.japanese_descriptions())
    assert unknown == [], "these are no longer keys: remove them from docs/ja/config-descriptions.yml"


def test_a_new_key_or_a_removed_key_shows_up_as_a_japanese_gap() -> None:
    """The two checks above can fail: a key the mapping lacks, and a key the model lacks."""

    class Grown(Settings):
        wal_archive_dir: str = Field(default="/var/lib/wal", description="Where WAL segments are archived.")

    reference = generator()
    described = {key.dotted: "説明。" for key in reference.reference_keys()}
    assert reference.japanese_gaps(described, Grown) == (["wal_archive_dir"], [])
    gone = {**described, "backup.wal_dir": "WAL の置き場所。"}
    assert reference.japanese_gaps(gone) == ([], ["backup.wal_dir"])


def test_the_japanese_reference_shows_the_japanese_description_not_the_english_one() -> None:
    reference = generator()
    japanese = reference.japanese_descriptions()["backup.retention_days"]
    english = reference.FALLBACK["backup.retention_days"]
    row = next(line for line in reference.render("ja").splitlines() if "`backup.retention_days`" in line)
    assert japanese in row and english not in row
    assert english in reference.render("en")


def test_a_key_given_twice_in_the_japanese_descriptions_is_refused(tmp_path: Path) -> None:
    doubled = tmp_path / "config-descriptions.yml"
    doubled.write_text('locale: "言語。"\ntimezone: "時刻。"\nlocale: "表示言語。"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="given twice: locale"):
        generator().japanese_descriptions(doubled)


def test_every_environment_variable_is_in_the_reference() -> None:
    text = generator().OUTPUTS["en"].read_text(encoding="utf-8")
    for name, dotted in ENV_KEYS.items():
        assert f"| `{name}` | `{dotted}` |" in text


def test_the_check_mode_exits_0_when_the_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
