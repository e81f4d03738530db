"""deploy/k8s/*.yaml: valid for Kubernetes (kubernetes-validate, strict) and shaped for
zero-downtime rollouts on a hardened, non-root, read-only pod."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NODE_TOOLS = REPO / "tools" / "node"
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
    [policy] = [p for p in by_kind("NetworkPolicy") if p["metadata"]["name"] == "housing-api"]
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    services = [s for s in by_kind("Service") if s["spec"]["type"] == "ClusterIP"]
    assert [s["spec"]["selector"] for s in services] == [labels]


# --- the migration Job -------------------------------------------------------------------


def test_the_migration_job_runs_migrate_with_the_apps_config_and_secret() -> None:
    [deployment] = by_kind("Deployment")
    [job] = by_kind("Job")
    [app] = deployment["spec"]["template"]["spec"]["containers"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == app["image"]
    assert container["envFrom"] == app["envFrom"]  # the same ConfigMap and Secret
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == deployment["spec"]["template"]["spec"]["securityContext"]
    assert container["securityContext"] == app["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    # Its pods are not the Deployment's: no Service, PDB or autoscaler counts them.
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert job_labels["app.kubernetes.io/name"] != deployment["metadata"]["name"]
    [policy] = [
        p for p in by_kind("NetworkPolicy") if p["spec"]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": job_labels["app.kubernetes.io/name"]
        }
    ]  # fmt: skip
    assert policy["spec"]["ingress"] == []
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports == {53, 5432}


# --- the PodMonitor (Prometheus Operator) ------------------------------------------------


def test_the_pod_monitor_is_valid_for_the_prometheus_operator() -> None:
    """Validated against the operator's CRD schema (tools/node: `make test-tools`)."""
    node_modules = NODE_TOOLS / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if not node_modules.exists():
        pytest.fail(f"{node_modules} is missing: run `make test-tools`", pytrace=False)
    monitors = [
        document
        for path in sorted((K8S / "monitoring").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    assert [m["kind"] for m in monitors] == ["PodMonitor"]
    result = subprocess.run(
        ["node", str(NODE_TOOLS / "validate-crd.mjs")],
        input="\n".join(json.dumps(m) for m in monitors),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "PodMonitor/housing-api"]


def test_the_pod_monitor_scrapes_the_deployments_pods_with_scope_metrics() -> None:
    [monitor] = yaml.safe_load_all((K8S / "monitoring" / "podmonitor.yaml").read_text())
    [deployment] = by_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert monitor["spec"]["selector"] == deployment["spec"]["selector"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["oauth2"]["scopes"] == ["metrics"]
    assert endpoint["oauth2"]["tokenUrl"].endswith("/token")
    # The app's NetworkPolicy lets Prometheus' namespace in on the pods' port.
    [policy] = [p for p in by_kind("NetworkPolicy") if p["metadata"]["name"] == "housing-api"]
    [rule] = policy["spec"]["ingress"]
    namespaces = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in rule["from"]
    }
    assert "monitoring" in namespaces
    assert {p["port"] for p in rule["ports"]} == {container["ports"][0]["containerPort"]}


def test_the_prometheus_scrape_config() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["oauth2"]["scopes"] == ["metrics"]
    assert job["oauth2"]["token_url"].endswith("/token")
    assert "client_secret_file" in job["oauth2"]  # never the secret itself
    assert job["static_configs"][0]["targets"]
