"""Partner self-service from the attacker's side: owner A against owner B's keys.

Every read or change of another owner's key answers exactly what a key id that does
not exist answers; scopes never rise; a rotated key works for its grace and then stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.anyio

HOUSE = V1_HOUSE
MANAGE = "predict keys:manage"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(tmp_path: Path, trained_model_dir: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        _env_file=None,
        var_dir=tmp_path / "var",
        model_dir=trained_model_dir,
        rate_limit_predict="100000/minute",
        rate_limit_auth_failures="100000/minute",
        key_rotation_max_grace_seconds=3600,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def as_key(app: FastAPI, api_key: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.30", 5000))
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-API-Key": api_key}
    )


def partner(app: FastAPI, owner: str, scopes: str = MANAGE) -> str:
    return str(app.state.services.store.api_keys.create(owner, scopes)[1])


def key_id(api_key: str) -> str:
    return api_key.split("_")[1]


async def test_a_partner_lists_only_its_own_keys(app: FastAPI) -> None:
    a1, a2 = partner(app, "Acme"), partner(app, "Acme", "predict")
    b1 = partner(app, "Bravo")
    async with as_key(app, a1) as acme:
        listed = (await acme.get("/v1/keys")).json()["keys"]
    assert {k["key_id"] for k in listed} == {key_id(a1), key_id(a2)}
    assert key_id(b1) not in str(listed)
    text = str(listed)
    for secret in (a1, a2):
        assert secret.split("_", 2)[2] not in text
    assert all(k["prefix"] == f"hpa_{k['key_id']}_" for k in listed)
    assert {"created_at", "expires_at", "last_used_at", "scopes", "status"} <= listed[0].keys()


@pytest.mark.parametrize(
    ("method", "suffix"), [("POST", "/rotate"), ("DELETE", ""), ("POST", "/rotate?x=1")]
)
async def test_another_owners_key_answers_exactly_like_a_missing_one(
    app: FastAPI, method: str, suffix: str
) -> None:
    attacker = partner(app, "Mallory")
    victim = partner(app, "Victim")
    missing = "abcdefghijkl"
    async with as_key(app, attacker) as client:
        theirs = await client.request(method, f"/v1/keys/{key_id(victim)}{suffix.split('?')[0]}")
        nothing = await client.request(method, f"/v1/keys/{missing}{suffix.split('?')[0]}")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.json() == nothing.json()
    assert theirs.headers["content-type"] == nothing.headers["content-type"]
    # And the victim's key still works, untouched.
    async with as_key(app, victim) as owner:
        assert (await owner.post("/v1/predict", json=HOUSE)).status_code == 200


async def test_guessed_ids_in_sequence_reveal_nothing(app: FastAPI) -> None:
    attacker = partner(app, "Mallory")
    for _ in range(3):
        partner(app, "Victim")
    guesses = ["1", "2", "000000000001", "aaaaaaaaaaaa", "AAAAAAAAAAAA", "%00", "a" * 200]
    async with as_key(app, attacker) as client:
        answers = [await client.delete(f"/v1/keys/{guess}") for guess in guesses]
        answers += [await client.post(f"/v1/keys/{guess}/rotate") for guess in guesses]
    assert {(a.status_code, a.text) for a in answers} == {(answers[0].status_code, answers[0].text)}
    assert answers[0].status_code == 404


async def test_create_cannot_raise_scopes(app: FastAPI) -> None:
    async with as_key(app, partner(app, "Acme")) as acme:
        raised = await acme.post("/v1/keys", json={"scopes": "predict admin"})
        unknown = await acme.post("/v1/keys", json={"scopes": "root"})
        ok = await acme.post("/v1/keys", json={"scopes": "predict", "expires_in_days": 30})
    assert raised.status_code == 403
    assert unknown.status_code == 403
    assert ok.status_code == 201, ok.text
    created = ok.json()
    assert created["scopes"] == "predict"
    assert created["api_key"].startswith(f"hpa_{created['key_id']}_")
    assert ok.headers["Cache-Control"] == "no-store"
    async with as_key(app, created["api_key"]) as new:
        assert (await new.post("/v1/predict", json=HOUSE)).status_code == 200
        assert (await new.get("/v1/keys")).status_code == 403  # no keys:manage on it


async def test_rotation_keeps_scopes_and_the_old_key_works_for_its_grace_only(
    app: FastAPI,
) -> None:
    old = partner(app, "Acme")
    async with as_key(app, old) as acme:
        answer = await acme.post(f"/v1/keys/{key_id(old)}/rotate", json={"grace_seconds": 2})
    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    assert rotated["scopes"] == "keys:manage predict"
    assert rotated["previous_key_id"] == key_id(old)
    async with as_key(app, old) as before:
        assert (await before.post("/v1/predict", json=HOUSE)).status_code == 200
    await asyncio.sleep(2.6)
    async with as_key(app, old) as after:
        assert (await after.post("/v1/predict", json=HOUSE)).status_code == 401
    async with as_key(app, rotated["api_key"]) as new:
        assert (await new.post("/v1/predict", json=HOUSE)).status_code == 200


async def test_grace_is_capped_by_the_configured_maximum(app: FastAPI) -> None:
    old = partner(app, "Acme")
    async with as_key(app, old) as acme:
        answer = await acme.post(
            f"/v1/keys/{key_id(old)}/rotate", json={"grace_seconds": 10 * 86_400}
        )
    from datetime import datetime, timedelta

    until = datetime.fromisoformat(answer.json()["previous_key_valid_until"])
    assert until - datetime.now(until.tzinfo) <= timedelta(seconds=3600)


async def test_revoke_own_key_then_it_is_refused(app: FastAPI) -> None:
    manager, spare = partner(app, "Acme"), partner(app, "Acme", "predict")
    async with as_key(app, manager) as acme:
        assert (await acme.delete(f"/v1/keys/{key_id(spare)}")).status_code == 204
    await asyncio.sleep(2.1)  # the verifier re-checks a key at most every 2 s
    async with as_key(app, spare) as revoked:
        assert (await revoked.post("/v1/predict", json=HOUSE)).status_code == 401


async def test_admin_may_act_on_any_key_and_it_is_audited(app: FastAPI) -> None:
    victim = partner(app, "Victim", "predict")
    admin = partner(app, "Operators", "admin keys:manage")
    async with as_key(app, admin) as operator:
        listed = (await operator.get("/v1/keys")).json()["keys"]
        assert key_id(victim) in {k["key_id"] for k in listed}
        assert (await operator.delete(f"/v1/keys/{key_id(victim)}")).status_code == 204
    events = app.state.services.store.audit.recent(event="api_key.revoked")
    assert events[0].subject == key_id(victim)
    assert events[0].actor == f"api_key:{key_id(admin)}"


async def test_keys_need_the_keys_manage_scope(app: FastAPI) -> None:
    async with as_key(app, partner(app, "Acme", "predict")) as plain:
        assert (await plain.get("/v1/keys")).status_code == 403
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        assert (await anonymous.get("/v1/keys")).status_code == 401


async def test_a_client_token_manages_keys_of_its_own_name(app: FastAPI) -> None:
    client_id, secret = app.state.services.store.clients.create("acme-app", MANAGE)
    other = partner(app, "someone-else")
    transport = httpx.ASGITransport(app=app, client=("192.0.2.31", 5001))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        token = (
            await http.post(
                "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        created = await http.post("/v1/keys", json={"scopes": "predict"}, headers=bearer)
        listed = (await http.get("/v1/keys", headers=bearer)).json()["keys"]
        foreign = await http.delete(f"/v1/keys/{key_id(other)}", headers=bearer)
    assert created.status_code == 201
    assert [k["owner"] for k in listed] == ["acme-app"]
    assert foreign.status_code == 404


async def test_usage_reports_quota_and_daily_counts(app: FastAPI) -> None:
    api_key = partner(app, "Acme")
    async with as_key(app, api_key) as acme:
        for _ in range(3):
            assert (await acme.post("/v1/predict", json=HOUSE)).status_code == 200
        assert (await acme.post("/v1/predict/batch", json={"instances": [HOUSE] * 4})).is_success
        writer = app.state.services.prediction_log
        assert writer is not None
        await asyncio.to_thread(writer.flush, 10)
        usage = (await acme.get("/v1/usage")).json()
    assert usage["principal"] == f"api_key:{key_id(api_key)}"
    assert usage["quota"]["limit"] == 100000
    assert usage["quota"]["remaining"] == 100000 - 4
    [today] = usage["days"]
    assert today["requests"] == 4
    assert today["predictions"] == 7
    assert today["by_key"] == {key_id(api_key): 4}
