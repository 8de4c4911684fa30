"""The hosts playbooks, run for real: ansible-runner and Ansible against a sample Garden DX on this
machine (ansible_connection=local), a git-deployed HTTP app under a real supervisord.

Each release test gets its own sample at v1; the tests that only read or restart share one.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from core.errors import UsageError
from runbooks import hosts
from runbooks.playbook_runner import HostsSetup, TaskEvent, _Collector, run_playbook
from runbooks.sample_hosts import SampleHosts, running_sample_hosts, tool_path
from tests.support.runtime import REPO_ROOT

pytestmark = pytest.mark.slow
HOST = "localhost"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleHosts]:
    with running_sample_hosts(tmp_path_factory.mktemp("hosts") / "garden") as sample:
        yield sample


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[SampleHosts]:
    with running_sample_hosts(tmp_path / "garden") as sample:
        yield sample


def setup_for(sample: SampleHosts, **more: Any) -> HostsSetup:
    return HostsSetup(inventory=sample.inventory, vars={**sample.vars(), **more}, timeout_s=300)


def serving_version(sample: SampleHosts) -> str:
    return str(httpx.get(sample.backend_url, timeout=5).json()["version"])


def checkout_describe(sample: SampleHosts) -> str:
    out = subprocess.run(
        ["git", "-C", str(sample.garden_root), "describe", "--tags"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def pids(sample: SampleHosts) -> dict[str, str]:
    out = subprocess.run(
        [tool_path("supervisorctl"), "-c", str(sample.supervisor_config), "pid", "all"],
        capture_output=True,
        text=True,
    )
    return dict(zip(("garden-backend", "garden-frontend"), out.stdout.split(), strict=False))


class Recorder:
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    async def __call__(self, event: TaskEvent) -> None:
        self.events.append(event)

    def pairs(self) -> list[tuple[str, str]]:
        return [(e.task, e.status) for e in self.events]


async def test_release_moves_v1_to_v2_and_the_new_version_serves(fresh: SampleHosts) -> None:
    steps = Recorder()
    assert serving_version(fresh) == "v1"

    report = await hosts.release(setup=setup_for(fresh), version="v2", progress=steps)

    assert report.ok, report.problems
    result = report.by_host[HOST]
    assert result.outcome == "released"
    assert (result.previous.describe, result.now and result.now.describe) == ("v1", "v2")
    assert serving_version(fresh) == "v2"
    assert checkout_describe(fresh) == "v2"
    assert not Path(fresh.vars()["garden_maintenance_flag"]).exists()
    # v2 has a requirements.txt, no package.json and no alembic.ini: what ran and what was skipped says so.
    deps, migrate, build = result.steps
    assert [i.step for i in deps.ran] == ["pip install -r requirements.txt"]
    assert [(i.step, i.missing) for i in deps.skipped] == [("npm ci", "package.json")]
    assert [(i.step, i.missing) for i in migrate.skipped] == [("alembic upgrade head", "alembic.ini")]
    assert [(i.step, i.missing) for i in build.skipped] == [("npm run build", "package.json")]
    assert result.migrations == "skipped"
    # The gate stops at the third healthy answer in a row: no fixed wait before or after.
    assert result.health is not None and (result.health.healthy, result.health.answers) == (True, 3)
    # Each task's start and end arrive as typed steps, in order.
    pairs = steps.pairs()
    assert pairs.index(("Check out v2", "started")) < pairs.index(("Check out v2", "changed"))
    assert pairs.index(("Stop services", "changed")) < pairs.index(("Start services", "started"))
    assert all(e.host == HOST for e in steps.events)
    assert report.run.audit()["playbook"] == "release"
    assert report.run.audit()["hosts"] == {HOST: "ok"}


async def test_release_whose_health_gate_fails_is_rolled_back_and_the_old_version_serves(
    fresh: SampleHosts,
) -> None:
    report = await hosts.release(setup=setup_for(fresh, garden_health_timeout=4), version="v2-bad")

    assert not report.ok
    result = report.by_host[HOST]
    assert result.outcome == "rolled_back"
    assert result.failed_step == "Wait for healthy answers in a row"
    assert result.migrations == "skipped"
    assert result.now is not None and result.now.describe == "v1"
    assert result.health is not None and result.health.healthy  # the rollback's own gate
    assert "not healthy" in report.problems[HOST] and "503" in report.problems[HOST]
    assert serving_version(fresh) == "v1"
    assert checkout_describe(fresh) == "v1"
    assert not Path(fresh.vars()["garden_maintenance_flag"]).exists()
    assert report.run.audit()["hosts"] == {HOST: "failed"}


async def test_version_check_finds_a_tag_in_origin_and_not_an_unknown_one(shared: SampleHosts) -> None:
    setup = setup_for(shared)

    found = await hosts.check_version(setup=setup, version="v2")
    missing = await hosts.check_version(setup=setup, version="v9.9")

    assert hosts.version_found(found)
    assert found.by_host[HOST].current.describe == "v1"
    assert not hosts.version_found(missing)
    assert missing.by_host[HOST].exists is False


async def test_release_of_an_unknown_version_fails_before_touching_the_services(shared: SampleHosts) -> None:
    before = pids(shared)

    report = await hosts.release(setup=setup_for(shared), version="v9.9")

    assert not report.ok
    assert HOST not in report.by_host
    assert "v9.9 not found in origin" in report.problems[HOST]
    assert pids(shared) == before
    assert serving_version(shared) == "v1"
    assert not Path(shared.vars()["garden_maintenance_flag"]).exists()


@pytest.mark.parametrize("version", ["--upload-pack=touch /tmp/x", "v1;reboot", "", "v1 v2", "ü"])
def test_a_version_that_is_not_a_name_is_refused_before_any_playbook(version: str) -> None:
    with pytest.raises(UsageError) as refused:
        hosts.check_version_name(version)
    assert refused.value.message_key == "hosts.bad_version"


async def test_restart_of_an_unknown_service_is_refused_before_any_playbook(tmp_path: Path) -> None:
    setup = HostsSetup(inventory=tmp_path / "absent.ini", vars={"garden_services": ["garden-backend"]})
    with pytest.raises(UsageError) as refused:
        await hosts.restart_service(setup=setup, service="sshd")
    assert refused.value.message_key == "hosts.unknown_service"


async def test_restart_all_gives_both_services_new_processes_and_passes_the_health_gate(
    shared: SampleHosts,
) -> None:
    before = pids(shared)

    report = await hosts.restart_service(setup=setup_for(shared), service="all")

    assert report.ok, report.problems
    result = report.by_host[HOST]
    assert [(a.name, a.ok) for a in result.restarted] == [("garden-backend", True), ("garden-frontend", True)]
    assert result.health.healthy
    after = pids(shared)
    assert set(after) == set(before) and all(after[name] != before[name] for name in before)


async def test_service_status_says_which_service_is_down_and_since_when_the_other_runs(
    shared: SampleHosts,
) -> None:
    ctl = [tool_path("supervisorctl"), "-c", str(shared.supervisor_config)]
    subprocess.run([*ctl, "stop", "garden-frontend"], check=True, capture_output=True)
    try:
        report = await hosts.service_status(setup=setup_for(shared))
    finally:
        subprocess.run([*ctl, "start", "garden-frontend"], check=True, capture_output=True)

    assert report.ok, report.problems
    states = {s.name: s for s in report.by_host[HOST].services}
    assert states["garden-backend"].active and states["garden-backend"].state == "RUNNING"
    assert states["garden-backend"].since is not None and states["garden-backend"].restarts is not None
    assert not states["garden-frontend"].active and states["garden-frontend"].state == "STOPPED"
    assert states["garden-frontend"].since is None


async def test_system_info_reports_os_memory_disks_ports_database_size_and_app_version(
    shared: SampleHosts,
) -> None:
    setup = setup_for(
        shared,
        garden_expected_ports=[5432, shared.backend_port, 1],
        garden_psql="psql -h 127.0.0.1 -U postgres",
        garden_db_name="postgres",
    )

    report = await hosts.system_info(setup=setup)

    assert report.ok, report.problems
    facts = report.by_host[HOST]
    assert facts.os and facts.kernel and facts.uptime_s > 0 and facts.cpu.count >= 1
    assert facts.memory.total_bytes > 0 and facts.disks
    assert facts.ports.listening == (5432, shared.backend_port)
    assert facts.ports.missing == (1,)
    assert facts.database_bytes is not None and facts.database_bytes > 0
    assert facts.app_version == "v1"


async def test_backup_files_returns_the_archive_whose_size_and_sha256_match_it(shared: SampleHosts) -> None:
    config_paths = [str(shared.supervisor_config), "/nonexistent/garden"]
    report = await hosts.backup_files(setup=setup_for(shared, garden_config_paths=config_paths))

    assert report.ok, report.problems
    archive = report.by_host[HOST]
    path = Path(archive.path)
    assert path.stat().st_size == archive.size_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == archive.sha256
    assert archive.missing == ("/nonexistent/garden",)
    with tarfile.open(path) as tar:
        names = tar.getnames()
    root = str(shared.garden_root).lstrip("/")
    assert f"{root}/app.py" in names and f"{root}/.git/HEAD" in names
    assert str(shared.supervisor_config).lstrip("/") in names
    assert not list(path.parent.glob("*.part"))


async def test_prune_files_deletes_only_the_archives_the_role_wrote_in_the_backup_dir(
    shared: SampleHosts, tmp_path: Path
) -> None:
    written = await hosts.backup_files(setup=setup_for(shared))
    assert written.ok, written.problems
    archive = Path(written.by_host[HOST].path)
    backup_dir = archive.parent
    outside = tmp_path / "garden-files-elsewhere.tar.gz"  # the right name in the wrong folder
    not_an_archive = backup_dir / "notes.txt"
    for decoy in (outside, not_an_archive):
        decoy.write_bytes(b"keep me")
    gone = backup_dir / "garden-files-localhost-19990101T000000Z.tar.gz"
    asked = [str(archive), str(outside), str(not_an_archive), str(gone)]

    report = await hosts.prune_files(setup=setup_for(shared), paths={HOST: asked, "web9": ["/etc/passwd"]})

    assert report.ok, report.problems
    pruned = report.by_host[HOST]
    assert pruned.removed == (str(archive),) and not archive.exists()
    assert pruned.absent == (str(gone),)
    assert pruned.refused == (str(outside),)  # notes.txt is not an archive's name: never sent
    assert outside.read_bytes() == not_an_archive.read_bytes() == b"keep me"
    assert report.run.audit()["playbook"] == "prune_files"


async def test_an_archive_path_a_host_reports_never_runs_as_a_template_on_the_bot(
    shared: SampleHosts, tmp_path: Path
) -> None:
    # A host that reports this as its archive (root on one app server) would otherwise have the
    # bot's Ansible run `id` on the bot's own machine when the archive is pruned.
    marker = tmp_path / "PWNED"
    hostile = f"{tmp_path}/garden-files-x{{{{ lookup('pipe', 'id > {marker}') }}}}.tar.gz"
    report = {"path": hostile, "size_bytes": 1, "sha256": "0" * 64, "included": [], "missing": []}

    with pytest.raises(ValidationError):
        hosts.FileArchive.model_validate(report)
    pruned = await hosts.prune_files(
        setup=setup_for(shared), paths={HOST: [hostile], "web1{{ 7*7 }}": [hostile]}
    )

    assert not marker.exists()
    assert all(
        hostile not in (*found.removed, *found.absent, *found.refused) for found in pruned.by_host.values()
    )


async def test_evidence_collects_states_the_error_log_end_and_service_logs_with_secrets_masked(
    shared: SampleHosts,
) -> None:
    with shared.error_log.open("a", encoding="utf-8") as log:
        for n in range(150):
            log.write(f"2026-11-28T10:00:{n % 60:02d}+09:00 INFO filler {n}\n")
        log.write("2026-11-28T10:01:00+09:00 ERROR db down: postgresql://garden:hunter2@db/garden_dx\n")

    report = await hosts.collect_evidence(setup=setup_for(shared))

    assert report.ok, report.problems
    evidence = report.by_host[HOST]
    assert {s.name for s in evidence.services} == {"garden-backend", "garden-frontend"}
    lines = evidence.error_log.lines
    assert len(lines) == 100
    assert lines[-1] == "2026-11-28T10:01:00+09:00 ERROR db down: postgresql://garden:***@db/garden_dx"
    assert "hunter2" not in json.dumps(report.by_host[HOST].model_dump(mode="json"))
    logs = {excerpt.name: excerpt for excerpt in evidence.logs}
    assert any("garden-backend v1 started" in line for line in logs["garden-backend"].lines)
    assert logs["garden-frontend"].source == "supervisor"


async def test_monthly_chores_count_upgradable_packages_and_read_disk_usage(shared: SampleHosts) -> None:
    report = await hosts.monthly_chores(setup=setup_for(shared))

    assert report.ok, report.problems
    chores = report.by_host[HOST]
    assert chores.upgradable is None or chores.upgradable >= 0
    assert chores.disks and all(0 <= d.percent <= 100 for d in chores.disks)


async def test_the_child_environment_carries_none_of_the_bots_secrets(
    shared: SampleHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "SLACK_BOT_TOKEN": "xoxb-not-for-ansible",
        "SLACK_SIGNING_SECRET": "signing-not-for-ansible",
        "DATABASE_URL": "postgresql://bot:dbpass-not-for-ansible@127.0.0.1/bot",
        "GARDEN_DATABASE_URL": "postgresql://garden:gpass-not-for-ansible@127.0.0.1/garden_dx",
        "GARDENBOT_AUDIT_KEY": "auditkey-not-for-ansible",
        "GARDENBOT_ALERT_TOKEN": "alert-not-for-ansible",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    playbook = tmp_path / "env.yml"
    playbook.write_text(
        """
- hosts: garden_app
  gather_facts: false
  tasks:
    - name: Read the environment
      ansible.builtin.command: env
      register: env_out
    - name: Result
      ansible.builtin.debug:
        var: garden_env_seen
      vars:
        garden_env_seen: {lines: "{{ env_out.stdout_lines }}"}
""",
        encoding="utf-8",
    )

    run = await run_playbook(playbook, setup=setup_for(shared))

    assert run.ok, run
    seen = "\n".join(run.hosts[0].data["lines"])
    assert "PATH=" in seen
    assert [name for name in secrets if name in seen] == []
    assert [v for v in secrets.values() if v in seen] == []


async def test_a_playbook_past_its_timeout_is_stopped_and_reported_as_timeout(
    shared: SampleHosts, tmp_path: Path
) -> None:
    marker = "317.25"  # a sleep nobody else runs
    playbook = tmp_path / "slow.yml"
    playbook.write_text(
        f"- hosts: garden_app\n  gather_facts: false\n  tasks:\n"
        f"    - {{name: Wait a long time, ansible.builtin.command: sleep {marker}}}\n",
        encoding="utf-8",
    )
    steps = Recorder()
    started = time.monotonic()

    run = await run_playbook(playbook, setup=setup_for(shared), progress=steps, timeout_s=8)

    assert run.status == "timeout" and not run.ok
    assert time.monotonic() - started < 60  # well short of the 317 s sleep
    assert ("Wait a long time", "started") in steps.pairs()
    still = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert still.stdout.strip() == ""


def test_the_playbooks_run_by_hand_with_ansible_playbook(shared: SampleHosts, tmp_path: Path) -> None:
    extra = tmp_path / "garden-vars.json"
    extra.write_text(json.dumps(shared.vars()), encoding="utf-8")
    playbooks = REPO_ROOT / "runbooks" / "playbooks"
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")

    out = subprocess.run(
        [ansible_playbook, "-i", str(shared.inventory), "service_status.yml", "-e", f"@{extra}"],
        cwd=playbooks,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert out.returncode == 0, out.stdout + out.stderr
    assert '"state": "RUNNING"' in out.stdout


def test_every_playbook_file_ships_as_package_data() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["runbooks"]
    base = REPO_ROOT / "runbooks"
    files = {p for p in (base / "playbooks").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    shipped = {p for pattern in patterns for p in base.glob(pattern)}
    assert files
    assert sorted(str(p.relative_to(base)) for p in files - shipped) == []


def test_failure_text_in_progress_events_and_host_outcomes_is_masked() -> None:
    seen: list[TaskEvent] = []
    collector = _Collector(seen.append)
    leak = "could not connect to postgresql://garden:s3cret-pw@db/garden_dx; token xoxb-123-abc"
    collector({"event": "runner_on_start", "event_data": {"host": "web1", "task": "Run migrations"}})
    collector(
        {
            "event": "runner_on_failed",
            "event_data": {"host": "web1", "task": "Run migrations", "res": {"msg": leak, "stdout": leak}},
        }
    )
    collector(
        {"event": "playbook_on_stats", "event_data": {"failures": {"web1": 1}, "processed": {"web1": 1}}}
    )

    outcome = collector.outcomes()[0]
    assert (outcome.status, outcome.failed_task) == ("failed", "Run migrations")
    assert [(e.task, e.status) for e in seen] == [("Run migrations", "started"), ("Run migrations", "failed")]
    for text in (seen[-1].message, outcome.message):
        assert "postgresql://garden:***@db/garden_dx" in text
        assert "s3cret-pw" not in text and "xoxb-123-abc" not in text


def test_the_chores_count_security_updates_apart_from_other_upgradable_packages(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt"
    apt.write_text(
        "#!/bin/sh\n"
        "echo 'Listing...'\n"
        "echo 'openssl/jammy-updates,jammy-security 3.0.2-1.18 amd64 [upgradable from: 3.0.2-1.17]'\n"
        "echo 'tzdata/jammy-updates 2025b-0ubuntu0.22.04 all [upgradable from: 2025a-0ubuntu0.22.04]'\n"
        "echo 'libssl3/jammy-security 3.0.2-0ubuntu1.18 amd64 [upgradable from: 3.0.2-0ubuntu1.17]'\n",
        encoding="utf-8",
    )
    apt.chmod(0o755)
    facts = REPO_ROOT / "runbooks" / "playbooks" / "roles" / "garden" / "files" / "facts.py"

    out = subprocess.run(
        [sys.executable, str(facts), "chores"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    found = json.loads(out.stdout)
    assert (found["upgradable"], found["security"]) == (3, 2)


NAME_IN_ONE_SECOND = "garden-files-web1-20261101T030000Z"


ARCHIVE_SCRIPT = REPO_ROOT / "runbooks" / "playbooks" / "roles" / "garden" / "files" / "archive.py"


def archive_as_the_role_does(source: Path, dest: Path) -> dict[str, Any]:
    """archive.py run as the backup_files task runs it on a host, named NAME_IN_ONE_SECOND."""
    out = subprocess.run(
        [sys.executable, str(ARCHIVE_SCRIPT), "--dest", str(dest), "--name", NAME_IN_ONE_SECOND, str(source)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_an_archive_named_like_an_earlier_one_never_replaces_it(tmp_path: Path) -> None:
    # Two `backup files` in the same second get the same stamp, so the same name.
    source, dest = tmp_path / "app", tmp_path / "files"
    source.mkdir()
    (source / "a.txt").write_text("first\n", encoding="utf-8")

    first = archive_as_the_role_does(source, dest)
    (source / "a.txt").write_text("second\n", encoding="utf-8")
    second = archive_as_the_role_does(source, dest)

    assert Path(first["path"]).name == "garden-files-web1-20261101T030000Z.tar.gz"
    assert Path(second["path"]).name == "garden-files-web1-20261101T030000Z-1.tar.gz"
    assert hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest() == first["sha256"]
    assert hashlib.sha256(Path(second["path"]).read_bytes()).hexdigest() == second["sha256"]
    assert not list(dest.glob("*.part"))


def test_without_hard_links_an_archive_still_never_replaces_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("garden_archive", ARCHIVE_SCRIPT)
    assert spec is not None and spec.loader is not None
    archive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archive)

    def no_link(src: object, dst: object, **_: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # vfat, some network mounts

    monkeypatch.setattr(archive.os, "link", no_link)
    published = []
    for body in (b"first", b"second"):
        partial = tmp_path / f"{NAME_IN_ONE_SECOND}.tar.gz.part"
        partial.write_bytes(body)
        published.append(archive.publish(partial, tmp_path, NAME_IN_ONE_SECOND))

    assert [p.name for p in published] == [f"{NAME_IN_ONE_SECOND}.tar.gz", f"{NAME_IN_ONE_SECOND}-1.tar.gz"]
    assert [p.read_bytes() for p in published] == [b"first", b"second"]


def test_a_part_left_by_a_killed_run_never_writes_through_to_the_archive_it_names(tmp_path: Path) -> None:
    # Killed between linking the part to its final name and unlinking it: the part is a second
    # name of a published archive, and a new run in the same second would write into it.
    source, dest = tmp_path / "app", tmp_path / "files"
    source.mkdir()
    dest.mkdir()
    (source / "a.txt").write_text("new\n", encoding="utf-8")
    published = dest / f"{NAME_IN_ONE_SECOND}.tar.gz"
    published.write_bytes(b"an archive in the catalog")
    os.link(published, dest / f"{NAME_IN_ONE_SECOND}.tar.gz.part")

    result = archive_as_the_role_does(source, dest)

    assert published.read_bytes() == b"an archive in the catalog"
    assert Path(result["path"]).name == f"{NAME_IN_ONE_SECOND}-1.tar.gz"
    assert not list(dest.glob("*.part"))
