"""The Nginx edge for the local stack: render deploy/nginx/nginx.conf (a template) and
prepare a runtime directory Nginx can run from without root.

Placeholders are ``${NAME}`` with an upper-case name, the syntax the nginx image's
envsubst step understands too (docker-compose.yml renders the same template that way).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.processes import HOST, ServerFailed, find_binary

NGINX_DIR = Path(__file__).resolve().parent / "nginx"
NGINX_INCLUDES = ("tls.conf", "proxy.conf", "security_headers.conf")
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# Who Nginx runs as when the stack is started by root.
UNPRIVILEGED = ("nobody", "nogroup")


def placeholders(template: str) -> set[str]:
    """The ``${NAME}`` placeholders of a template."""
    return set(PLACEHOLDER.findall(template))


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every ``${NAME}``; a missing value is an error, never an empty string."""
    missing = placeholders(template) - values.keys()
    if missing:
        raise ServerFailed(f"no value for {', '.join(sorted(missing))}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def upstream_servers(addresses: Sequence[str]) -> str:
    """One ``server`` line per replica: one refused connection takes it out for 5 s."""
    return "\n        ".join(f"server {a} max_fails=1 fail_timeout=5s;" for a in addresses)


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) to run Nginx as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam(UNPRIVILEGED[0])
    try:
        gid = grp.getgrnam(UNPRIVILEGED[1]).gr_gid
    except KeyError:
        gid = user.pw_gid
    return user.pw_uid, gid


def prepare_nginx(
    runtime: Path,
    *,
    http_port: int,
    https_port: int,
    upstreams: Sequence[str],
    certificates_dir: Path,
) -> list[str]:
    """Render the config, with copies of the includes and the certificate, into
    ``runtime`` (owned by ``nobody`` when we are root), check it with ``nginx -t``,
    and return the argv that runs Nginx in the foreground."""
    for sub in ("tls", "acme", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (runtime / sub).mkdir(parents=True, exist_ok=True)
    for include in NGINX_INCLUDES:
        shutil.copyfile(NGINX_DIR / include, runtime / include)
    shutil.copyfile(certificates_dir / "server.pem", runtime / "tls" / "server.pem")
    shutil.copyfile(certificates_dir / "server.key", runtime / "tls" / "server.key")
    (runtime / "tls" / "server.key").chmod(0o600)
    values = {
        "NGINX_CONF_DIR": str(runtime),
        "NGINX_RUNTIME_DIR": str(runtime),
        "NGINX_ERROR_LOG": str(runtime / "error.log"),
        "NGINX_ACCESS_LOG": str(runtime / "access.log"),
        "HTTP_LISTEN": f"{HOST}:{http_port}",
        "HTTPS_LISTEN": f"{HOST}:{https_port}",
        "HTTPS_PORT_SUFFIX": "" if https_port == 443 else f":{https_port}",
        "SERVER_NAME": "localhost 127.0.0.1",
        "TLS_CERTIFICATE": str(runtime / "tls" / "server.pem"),
        "TLS_CERTIFICATE_KEY": str(runtime / "tls" / "server.key"),
        "ACME_ROOT": str(runtime / "acme"),
        "UPSTREAM_SERVERS": upstream_servers(upstreams),
    }
    conf = runtime / "nginx.conf"
    conf.write_text(render((NGINX_DIR / "nginx.conf").read_text(), values))
    for name in ("access.log", "error.log"):
        (runtime / name).touch()

    argv = [find_binary("nginx", "/usr/sbin/nginx"), "-p", str(runtime), "-c", str(conf)]
    argv += ["-e", str(runtime / "error.log")]
    ids = unprivileged_ids()
    if ids is not None:
        uid, gid = ids
        for path in [runtime, *runtime.rglob("*")]:
            os.chown(path, uid, gid)
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)  # noqa: S603
    if check.returncode != 0:
        raise ServerFailed(f"nginx rejected the rendered config {conf}:\n{check.stderr}")
    return argv
