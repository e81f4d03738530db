"""deploy/k8s/*.yaml: valid for Kubernetes (kubernetes-validate, strict) and shaped for
zero-downtime rollouts on a hardened, non-root, read-only pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append(
                    (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
                )
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in documents() if document["kind"] == kind]


@pytest.mark.parametrize(("name", "document"), documents(), ids=[name for name, _ in documents()])
def test_every_manifest_is_valid_for_kubernetes(name: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_expected_objects_are_there() -> None:
    kinds = {document["kind"] for _, document in documents()}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
    } <= kinds
    external = {
        s["metadata"]["name"] for s in by_kind("Service") if s["spec"]["type"] == "ExternalName"
    }
    assert external == {"housing-redis", "housing-postgres"}


def test_the_deployment_rolls_out_without_unavailable_pods() -> None:
    [deployment] = by_kind("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # gunicorn's graceful timeout (20 s) fits in the grace period.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 20


def test_the_pod_is_non_root_and_read_only() -> None:
    [deployment] = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The only writable place: an emptyDir for gunicorn's and the metrics' files.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # noqa: S108
    assert container["resources"]["limits"]
    assert container["resources"]["requests"]


def test_config_and_secrets_are_references() -> None:
    [deployment] = by_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    sources = {
        next(iter(source)): next(iter(source.values()))["name"] for source in container["envFrom"]
    }
    [config] = by_kind("ConfigMap")
    assert sources == {
        "configMapRef": config["metadata"]["name"],
        "secretRef": "housing-api-secrets",
    }
    assert not by_kind("Secret")  # no secret value lives in the repository
    for name in ("JWT_SECRET_KEY", "API_KEY_PEPPER", "DATABASE_URL", "REDIS_URL"):
        assert name not in config["data"]


def test_scaling_and_disruption_target_the_deployment() -> None:
    [deployment] = by_kind("Deployment")
    labels = deployment["spec"]["selector"]["matchLabels"]
    [hpa] = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    [pdb] = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    [policy] = by_kind("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    services = [s for s in by_kind("Service") if s["spec"]["type"] == "ClusterIP"]
    assert [s["spec"]["selector"] for s in services] == [labels]
