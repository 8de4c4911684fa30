"""Dockerfile and docker-compose.yml: what can be checked without a Docker engine (there is none here).

The Dockerfile is read instruction by instruction (continuation lines joined); the compose file is
validated against the Compose Specification's JSON schema (vendored in tests/deploy/schemas/ with
its licence) and then checked for the things the deployment relies on.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.runtime import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
IMAGE_UID = "10001"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def read_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, each tagged with its stage's name (continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stage, out = "", []
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            parts = args.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
        out.append(Instruction(stage, keyword.upper(), args.strip()))
    return out


def dockerfile() -> list[Instruction]:
    return read_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == last]


def validate_compose(data: dict[str, Any]) -> None:
    # The schema names draft 2019-09 with a trailing '#', which jsonschema does not look up.
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft201909Validator(schema).validate(data)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# --- Dockerfile ------------------------------------------------------------------------------------


def test_the_dockerfile_reader_joins_continuations_and_names_stages() -> None:
    text = "ARG X=1\nFROM a AS one\nRUN a \\\n    # note\n    && b\nFROM one\nUSER 5\n"
    got = read_dockerfile(text)
    assert [(i.stage, i.keyword) for i in got] == [
        ("", "ARG"),
        ("one", "FROM"),
        ("one", "RUN"),
        ("one", "FROM"),
        ("one", "USER"),
    ]
    assert got[2].args == "a  && b"


def test_the_image_is_multi_stage_and_the_runtime_copies_the_built_virtualenv() -> None:
    instructions = dockerfile()
    stages = [i.args.split()[-1] for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 2
    runtime = final_stage(instructions)
    assert any(i.keyword == "COPY" and "--from=build" in i.args for i in runtime)
    # The build tools (pip install of the project) stay in the build stage.
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in runtime)


def test_the_image_is_slim_python_311() -> None:
    pairs = [i.args.split("=", 1) for i in dockerfile() if i.keyword == "ARG" and "=" in i.args]
    args = dict(pairs)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [i.args for i in dockerfile() if i.keyword == "FROM"]
    assert froms[-1].startswith("${PYTHON_IMAGE}")


def test_the_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = [i.args for i in final_stage(dockerfile()) if i.keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0", users[-1]  # numeric: Kubernetes' runAsNonRoot can check it
    assert uid == IMAGE_UID


def test_the_postgresql_client_major_version_is_a_build_argument() -> None:
    instructions = dockerfile()
    assert any(i.keyword == "ARG" and i.args.startswith("PG_MAJOR=") for i in instructions if i.stage == "")
    runtime = final_stage(instructions)
    assert any(i.keyword == "ARG" and i.args == "PG_MAJOR" for i in runtime)
    installs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert '"postgresql-client-${PG_MAJOR}"' in installs
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "GARDENBOT_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin" in env


def test_the_image_carries_ansible_and_ssh_for_the_hosts_playbooks() -> None:
    instructions = dockerfile()
    build = " ".join(i.args for i in instructions if i.keyword == "RUN" and i.stage == "build")
    assert "ansible-playbook --version" in build  # ansible-core came with the project's dependencies
    runtime = " ".join(i.args for i in final_stage(instructions) if i.keyword == "RUN")
    assert "openssh-client" in runtime
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"ansible-core' in pyproject and '"ansible-runner' in pyproject


def test_the_container_listens_beyond_loopback_and_health_checks_healthz() -> None:
    runtime = final_stage(dockerfile())
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "GARDENBOT_HOST=0.0.0.0" in env
    assert "PORT=3000" in env
    checks = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0] and "CMD" in checks[0]
    assert "EXPOSE" in {i.keyword for i in runtime}


def test_the_entry_point_is_gardenbot_serve() -> None:
    runtime = final_stage(dockerfile())
    entry = [json.loads(i.args) for i in runtime if i.keyword == "ENTRYPOINT"][-1]
    cmd = [json.loads(i.args) for i in runtime if i.keyword == "CMD"][-1]
    assert entry + cmd == ["gardenbot", "serve"]


def test_everything_the_dockerfile_copies_exists() -> None:
    for i in dockerfile():
        if i.keyword == "COPY" and "--from=" not in i.args:
            *sources, _dest = shlex.split(i.args)
            for source in sources:
                assert (REPO_ROOT / source).exists(), source


# --- docker-compose.yml ----------------------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    validate_compose(compose())


def test_the_compose_schema_rejects_a_misspelt_service_key() -> None:
    """The schema check can fail: `healtcheck` is not a service key."""
    broken = compose()
    broken["services"]["gardenbot"]["healtcheck"] = broken["services"]["gardenbot"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        validate_compose(broken)


def test_compose_runs_the_bot_with_its_postgresql_redis_and_a_sample_target() -> None:
    services = compose()["services"]
    assert services["gardenbot"]["build"]["context"] == "."
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["garden-api"]["image"].startswith("python:3.11")
    env = services["gardenbot"]["environment"]
    assert "@postgres:5432/gardenbot" in env["DATABASE_URL"]
    assert "@postgres:5432/garden_dx" in env["GARDEN_DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert env["GARDEN_API_URL"] == "http://garden-api:8000"
    # Start-up refuses without the audit key: compose says so before starting anything.
    assert env["GARDENBOT_AUDIT_KEY"].startswith("${GARDENBOT_AUDIT_KEY:?")


def test_the_bot_waits_for_healthy_stores_and_checks_its_own_healthz() -> None:
    bot = compose()["services"]["gardenbot"]
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(bot["healthcheck"]["test"])
    assert bot["ports"] == ["127.0.0.1:3000:3000"]  # published on loopback only, nginx in front
    assert bot.get("user") in (None, IMAGE_UID, f"{IMAGE_UID}:{IMAGE_UID}")  # never overridden to root
    assert bot["read_only"] is True and bot["cap_drop"] == ["ALL"]


def test_the_monitoring_profile_wires_prometheus_and_alertmanager_to_deploy() -> None:
    services = compose()["services"]
    for name, folder in (("prometheus", "deploy/prometheus"), ("alertmanager", "deploy/alertmanager")):
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        assert any(v.startswith(f"./{folder}:") for v in service["volumes"]), service["volumes"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert "monitoring" not in services["gardenbot"].get("profiles", [])


def test_the_network_aliases_are_the_host_names_the_monitoring_files_use() -> None:
    services = compose()["services"]
    networks = [s.get("networks", {}).get("default", {}) for s in services.values()]
    aliases = {alias for network in networks for alias in network.get("aliases", [])}
    prometheus = (REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8")
    alertmanager = (REPO_ROOT / "deploy/alertmanager/alertmanager.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"[a-z0-9-]+\.garden\.internal", prometheus + alertmanager))
    used.discard("mail.garden.internal")  # the SMTP relay is outside the stack
    assert used <= aliases, used - aliases
    token = services["alertmanager"]["secrets"][0]
    assert token["target"] in alertmanager  # the bearer token file the webhook reads


def test_every_file_compose_mounts_from_the_repository_exists() -> None:
    data = compose()
    for service in data["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), source
    assert (REPO_ROOT / "deploy/compose/initdb/10-garden.sh").stat().st_mode & 0o111
