"""One production-shaped stack for the end-to-end tests, started by deploy/stack.py.

On loopback, in a temp dir, on free ports: the session's redis-server
(tests/support/redis.py), two replicas of ``housing-api serve`` and
Nginx from Debian's package with the repo's config and a fresh development CA. It is
stopped (every process, by PID) when the last e2e test is done, failed or not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.processes import free_port
from deploy.stack import ServerFailed, Stack, StackConfig, start_stack
from tests.e2e.support import Credentials, Edge
from tests.support.app_server import app_env
from tests.support.redis import RedisServer

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "var" / "test-artifacts"
# A database of the session's Redis no other test fixture hands out first.
REDIS_DB = 15


def _create(stack: Stack, *args: str) -> dict[str, str]:
    """A credential made with ``housing-api ... --json`` against the stack's database."""
    result = stack.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    created: dict[str, str] = json.loads(result.stdout)
    return created


@pytest.fixture(scope="package")
def edge(redis_server: RedisServer, trained_model_dir: Path) -> Iterator[Edge]:
    with redis_server.client(REDIS_DB) as conn:
        conn.flushdb()
    root = Path(tempfile.mkdtemp(prefix="housing-e2e-"))
    config = StackConfig(
        root=root,
        https_port=free_port(),
        http_port=free_port(),
        replicas=2,
        # One uvicorn process per replica keeps the start (and the failover test's
        # restart) short; test_stack_command.py runs the default gunicorn shape.
        workers=1,
        model_dir=trained_model_dir,
        redis_url=redis_server.url(REDIS_DB),
        env=app_env({}),
    )
    try:
        stack = start_stack(config)
    except ServerFailed as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"the stack did not start: {exc}", pytrace=False)
    try:
        scopes = "predict models:read"
        commands = {
            "client": ["clients", "create", "e2e", "--scopes", scopes],
            "metrics": ["keys", "create", "--owner", "ops", "--scopes", "metrics"],
        }
        for plan in ("default", "free", "internal"):
            commands[plan] = ["keys", "create", "--owner", f"e2e-{plan}", "--scopes", scopes]
            commands[plan] += ["--plan", plan]
        # One at a time: each CLI run opens (and may migrate) the one SQLite database.
        made = {name: _create(stack, *argv) for name, argv in commands.items()}
        credentials = Credentials(
            client_id=made["client"]["client_id"],
            client_secret=made["client"]["client_secret"],
            api_key=made["default"]["api_key"],
            free_api_key=made["free"]["api_key"],
            internal_api_key=made["internal"]["api_key"],
            metrics_api_key=made["metrics"]["api_key"],
        )
        yield Edge(stack, credentials)
    finally:
        stack.stop()
        leftovers = [proc.name for proc in stack.processes.values() if proc.alive()]
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"still running after stop: {leftovers}"


@pytest.fixture(scope="package")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
