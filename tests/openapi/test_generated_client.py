"""A client generated from the live document by openapi-python-client (pinned, in its own
environment: `make test-tools`) has one error model, not one per response, and calls
predict, batch, model, keys and usage of a real ``housing-api serve`` successfully."""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.openapi.conftest import REPO
from tests.support.app_server import app_env, run_cli, running_app
from tests.support.houses import V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.slow

TOOL_BIN = REPO / ".tools" / "openapi-client" / "bin"
PACKAGE = "housing_price_api_client"
# Every error answer parses into one of these: RFC 9457 problems, RFC 6749 errors on
# /token and /revoke, and /readyz's 503 readiness report.
ERROR_MODELS = {"Problem", "OAuthError", "Readiness"}


def generate(document: dict[str, Any], target: Path) -> Path:
    """openapi-python-client run as its users run it; the package directory."""
    generator = TOOL_BIN / "openapi-python-client"
    if not generator.exists():
        pytest.fail(f"{generator} is missing: run `make test-tools`", pytrace=False)
    target.mkdir()
    spec = target / "openapi.json"
    spec.write_text(json.dumps(document))
    result = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--meta", "none"],
        cwd=target,
        # Its post-generation hooks run the ruff of its own environment.
        env=os.environ | {"PATH": f"{TOOL_BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, output  # nothing of the document was skipped
    return target / PACKAGE


@contextlib.contextmanager
def imported(root: Path) -> Iterator[ModuleType]:
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def error_models(package: Path) -> set[str]:
    """The model each generated operation parses a 4xx/5xx answer into."""
    found = set()
    for module in (package / "api").rglob("*.py"):
        for status, model in re.findall(r"response_(\d{3}) = (\w+)\.from_dict", module.read_text()):
            if int(status) >= 400:
                found.add(model)
    return found


def test_a_generated_client_has_one_error_model_and_calls_the_api(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    root = tmp_path / "server"
    env = app_env({"VAR_DIR": str(root / "var"), "MODEL_DIR": str(trained_model_dir)})
    root.mkdir()
    scopes = "predict models:read keys:manage"
    created = run_cli(env, root, "keys", "create", "--owner", "sdk", "--scopes", scopes, "--json")
    key = json.loads(created.stdout)["api_key"]
    client = json.loads(
        run_cli(env, root, "clients", "create", "sdk-app", "--scopes", "predict", "--json").stdout
    )
    with running_app(root, env) as server:
        document = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
        package = generate(document, tmp_path / "generated")

        models = {path.stem for path in (package / "models").glob("*.py")} - {"__init__"}
        assert error_models(package) == ERROR_MODELS
        assert {m for m in models if "error" in m or "problem" in m} == {
            "problem",
            "field_error",
            "o_auth_error",
        }
        assert len(models) < 50, sorted(models)  # one per schema, none per response

        with imported(tmp_path / "generated") as sdk:
            call_everything(sdk, server.base_url, key, client)


def call_everything(
    sdk: ModuleType, base_url: str, api_key: str, oauth_client: dict[str, str]
) -> None:
    api = importlib.import_module(f"{PACKAGE}.api")
    predict = importlib.import_module(f"{PACKAGE}.api.predict")
    keys = importlib.import_module(f"{PACKAGE}.api.keys")
    models = importlib.import_module(f"{PACKAGE}.models")
    importlib.import_module(f"{PACKAGE}.api.models.get_model_v1")
    importlib.import_module(f"{PACKAGE}.api.oauth.issue_token")
    for name in ("predict_v1", "predict_v1_batch", "predict_v2"):
        importlib.import_module(f"{PACKAGE}.api.predict.{name}")
    for name in ("create_key", "list_keys", "rotate_key", "revoke_key", "get_usage"):
        importlib.import_module(f"{PACKAGE}.api.keys.{name}")

    # The token: HTTP Basic (client_secret_basic), the generated client's own header hook.
    basic = base64.b64encode(
        f"{oauth_client['client_id']}:{oauth_client['client_secret']}".encode()
    ).decode()
    with sdk.AuthenticatedClient(base_url=base_url, token=basic, prefix="Basic") as http:
        grant = api.oauth.issue_token.sync(
            client=http,
            body=models.IssueTokenBody(
                grant_type=models.IssueTokenBodyGrantType.CLIENT_CREDENTIALS
            ),
        )
    assert isinstance(grant, models.AccessToken), grant
    with sdk.AuthenticatedClient(base_url=base_url, token=grant.access_token) as bearer:
        single = predict.predict_v1.sync(client=bearer, body=models.HouseV1.from_dict(V1_HOUSE))
    assert isinstance(single, models.Prediction), single
    assert single.predicted_price > 0

    as_partner = {"token": api_key, "prefix": "", "auth_header_name": "X-API-Key"}
    with sdk.AuthenticatedClient(base_url=base_url, **as_partner) as partner:
        batch = predict.predict_v1_batch.sync(
            client=partner, body=models.BatchV1.from_dict({"instances": [V1_HOUSE, V1_HOUSE]})
        )
        assert isinstance(batch, models.BatchPrediction), batch
        assert batch.predictions == [single.predicted_price] * 2
        v2 = predict.predict_v2.sync(client=partner, body=models.HouseV2.from_dict(V2_HOUSE))
        assert isinstance(v2, models.Prediction), v2
        model = api.models.get_model_v1.sync(client=partner)
        assert isinstance(model, models.ModelInfo), model
        assert model.version == "v1"
        assert len(model.sha256) == 64

        created = keys.create_key.sync(client=partner, body=models.CreateKey(scopes="predict"))
        assert isinstance(created, models.NewKey), created
        listed = keys.list_keys.sync(client=partner)
        assert isinstance(listed, models.KeyList), listed
        assert created.key_id in {k.key_id for k in listed.keys}
        rotated = keys.rotate_key.sync(
            created.key_id, client=partner, body=models.RotateKey(grace_seconds=60)
        )
        assert isinstance(rotated, models.Rotated), rotated
        assert rotated.previous_key_id == created.key_id
        revoked = keys.revoke_key.sync_detailed(rotated.key_id, client=partner)
        assert revoked.status_code == 204
        usage = keys.get_usage.sync(client=partner)
        assert isinstance(usage, models.Usage), usage
        assert usage.principal.startswith("api_key:")

    # An error answer is the one Problem model.
    forged = as_partner | {"token": "hpa_aaaaaaaaaaaa_" + "B" * 43}
    with sdk.AuthenticatedClient(base_url=base_url, **forged) as forger:
        refused = predict.predict_v1.sync(client=forger, body=models.HouseV1.from_dict(V1_HOUSE))
    assert isinstance(refused, models.Problem), refused
    assert refused.status == 401
