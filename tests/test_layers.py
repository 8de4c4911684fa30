"""The import rules of docs/architecture.md, read from the source with ast.

core imports nothing of ours; store imports core; runbooks imports core; commands imports core,
store, runbooks; scheduler imports commands, core, store; bot imports anything and is the only
package that imports slack_bolt or slack_sdk.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runtime import REPO_ROOT

OURS = ("bot", "commands", "core", "runbooks", "scheduler", "store")
SLACK = ("slack_bolt", "slack_sdk")
# package -> our packages it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "store": {"store", "core"},
    "runbooks": {"runbooks", "core"},
    "commands": {"commands", "core", "store", "runbooks"},
    "scheduler": {"scheduler", "commands", "core", "store"},
    "bot": set(OURS),
}


def imported_modules(path: Path, package_parts: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from . import x` / `from store import audit` name modules too; the package is enough.


def violations(root: Path) -> list[str]:
    """Every import in the tree at `root` that breaks a rule, as 'file:line: a imports b'."""
    found: list[str] = []
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            parts = rel.with_suffix("").parts
            package_parts = parts[:-1]  # the package a relative import starts from
            for line, module in imported_modules(path, package_parts):
                top = module.split(".")[0]
                if top in SLACK and package != "bot":
                    found.append(f"{rel}:{line}: {package} imports {module} (only bot/ may)")
                elif top in OURS and top not in ALLOWED[package]:
                    found.append(f"{rel}:{line}: {package} imports {module}")
    return found


def test_the_real_tree_keeps_the_import_rules() -> None:
    assert (REPO_ROOT / "core" / "config.py").exists()
    assert violations(REPO_ROOT) == []


def command_modules(root: Path) -> set[str]:
    """The modules under commands/ that declare sub-commands (they call `Command(...)`)."""
    found: set[str] = set()
    for path in (root / "commands").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Command":
                found.add(".".join(path.relative_to(root).with_suffix("").parts))
    return found


def bot_imports_of_command_modules(root: Path) -> list[str]:
    """bot/ reaches commands through the registry and pipeline, never a command module by name."""
    named = command_modules(root)
    found: list[str] = []
    for path in sorted((root / "bot").rglob("*.py")):
        rel = path.relative_to(root)
        for line, module in imported_modules(path, rel.with_suffix("").parts[:-1]):
            if module in named:
                found.append(f"{rel}:{line}: bot imports the command module {module}")
    return found


def test_bot_imports_no_command_module_by_name() -> None:
    assert {"commands.backup", "commands.audit", "commands.help"} <= command_modules(REPO_ROOT)
    assert bot_imports_of_command_modules(REPO_ROOT) == []


def test_a_bot_import_of_a_command_module_is_reported(tmp_path: Path) -> None:
    root = _fake_tree(
        tmp_path,
        {"commands/backup.py": "C = (Command(),)\n", "bot/x.py": "from commands.backup import recover\n"},
    )

    expected = "bot/x.py:1: bot imports the command module commands.backup"
    assert bot_imports_of_command_modules(root) == [expected]


def test_the_checker_sees_real_imports() -> None:
    seen = {
        module.split(".")[0]
        for line, module in imported_modules(REPO_ROOT / "commands" / "pipeline.py", ("commands",))
    }
    assert {"commands", "core", "store"} <= seen


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in OURS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"core/x.py": "from store.db import Store\n"}, ["core/x.py:1: core imports store.db"]),
        ({"store/x.py": "import commands.base\n"}, ["store/x.py:1: store imports commands.base"]),
        ({"runbooks/x.py": "from store import jobs\n"}, ["runbooks/x.py:1: runbooks imports store"]),
        (
            {"commands/x.py": "from bot.console import Console\n"},
            ["commands/x.py:1: commands imports bot.console"],
        ),
        (
            {"scheduler/x.py": "from runbooks import health\n"},
            ["scheduler/x.py:1: scheduler imports runbooks"],
        ),
        (
            {"commands/x.py": "def f():\n    from slack_sdk import WebClient\n"},
            ["commands/x.py:2: commands imports slack_sdk (only bot/ may)"],
        ),
        (
            {"runbooks/x.py": "import typing\nif typing.TYPE_CHECKING:\n    import slack_bolt.app\n"},
            ["runbooks/x.py:3: runbooks imports slack_bolt.app (only bot/ may)"],
        ),
        (
            {"commands/sub/__init__.py": "", "commands/sub/x.py": "from ...bot import app\n"},
            ["commands/sub/x.py:1: commands imports bot"],
        ),
        (
            {
                "bot/x.py": "import slack_bolt\nfrom commands import pipeline\n",
                "commands/x.py": "from store import db\nfrom runbooks import cache\nfrom . import base\n",
                "scheduler/x.py": "from commands import pipeline\nfrom store import jobs\n",
                "core/x.py": "import os\nfrom core import errors\n",
            },
            [],
        ),
    ],
)
def test_a_broken_rule_in_a_fake_tree_is_reported(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    assert violations(_fake_tree(tmp_path, files)) == expected


MAX_FUNCTION_LINES = 60


def long_functions(root: Path, packages: tuple[str, ...] = ("commands", "bot")) -> list[str]:
    """'file:name (N lines)' for every function longer than MAX_FUNCTION_LINES in these packages."""
    found: list[str] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(root)}:{node.name} ({lines} lines)")
    return found


def test_no_function_in_commands_or_bot_is_over_60_lines() -> None:
    assert long_functions(REPO_ROOT) == []


def test_a_long_function_is_named(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    root = _fake_tree(tmp_path, {"commands/x.py": f"async def long():\n{body}"})

    assert long_functions(root) == ["commands/x.py:long (62 lines)"]
