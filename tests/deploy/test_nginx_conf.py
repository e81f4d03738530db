"""deploy/nginx/: the template renders and loads on Debian's nginx (`nginx -t`), and its
numbers agree with the app's settings and Mozilla's intermediate profile. The running
edge is tested end to end in tests/e2e/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.serving import DRAIN_SECONDS
from app.settings import Settings
from deploy.dev_ca import make_dev_certificates
from deploy.edge import NGINX_INCLUDES, placeholders, render, upstream_servers
from deploy.processes import ServerFailed

REPO = Path(__file__).resolve().parents[2]
NGINX = REPO / "deploy" / "nginx"
TEMPLATE = (NGINX / "nginx.conf").read_text()
ALL_CONF = "\n".join((NGINX / name).read_text() for name in ("nginx.conf", *NGINX_INCLUDES))


def directive(name: str, text: str = ALL_CONF) -> list[str]:
    """Every value of an (uncommented) directive."""
    return re.findall(rf"^\s*{re.escape(name)}\s+([^;]+);", text, re.MULTILINE)


def test_the_template_renders_and_nginx_accepts_it(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx not installed: run `make system-deps`"
    certificates = make_dev_certificates(tmp_path / "tls")
    for include in NGINX_INCLUDES:
        shutil.copyfile(NGINX / include, tmp_path / include)
    values = {
        "NGINX_CONF_DIR": str(tmp_path),
        "NGINX_RUNTIME_DIR": str(tmp_path),
        "NGINX_ERROR_LOG": str(tmp_path / "error.log"),
        "NGINX_ACCESS_LOG": str(tmp_path / "access.log"),
        "HTTP_LISTEN": "127.0.0.1:8080",
        "HTTPS_LISTEN": "127.0.0.1:8443",
        "HTTPS_PORT_SUFFIX": ":8443",
        "SERVER_NAME": "localhost",
        "TLS_CERTIFICATE": str(certificates.server_certificate),
        "TLS_CERTIFICATE_KEY": str(certificates.server_key),
        "ACME_ROOT": str(tmp_path / "acme"),
        "UPSTREAM_SERVERS": upstream_servers(["127.0.0.1:9001", "127.0.0.1:9002"]),
    }
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(TEMPLATE, values))
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr
    assert "[warn]" not in check.stderr


def test_every_placeholder_is_documented_and_required() -> None:
    used = placeholders(TEMPLATE)
    header = TEMPLATE.split("\ndaemon off;", 1)[0]
    documented = set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)\s{2,}", header, re.MULTILINE))
    assert used == documented
    with pytest.raises(ServerFailed, match="no value for"):
        render(TEMPLATE, {})


def test_limits_and_timeouts_agree_with_the_apps() -> None:
    fields = Settings.model_fields
    assert directive("client_max_body_size") == ["1m"]
    assert fields["max_body_bytes"].default == 1024 * 1024
    body_timeout = fields["body_read_timeout_seconds"].default
    assert directive("client_body_timeout") == [f"{body_timeout:g}s"]
    # Nginx waits for an answer as long as gunicorn lets a worker run (serve --timeout).
    cli = (REPO / "cli" / "main.py").read_text()
    worker_timeout = re.search(r'"--timeout",\s*"(\d+)"', cli)
    assert worker_timeout is not None
    assert directive("proxy_read_timeout") == [f"{worker_timeout[1]}s"]
    # Idle upstream connections close before the app server's keep-alive (gunicorn: 2 s).
    [keepalive] = directive("keepalive_timeout", TEMPLATE.split("upstream housing_api", 1)[1])
    assert int(keepalive.rstrip("s")) < 2
    # ...and before a draining app closes an idle one after SIGTERM (app.serving), so a
    # request Nginx sends on it is always answered, never reset.
    assert int(keepalive.rstrip("s")) < DRAIN_SECONDS


def test_tls_is_mozilla_intermediate_without_dhe() -> None:
    import sslyze.mozilla_tls_profile.tls_config_checker as checker

    profile_path = Path(checker.__file__).with_name("5.7.json")
    profile = json.loads(profile_path.read_text())["configurations"]["intermediate"]
    assert directive("ssl_protocols") == [" ".join(profile["tls_versions"])]
    [ciphers] = directive("ssl_ciphers")
    expected = [c for c in profile["ciphers"]["openssl"] if not c.startswith("DHE-")]
    assert ciphers.split(":") == expected
    [curves] = directive("ssl_ecdh_curve")
    assert set(curves.split(":")) <= set(profile["tls_curves"])
    assert directive("ssl_prefer_server_ciphers") == ["off"]
    assert directive("ssl_session_tickets") == ["off"]
    assert not directive("ssl_dhparam")
    hsts = f'"max-age={profile["hsts_min_age"]}; includeSubDomains"'
    sent = [line.strip() for line in ALL_CONF.splitlines() if "add_header Strict-Tr" in line]
    assert sent == [f"add_header Strict-Transport-Security {hsts} always;"]


def test_the_edge_sets_the_forwarding_headers_itself() -> None:
    proxy = (NGINX / "proxy.conf").read_text()
    assert directive("proxy_set_header X-Forwarded-For", proxy) == ["$remote_addr"]
    assert directive("proxy_set_header X-Forwarded-Proto", proxy) == ["$scheme"]
    assert directive("proxy_set_header X-Request-ID", proxy) == ["$request_id"]
    assert "$proxy_add_x_forwarded_for" not in ALL_CONF
    assert directive("server_tokens") == ["off"]
    assert re.search(r"location \^~ /metrics \{\s*return 404;", TEMPLATE)
    assert re.search(r"listen \$\{HTTPS_LISTEN\} ssl http2", TEMPLATE)  # nginx 1.22 and later
