"""Accounts from the attacker's side, over real HTTP: ``housing-api serve --workers 2``
(gunicorn with uvicorn workers) on a real Redis, credentials made with the real CLI.

Five accounts share one deployment, each for one story:

* ``acme`` (plan ``metered``, 10 a minute): two keys, a capped key, a client; a key it
  mints and a key it rotates. One budget for all of them, on both workers.
* ``bravo``: the neighbour whose budget ``acme`` never touches.
* ``charlie``: disabled mid-run; every credential of it stops on every worker.
* ``delta``: a client whose id a third party hammers ``/token`` with, from several
  addresses, while the client keeps getting tokens.
* ``echo``: a short-lived ``keys:manage`` key that tries to mint its way out.

``X-Forwarded-For`` stands for the callers' addresses: the test talks to the workers
from 127.0.0.1, which is ``FORWARDED_ALLOW_IPS`` (the Nginx host) here.
"""

from __future__ import annotations

import codecs
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_server import AppServer, app_env, run_cli, running_app
from tests.support.houses import V1_HOUSE
from tests.support.redis import RedisServer

pytestmark = pytest.mark.slow

REDIS_DB = 14
METERED = 10
TINY = 2
MAX_KEYS = 5
LIFETIME_DAYS = 30
TOKEN_FAILURES = 4  # RATE_LIMIT_TOKEN; half of it per (address, client)
REVOCATION_DEADLINE_SECONDS = 5.0


@dataclass
class Deployment:
    root: Path
    env: dict[str, str]
    server: AppServer
    keys: dict[str, str] = field(default_factory=dict)  # name -> api key
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (id, secret)
    pids: Counter[int] = field(default_factory=Counter)  # which workers answered

    def cli(self, *args: str) -> dict[str, Any]:
        result = run_cli(self.env, self.root, *args, "--json")
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a new connection; counts the worker that answered it."""
        answer, pid = self.server.request_from_worker(method, path, **kwargs)
        self.pids[pid] += 1
        return answer

    def predict(self, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.request("POST", "/v1/predict", json=V1_HOUSE, headers=headers, **kwargs)

    def token(self, client: tuple[str, str], address: str = "203.0.113.10") -> httpx.Response:
        return self.request(
            "POST",
            "/token",
            data={"grant_type": "client_credentials"},
            auth=client,
            headers={"X-Forwarded-For": address},
        )

    def bearer(self, client: str) -> dict[str, str]:
        answer = self.token(self.clients[client])
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def key(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path, redis_server: RedisServer
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("accounts")
    with redis_server.client(REDIS_DB) as conn:
        conn.flushdb()
    env = app_env(
        {
            "APP_ENV": "development",
            "VAR_DIR": str(root / "var"),
            "DATABASE_URL": f"sqlite:///{root / 'var' / 'housing.db'}",
            "MODEL_DIR": str(trained_model_dir),
            "REDIS_URL": redis_server.url(REDIS_DB),
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "RATE_LIMIT_PREDICT": "1000/minute",
            "RATE_LIMIT_PLANS": json.dumps(
                {
                    "metered": f"{METERED}/minute",
                    "tiny": f"{TINY}/minute",
                    "partner": "100000/minute",
                }
            ),
            "RATE_LIMIT_TOKEN": f"{TOKEN_FAILURES}/minute",
            "RATE_LIMIT_TOKEN_ISSUANCE": "30/minute",
            "RATE_LIMIT_AUTH_FAILURES": "1000/minute",
            "MAX_KEYS_PER_ACCOUNT": str(MAX_KEYS),
            "API_KEY_MAX_LIFETIME_DAYS": str(LIFETIME_DAYS),
        }
    )

    def cli(*args: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(run_cli(env, root, *args, "--json").stdout)
        return value

    # The partner guide's lines, as an operator types them.
    made_keys: dict[str, str] = {}
    made_clients: dict[str, tuple[str, str]] = {}
    for account in ("acme", "bravo"):
        cli("accounts", "create", account, "--plan", "metered")
    for name, account, scopes, extra in (
        ("acme-1", "acme", "predict keys:manage", ()),
        ("acme-2", "acme", "predict", ()),
        ("acme-capped", "acme", "predict", ("--plan", "tiny")),
        ("bravo-1", "bravo", "predict", ()),
        ("charlie-1", "charlie", "predict", ()),
        ("charlie-2", "charlie", "predict", ()),
        ("delta-1", "delta", "predict keys:manage", ()),
        ("echo-short", "echo", "predict keys:manage", ("--expires-days", "2")),
    ):
        made = cli("keys", "create", "--account", account, "--scopes", scopes, *extra)
        assert made["account"] == account
        made_keys[name] = made["api_key"]
    for name, account in (("acme-app", "acme"), ("charlie-app", "charlie"), ("delta-app", "delta")):
        made = cli("clients", "create", name, "--account", account, "--scopes", "predict")
        made_clients[name] = (made["client_id"], made["client_secret"])

    with running_app(root / "serve", env, workers=2) as server:
        yield Deployment(root, env, server, made_keys, made_clients)
    with redis_server.client(REDIS_DB) as conn:
        conn.flushdb()


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


def test_one_account_one_budget_across_workers_keys_tokens_and_minted_keys(
    deployment: Deployment,
) -> None:
    """``acme`` may predict 10 times a minute, whatever it presents: two keys, a capped
    key, a client's token (a 100-row batch costs 2), a key it mints and a key it rotates
    all draw on the one budget, counted in Redis by both workers; ``bravo`` is untouched."""
    d = deployment
    capped = [d.predict(key(d.keys["acme-capped"])) for _ in range(3)]
    first = [d.predict(key(d.keys["acme-1"])) for _ in range(3)]
    token = d.bearer("acme-app")
    batch = d.request(
        "POST", "/v1/predict/batch", json={"instances": [V1_HOUSE] * 100}, headers=token
    )
    minted = d.request(
        "POST", "/v1/keys", json={"scopes": "predict"}, headers=key(d.keys["acme-1"])
    )
    assert minted.status_code == 201, minted.text
    fresh = minted.json()["api_key"]
    more = [d.predict(key(fresh)) for _ in range(3)]
    after = {
        "second key": d.predict(key(d.keys["acme-2"])),
        "token": d.predict(token),
        "minted key": d.predict(key(fresh)),
        "capped key": d.predict(key(d.keys["acme-capped"])),
    }
    rotated = d.request(
        "POST",
        f"/v1/keys/{d.keys['acme-2'].split('_')[1]}/rotate",
        json={"grace_seconds": 60},
        headers=key(d.keys["acme-1"]),
    )
    assert rotated.status_code == 200, rotated.text
    after["rotated key"] = d.predict(key(rotated.json()["api_key"]))
    neighbour = d.predict(key(d.keys["bravo-1"]))
    usage = d.request("GET", "/v1/usage", headers=key(d.keys["acme-2"])).json()

    # The capped key: its own 2, inside the account's 10; refused by its cap, it spent
    # nothing of the account's budget. Answers report the account's budget.
    assert [a.status_code for a in capped] == [200, 200, 429]
    assert [a.headers["X-RateLimit-Limit"] for a in capped] == [str(METERED)] * 2 + [str(TINY)]
    assert [a.headers["X-RateLimit-Remaining"] for a in capped[:2]] == ["9", "8"]
    assert [a.status_code for a in first] == [200] * 3
    assert [a.headers["X-RateLimit-Remaining"] for a in first] == ["7", "6", "5"]
    assert batch.status_code == 200
    assert batch.headers["X-RateLimit-Remaining"] == "3"  # 1 + 100 // 100
    assert [a.status_code for a in more] == [200] * 3
    assert [a.headers["X-RateLimit-Remaining"] for a in more] == ["2", "1", "0"]
    for name, answer in after.items():
        problem = assert_problem(answer, 429)
        assert problem["status"] == 429, name
        assert int(answer.headers["Retry-After"]) >= 1, name
    assert neighbour.status_code == 200
    assert neighbour.headers["X-RateLimit-Remaining"] == str(METERED - 1)
    assert (usage["account"], usage["plan"]) == ("acme", "metered")
    assert (usage["quota"]["limit"], usage["quota"]["remaining"]) == (METERED, 0)
    assert len(d.pids) == 2, d.pids  # both workers answered, and counted in one place


def test_minted_and_rotated_keys_never_outrank_their_minter(deployment: Deployment) -> None:
    """A ``keys:manage`` key that expires in two days mints keys that expire with it at
    the latest, with no scope or plan above its own; rotations keep or shorten an
    expiry; past MAX_KEYS_PER_ACCOUNT active keys, 409."""
    d = deployment
    short = key(d.keys["echo-short"])
    ends = datetime.now(UTC) + timedelta(days=2)
    unasked = d.request("POST", "/v1/keys", json={"scopes": "predict"}, headers=short)
    refusals = [
        d.request("POST", "/v1/keys", json=body, headers=short)
        for body in (
            {"scopes": "predict", "expires_in_days": 10},
            {"scopes": "predict admin"},
            {"scopes": "predict", "plan": "partner"},
        )
    ]
    assert unasked.status_code == 201, unasked.text
    expires = datetime.fromisoformat(unasked.json()["expires_at"])
    assert expires <= ends
    assert ends - expires < timedelta(minutes=5)
    assert [assert_problem(r, 403)["status"] for r in refusals] == [403] * 3
    minted_id = unasked.json()["key_id"]
    earlier = d.request(
        "POST", f"/v1/keys/{minted_id}/rotate", json={"expires_in_days": 1}, headers=short
    )
    assert earlier.status_code == 200, earlier.text
    assert datetime.fromisoformat(earlier.json()["expires_at"]) < expires
    later = d.request(
        "POST",
        f"/v1/keys/{earlier.json()['key_id']}/rotate",
        json={"expires_in_days": 2},
        headers=short,
    )
    assert_problem(later, 403)
    kept = d.request("POST", f"/v1/keys/{earlier.json()['key_id']}/rotate", headers=short)
    assert kept.status_code == 200
    assert kept.json()["expires_at"] == earlier.json()["expires_at"]
    # The cap: echo holds 2 active keys now (its own, the latest rotation).
    created = [
        d.request("POST", "/v1/keys", json={"scopes": "predict"}, headers=short) for _ in range(4)
    ]
    assert [c.status_code for c in created] == [201, 201, 201, 409]
    problem = assert_problem(created[-1], 409)
    assert str(MAX_KEYS) in problem["detail"]
    listed = d.request("GET", "/v1/keys", headers=short).json()["keys"]
    assert sum(k["status"] == "active" and k["grace_until"] is None for k in listed) == MAX_KEYS


def test_disabling_an_account_stops_every_credential_on_every_worker(
    deployment: Deployment,
) -> None:
    d = deployment
    credentials = {
        "key 1": key(d.keys["charlie-1"]),
        "key 2": key(d.keys["charlie-2"]),
        "token": d.bearer("charlie-app"),
    }
    for _ in range(3):  # accepted (and cached as valid) by both workers
        for name, headers in credentials.items():
            assert d.predict(headers).status_code == 200, name
    run_cli(d.env, d.root, "accounts", "disable", "charlie")
    disabled_at = time.monotonic()
    refused_after: dict[str, float] = {}
    while len(refused_after) < len(credentials):
        for name, headers in credentials.items():
            if name in refused_after:
                continue
            answer = d.predict(headers)
            elapsed = time.monotonic() - disabled_at
            if answer.status_code == 401:
                refused_after[name] = elapsed
            else:
                assert answer.status_code == 200, answer.text
                assert elapsed < REVOCATION_DEADLINE_SECONDS, f"{name} still accepted"
        time.sleep(0.1)
    statuses = [
        d.predict(headers).status_code for headers in credentials.values() for _ in range(4)
    ]
    assert statuses == [401] * len(statuses)
    assert d.token(d.clients["charlie-app"]).status_code == 401
    assert d.predict(key(d.keys["delta-1"])).status_code == 200  # another account
    print(f"\nrefused after (s): {refused_after}")


def test_a_third_party_hammering_token_never_locks_the_client_out(
    deployment: Deployment,
) -> None:
    """Six addresses send wrong secrets in ``delta-app``'s name; between their bursts the
    real client, from its own address, asks for a token and always gets one. Each
    attacker's (address, client) pair is refused at half of RATE_LIMIT_TOKEN; an address
    that sprays unknown ids is refused at RATE_LIMIT_TOKEN, even with a correct secret."""
    d = deployment
    client_id, secret = d.clients["delta-app"]
    attackers: dict[str, list[int]] = {}
    issued: list[int] = []
    for i in range(6):
        address = f"198.51.100.{i + 1}"
        attackers[address] = [
            d.token((client_id, f"guess-{i}-{n}"), address).status_code for n in range(5)
        ]
        issued.append(d.token((client_id, secret)).status_code)
    sprayer = "198.51.100.99"
    sprayed = [
        d.token((f"cl_{n:016d}", "wrong"), sprayer).status_code for n in range(TOKEN_FAILURES + 1)
    ]
    with_the_secret = d.token((client_id, secret), sprayer)
    half = TOKEN_FAILURES // 2
    for address, statuses in attackers.items():
        assert statuses == [401] * half + [429] * (5 - half), address
    assert issued == [200] * 6
    assert sprayed == [401] * TOKEN_FAILURES + [429]
    assert with_the_secret.status_code == 429
    assert with_the_secret.json()["error"] == "slow_down"
    assert "access_token" not in with_the_secret.text
    assert d.token((client_id, secret)).status_code == 200  # still, from its own address


ENCODINGS = {
    "utf-8 with BOM": lambda text: codecs.BOM_UTF8 + text.encode(),
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16 with BOM": lambda text: text.encode("utf-16"),
    "utf-32-be": lambda text: text.encode("utf-32-be"),
}


def test_json_is_utf8_only_and_no_answer_names_the_software(deployment: Deployment) -> None:
    d = deployment
    manager = key(d.keys["delta-1"])
    answers = []
    for path, body in (
        ("/v1/predict", V1_HOUSE),
        ("/v1/predict/batch", {"instances": [V1_HOUSE]}),
        ("/v1/keys", {"scopes": "predict"}),
    ):
        for name, encode in ENCODINGS.items():
            answer = d.request(
                "POST",
                path,
                content=encode(json.dumps(body)),
                headers={**manager, "Content-Type": "application/json"},
            )
            assert assert_problem(answer, 400)["type"].endswith("json-not-utf8"), (path, name)
            answers.append(answer)
    answers += [
        d.request("GET", "/healthz"),
        d.request("GET", "/nowhere"),
        d.predict({}),
        d.predict(manager),
        d.request("POST", "/token", data={"grant_type": "client_credentials"}),
    ]
    slash = d.request("GET", "/v1/model/", headers={**manager, "Host": "attacker.example"})
    answers.append(slash)
    assert_problem(slash, 404)
    assert "location" not in slash.headers
    assert [a.status_code for a in answers[-6:]] == [200, 404, 401, 200, 401, 404]
    for answer in answers:
        assert "server" not in answer.headers, (answer.request.url, answer.headers)
    assert len(d.pids) == 2
