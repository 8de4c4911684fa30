"""deploy/kubernetes/: every manifest is valid against the Kubernetes schemas (offline, from the
`kubernetes-validate` package, strict: unknown fields are errors), and the pieces fit together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.config import load_settings
from tests.support.runtime import REPO_ROOT

MANIFESTS = sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes the manifests are meant for, and the newest schema the package ships.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def resources() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in MANIFESTS:
        found.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return found


def one(kind: str) -> dict[str, Any]:
    matches = [r for r in resources() if r["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} {kind}s"
    return matches[0]


def bot_container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    container: dict[str, Any] = next(c for c in containers if c["name"] == "gardenbot")
    return container


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_probe_field() -> None:
    """The validation can fail: `pth` instead of `path` in a probe is an error in strict mode."""
    deployment = one("Deployment")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["pth"] = probe.pop("path")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_the_manifests_hold_a_deployment_service_pdb_and_the_secret() -> None:
    kinds = sorted(r["kind"] for r in resources())
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "Secret"):
        assert kind in kinds


def test_two_replicas_with_readiness_on_readyz_and_liveness_on_healthz() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = bot_container()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_names[container[probe]["httpGet"]["port"]] == 3000
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GARDENBOT_HOST"] == "0.0.0.0" and env["PORT"] == "3000"


def test_secrets_come_from_the_secret_and_hold_what_the_bot_needs() -> None:
    container = bot_container()
    secret = one("Secret")
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    keys = set(secret["stringData"])
    needed = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "GARDENBOT_AUDIT_KEY", "DATABASE_URL", "REDIS_URL"}
    assert needed <= keys
    # No secret value is written into the Deployment itself.
    plain = " ".join(str(e.get("value", "")) for e in container["env"])
    assert "xox" not in plain and "postgresql://" not in plain


def test_the_service_and_the_pdb_select_the_deployments_pods() -> None:
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1  # a drain keeps one replica serving


def test_the_pod_runs_as_the_images_non_root_user_on_a_read_only_root() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # USER 10001 in the Dockerfile
    container = bot_container()["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_the_backup_volume_is_shared_by_both_replicas() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    pvc = one("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] in claims
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_configmaps_configuration_is_accepted_by_the_settings_model(tmp_path: Path) -> None:
    config = tmp_path / "gardenbot.yml"
    config.write_text(one("ConfigMap")["data"]["gardenbot.yml"], encoding="utf-8")
    settings = load_settings(env={"GARDENBOT_AUDIT_KEY": "k" * 32}, config_path=config)
    assert settings.approvers
