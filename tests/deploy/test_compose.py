"""docker-compose.yml, checked without a Docker engine: its structure and the security
properties the stack promises (only Nginx published, hardened services, healthchecks
and start order, secrets never written into the file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.edge import placeholders

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"nginx", "api", "migrate", "redis", "postgres"}
LONG_RUNNING = SERVICES - {"migrate"}
SECRET_SETTINGS = ("JWT_SECRET_KEY", "API_KEY_PEPPER", "POSTGRES_PASSWORD", "REDIS_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_the_services_and_their_images(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES
    for name, service in services.items():
        image = service["image"]
        if name in {"api", "migrate"}:
            assert image.startswith("housing-api:"), name
            continue
        # Third-party images carry an exact version, never a floating tag.
        tag = image.rsplit(":", 1)[1]
        assert re.fullmatch(r"\d+(\.\d+)+(-[a-z0-9.]+)?", tag), image
    assert services["api"]["build"] == "."
    # The one-shot migration: the same image, buildable on its own, running `migrate`.
    assert services["migrate"]["build"] == "."
    assert services["migrate"]["image"] == services["api"]["image"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["environment"] == services["api"]["environment"]
    assert services["api"]["deploy"]["replicas"] >= 2


def test_only_nginx_publishes_ports(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(services["nginx"]["ports"]) == ["443:8443", "80:8080"]
    for name, service in services.items():
        if name != "nginx":
            assert "ports" not in service, name
            assert "network_mode" not in service, name


def test_every_service_is_hardened(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "cap_add" not in service, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service.get("privileged", False) is False, name
        # Non-root: an explicit numeric user, or the unprivileged nginx image (uid 101).
        user = service.get("user")
        if name == "nginx":
            assert "nginx-unprivileged" in service["image"]
        else:
            assert user is not None, name
            assert user.split(":")[0] not in {"0", "root"}, name
        # A read-only root still needs somewhere to write.
        assert service.get("tmpfs"), name


def test_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert {"interval", "timeout", "retries"} <= check.keys(), name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])

    depends = {name: service.get("depends_on", {}) for name, service in services.items()}
    assert depends["nginx"] == {"api": {"condition": "service_healthy"}}
    assert depends["api"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert depends["migrate"] == {"postgres": {"condition": "service_healthy"}}
    # Graceful: longer than gunicorn's --graceful-timeout (20 s).
    assert services["api"]["stop_grace_period"] == "30s"


def test_networks_keep_the_backend_private(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    backend = compose["networks"]["backend"]
    assert backend["internal"] is True
    for name in SERVICES - {"nginx"}:
        assert services[name]["networks"] == ["backend"], name
    nginx_networks = services["nginx"]["networks"]
    assert set(nginx_networks) == {"edge", "backend"}
    # The app trusts X-Forwarded-* from Nginx's fixed address alone.
    nginx_ip = nginx_networks["backend"]["ipv4_address"]
    for name in ("api", "migrate"):
        assert services[name]["environment"]["FORWARDED_ALLOW_IPS"] == nginx_ip


def test_secrets_come_from_env_or_docker_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for setting in SECRET_SETTINGS:
        # Interpolated from .env, and compose refuses to start when it is unset.
        assert f"${{{setting}:?" in text, setting
    environment = services["api"]["environment"]
    assert environment["APP_ENV"] == "production"
    for name in ("JWT_SECRET_KEY", "API_KEY_PEPPER"):
        assert environment[name].startswith("${"), name
    assert set(compose["secrets"]) == {"tls_certificate", "tls_certificate_key"}
    nginx_env = services["nginx"]["environment"]
    assert nginx_env["TLS_CERTIFICATE"] == "/run/secrets/tls_certificate"
    assert nginx_env["TLS_CERTIFICATE_KEY"] == "/run/secrets/tls_certificate_key"


def test_nginx_renders_the_repo_template_with_every_placeholder_set(
    services: dict[str, dict[str, Any]],
) -> None:
    nginx = services["nginx"]
    template = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()
    assert placeholders(template) == set(nginx["environment"]) - {"NGINX_ENVSUBST_OUTPUT_DIR"}
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in nginx["volumes"]}
    assert mounts["/etc/nginx/templates/nginx.conf.template"] == "./deploy/nginx/nginx.conf"
    conf_dir = nginx["environment"]["NGINX_CONF_DIR"]
    for include in ("tls.conf", "proxy.conf", "security_headers.conf"):
        assert mounts[f"{conf_dir}/{include}"] == f"./deploy/nginx/{include}"
        assert (REPO / "deploy" / "nginx" / include).is_file()
    output = nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"]
    assert nginx["command"][:3] == ["nginx", "-c", f"{output}/nginx.conf"]
    assert "max_fails=" in nginx["environment"]["UPSTREAM_SERVERS"]
