"""The production shape on one machine, without Docker: ``make stack`` / ``make stack-down``.

    python -m deploy.stack up   [--root var/stack] [--https-port 8443] [--http-port 8080]
    python -m deploy.stack down [--root var/stack]
    python -m deploy.stack cli  [--root var/stack] -- keys create --account me --scopes predict

(with .venv/bin/python; ``make stack`` and ``make stack-down`` call the first two).

``up`` starts, on loopback: redis-server, N replicas of ``housing-api serve`` (gunicorn
with uvicorn workers) sharing one SQLite database and Redis, and Nginx with the repo's
config (deploy/nginx/) and a fresh development CA, then prints how to call it. The
replicas run with ``APP_ENV=production`` and secrets made for this stack; their
addresses are free ports only Nginx needs to know.

State lives under the root (default ``var/stack/``): ``ca.pem``, one ``pids/NAME.pid``
per process, ``stack.json`` (ports, PIDs and start times), ``secrets.env`` (0600) and
``logs/``. Every process gets its own session; ``down`` stops exactly the recorded
processes (a PID is only signalled while its start time still matches, so a recycled
PID is never hit), SIGKILLing their process groups if anything lingers.

Nginx never needs root: its config, certificate, PID file, logs and temp paths live in
a runtime directory of its own, and when the caller is root it runs entirely as
``nobody`` (setpriv), not just its workers.

The end-to-end tests (tests/e2e/) drive the same code through ``start_stack``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.dev_ca import make_dev_certificates
from deploy.edge import prepare_nginx
from deploy.processes import (
    HOST,
    Proc,
    ServerFailed,
    find_binary,
    free_port,
    http_ok,
    redis_ping,
    spawn,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
# Settings the stack decides; anything else comes from the caller's environment.
STACK_SETTINGS = (
    "APP_ENV",
    "VAR_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "MODEL_DIR",
    "JWT_ALGORITHM",
    "JWT_SECRET_KEY",
    "API_KEY_PEPPER",
    "FORWARDED_ALLOW_IPS",
)


__all__ = ["ServerFailed", "Stack", "StackConfig", "start_stack"]


@dataclass
class StackConfig:
    root: Path
    https_port: int = 8443
    http_port: int = 8080
    replicas: int = 2
    workers: int = 2
    model_dir: Path = REPO / "models"
    # None: start a redis-server of the stack's own.
    redis_url: str | None = None
    # The replicas' base environment (default: this process's); STACK_SETTINGS win.
    env: Mapping[str, str] | None = None
    # App settings for the replicas, e.g. {"RATE_LIMIT_PREDICT": "30/minute"}.
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    root: Path
    https_port: int
    http_port: int
    redis_url: str
    replica_ports: list[int]
    workers: int
    nginx_runtime: Path
    processes: dict[str, Proc] = field(default_factory=dict)
    # Not saved: the environment the replicas and the CLI start from (None: os.environ).
    base_env: Mapping[str, str] | None = field(default=None, repr=False)

    # -- addresses

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca.pem"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def replica_names(self) -> list[str]:
        return [f"replica-{i}" for i in range(1, len(self.replica_ports) + 1)]

    def replica_url(self, index: int) -> str:
        return f"http://{HOST}:{self.replica_ports[index]}"

    @property
    def nginx_access_log(self) -> Path:
        return self.nginx_runtime / "access.log"

    @property
    def nginx_error_log(self) -> Path:
        return self.nginx_runtime / "error.log"

    # -- environment

    def app_env(self) -> dict[str, str]:
        """The environment of ``housing-api`` for this stack (replicas and CLI alike):
        the base environment less the settings the stack decides, then the stack's
        settings (``settings.json``) and secrets (``secrets.env``, 0600)."""
        base = dict(os.environ if self.base_env is None else self.base_env)
        for name in STACK_SETTINGS:
            base.pop(name, None)
        stored = json.loads((self.root / "settings.json").read_text())
        return {**base, **stored, **_read_env_file(self.root / "secrets.env")}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``housing-api ARGS`` against the stack's database and secrets."""
        env = {**self.app_env(), "VAR_DIR": str(self.root / "cli")}
        return subprocess.run(  # noqa: S603 - fixed executable, caller's arguments
            [_executable(), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # -- replicas

    def start_replica(self, index: int) -> Proc:
        name = self.replica_names[index]
        # Its own VAR_DIR (metrics files) and XDG_RUNTIME_DIR (gunicorn's control socket).
        env = {
            **self.app_env(),
            "VAR_DIR": str(self.root / name),
            "XDG_RUNTIME_DIR": str(self.root / name),
        }
        argv = [_executable(), "serve", "--host", HOST, "--port", str(self.replica_ports[index])]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        proc = spawn(
            name,
            argv,
            env=env,
            cwd=self.root / name,
            log=self.root / "logs" / f"{name}.log",
            pid_dir=self.root / "pids",
        )
        self.processes[name] = proc
        self.save()
        return proc

    def wait_replica(self, index: int) -> None:
        proc = self.processes[self.replica_names[index]]
        url = f"{self.replica_url(index)}/readyz"
        wait_for(proc, lambda: http_ok(url), url)

    def kill_replica(self, index: int) -> None:
        """SIGKILL a replica and its workers, as a crash would."""
        self.processes[self.replica_names[index]].kill_group()

    # -- state

    def save(self) -> None:
        state = {
            "https_port": self.https_port,
            "http_port": self.http_port,
            "redis_url": self.redis_url,
            "replica_ports": self.replica_ports,
            "workers": self.workers,
            "nginx_runtime": str(self.nginx_runtime),
            "processes": [proc.as_json() for proc in self.processes.values()],
        }
        tmp = self.root / "stack.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.root / "stack.json")

    @classmethod
    def load(cls, root: Path) -> Stack:
        state = json.loads((root / "stack.json").read_text())
        stack = cls(
            root=root,
            https_port=state["https_port"],
            http_port=state["http_port"],
            redis_url=state["redis_url"],
            replica_ports=list(state["replica_ports"]),
            workers=state["workers"],
            nginx_runtime=Path(state["nginx_runtime"]),
        )
        for data in state["processes"]:
            proc = Proc.from_json(data)
            stack.processes[proc.name] = proc
        return stack

    def running(self) -> list[Proc]:
        return [proc for proc in self.processes.values() if proc.alive()]

    def stop(self) -> None:
        """Stop exactly the processes this stack started: Nginx, replicas, then Redis."""
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        for name in self.processes:
            (self.root / "pids" / f"{name}.pid").unlink(missing_ok=True)
        if self.nginx_runtime.name.startswith("housing-nginx-"):
            shutil.rmtree(self.nginx_runtime, ignore_errors=True)


def _executable() -> str:
    return str(Path(sys.executable).with_name("housing-api"))


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _stack_settings(config: StackConfig, root: Path, redis_url: str) -> tuple[dict[str, str], str]:
    """(app settings without secrets, secrets.env text) for the replicas and the CLI."""
    settings = {
        **config.settings,
        "APP_ENV": "production",
        "DATABASE_URL": f"sqlite:///{root / 'housing.db'}",
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(config.model_dir.resolve()),
        "JWT_ALGORITHM": "HS256",
        # The replicas see Nginx (on loopback) as their peer, and trust only it.
        "FORWARDED_ALLOW_IPS": HOST,
    }
    secret_text = (
        "# Made by deploy/stack.py for this stack only.\n"
        f"JWT_SECRET_KEY={secrets.token_urlsafe(48)}\n"
        f"API_KEY_PEPPER={secrets.token_urlsafe(48)}\n"
    )
    return settings, secret_text


def start_stack(config: StackConfig) -> Stack:
    """Start everything and wait until Nginx answers over TLS; on failure stop what started."""
    root = config.root.resolve()
    if (root / "stack.json").exists():
        previous = Stack.load(root)
        if previous.running():
            raise ServerFailed(f"a stack is already running from {root}: stop it first")
        previous.stop()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)

    runtime = Path(tempfile.mkdtemp(prefix="housing-nginx-"))
    runtime.chmod(0o700)
    redis_port = free_port()
    redis_url = config.redis_url or f"redis://{HOST}:{redis_port}/0"
    stack = Stack(
        root=root,
        https_port=config.https_port,
        http_port=config.http_port,
        redis_url=redis_url,
        replica_ports=[free_port() for _ in range(config.replicas)],
        workers=config.workers,
        nginx_runtime=runtime,
        base_env=config.env,
    )
    with contextlib.suppress(FileNotFoundError):
        (root / "nginx").unlink()
    (root / "nginx").symlink_to(runtime)
    try:
        _start(stack, config, redis_port)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start(stack: Stack, config: StackConfig, redis_port: int) -> None:
    root = stack.root
    settings, secret_text = _stack_settings(config, root, stack.redis_url)
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    _write_private(root / "secrets.env", secret_text)
    certificates = make_dev_certificates(root / "tls")
    shutil.copyfile(certificates.ca_certificate, root / "ca.pem")
    stack.save()

    if config.redis_url is None:
        redis_dir = root / "redis"
        redis_dir.mkdir()
        argv = [find_binary("redis-server", "/usr/bin/redis-server"), "--port", str(redis_port)]
        argv += ["--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(redis_dir)]
        argv += ["--daemonize", "no"]
        proc = spawn(
            "redis",
            argv,
            env=os.environ,
            cwd=redis_dir,
            log=root / "logs" / "redis.log",
            pid_dir=root / "pids",
        )
        stack.processes["redis"] = proc
        stack.save()
        wait_for(proc, lambda: redis_ping(redis_port), "PING")

    # The schema is created before the replicas race to create it.
    created = stack.cli("clients", "list")
    if created.returncode != 0:
        raise ServerFailed(f"housing-api failed against the stack's settings:\n{created.stderr}")

    for index in range(config.replicas):
        (root / stack.replica_names[index]).mkdir()
        stack.start_replica(index)
    for index in range(config.replicas):
        stack.wait_replica(index)

    argv = prepare_nginx(
        stack.nginx_runtime,
        http_port=stack.http_port,
        https_port=stack.https_port,
        upstreams=[f"{HOST}:{port}" for port in stack.replica_ports],
        certificates_dir=root / "tls",
    )
    nginx = spawn(
        "nginx",
        argv,
        env=os.environ,
        cwd=stack.nginx_runtime,
        log=root / "logs" / "nginx.log",
        pid_dir=root / "pids",
    )
    stack.processes["nginx"] = nginx
    stack.save()
    context = ssl.create_default_context(cafile=str(stack.ca_certificate))
    url = f"https://{HOST}:{stack.https_port}/healthz"
    wait_for(nginx, lambda: http_ok(url, context), url)


# --- the command line ---------------------------------------------------------------------


def _instructions(stack: Stack, client: Mapping[str, str], key: Mapping[str, str]) -> str:
    root = os.path.relpath(stack.root)
    ca = os.path.relpath(stack.ca_certificate)
    base = stack.https_url
    body = '{"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}'
    return f"""
The stack is up: Nginx (TLS) -> {len(stack.replica_ports)} replicas \
(housing-api serve --workers {stack.workers}) -> Redis; state in {root}/.

  HTTPS   {base}   (development CA: {ca}; trust it, or pass --cacert)
  HTTP    {stack.http_url}   answers 308 to HTTPS
  Docs    {base}/docs   (import {ca} into the browser, or accept the warning)

A client and an API key, both with scopes 'predict models:read' (shown once, stored hashed):
  client_id      {client["client_id"]}
  client_secret  {client["client_secret"]}
  api_key        {key["api_key"]}

  TOKEN=$(curl -s --cacert {ca} -u '{client["client_id"]}:{client["client_secret"]}' \\
      -d grant_type=client_credentials {base}/token \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s --cacert {ca} -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
      -d '{body}' {base}/v1/predict
  curl -s --cacert {ca} -H 'X-API-Key: {key["api_key"]}' -H 'Content-Type: application/json' \\
      -d '{body}' {base}/v1/predict

More credentials:  .venv/bin/python -m deploy.stack cli -- keys create --account me --scopes predict
Logs:              {root}/logs/ (replicas, redis) and {root}/nginx/ (access.log, error.log)
Stop:              make stack-down
"""


def _up(args: argparse.Namespace) -> int:
    config = StackConfig(
        root=args.root,
        https_port=args.https_port,
        http_port=args.http_port,
        replicas=args.replicas,
        workers=args.workers,
        model_dir=args.model_dir,
    )
    try:
        stack = start_stack(config)
    except ServerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    scopes = "predict models:read"
    client = stack.cli("clients", "create", "demo", "--scopes", scopes, "--json")
    key = stack.cli("keys", "create", "--account", "demo", "--scopes", scopes, "--json")
    if client.returncode != 0 or key.returncode != 0:
        stack.stop()
        print(
            f"error: could not create demo credentials:\n{client.stderr}{key.stderr}",
            file=sys.stderr,
        )
        return 1
    print(_instructions(stack, json.loads(client.stdout), json.loads(key.stdout)))
    return 0


def _down(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    if not (root / "stack.json").exists():
        print(f"no stack state in {root}: nothing to stop")
        return 0
    stack = Stack.load(root)
    running = stack.running()
    stack.stop()
    names = ", ".join(f"{p.name} ({p.pid})" for p in running) or "nothing was running"
    print(f"stopped: {names}")
    return 0


def _cli(args: argparse.Namespace) -> int:
    stack = Stack.load(args.root.resolve())
    result = stack.cli(*args.args)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.stack", description="The local production shape."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "cli"):
        sub = commands.add_parser(name)
        sub.add_argument("--root", type=Path, default=Path("var/stack"))
        if name == "up":
            sub.add_argument(
                "--https-port", type=int, default=int(os.environ.get("HTTPS_PORT", "8443"))
            )
            sub.add_argument(
                "--http-port", type=int, default=int(os.environ.get("HTTP_PORT", "8080"))
            )
            sub.add_argument("--replicas", type=int, default=2)
            sub.add_argument("--workers", type=int, default=2)
            sub.add_argument("--model-dir", type=Path, default=Path("models"))
        if name == "cli":
            sub.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "cli" and args.args[:1] == ["--"]:
        args.args = args.args[1:]
    handlers = {"up": _up, "down": _down, "cli": _cli}
    code: int = handlers[args.command](args)
    return code


if __name__ == "__main__":
    sys.exit(main())
