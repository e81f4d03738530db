"""``/v1/keys`` from the attacker's side: nothing minted or rotated outranks its minter.

A stolen, short-lived ``keys:manage`` key must not turn into a longer-lived one, a
richer plan or wider scopes; an account holds at most MAX_KEYS_PER_ACCOUNT active keys;
every key of an account spends the account's one budget, and no error repeats what
was sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from auth.store import CredentialStore
from tests.support.houses import V1_HOUSE

pytestmark = pytest.mark.anyio

MANAGE = "predict keys:manage"
MAX_KEYS = 4
LIFETIME_DAYS = 90
MARKER = "zz-marker-0xdeadbeef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(tmp_path: Path, trained_model_dir: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(
        _env_file=None,
        var_dir=tmp_path / "var",
        model_dir=trained_model_dir,
        rate_limit_predict="500/minute",
        rate_limit_plans={"metered": "5/minute", "free": "2/minute", "partner": "1000/minute"},
        rate_limit_auth_failures="100000/minute",
        max_keys_per_account=MAX_KEYS,
        api_key_max_lifetime_days=LIFETIME_DAYS,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def store_of(app: FastAPI) -> CredentialStore:
    store: CredentialStore = app.state.services.store
    return store


def as_key(app: FastAPI, api_key: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.40", 5000))
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-API-Key": api_key}
    )


def key_id(api_key: str) -> str:
    return api_key.split("_")[1]


def expiry(answer: httpx.Response) -> datetime:
    return datetime.fromisoformat(answer.json()["expires_at"])


def close_to(moment: datetime, expected: datetime) -> bool:
    return abs(moment - expected) < timedelta(seconds=30)


async def test_a_short_lived_key_mints_nothing_that_outlives_it(app: FastAPI) -> None:
    soon = datetime.now(UTC) + timedelta(days=2)
    _, short = store_of(app).api_keys.create("Acme", MANAGE, expires_at=soon)
    async with as_key(app, short) as acme:
        unasked = await acme.post("/v1/keys", json={"scopes": "predict"})
        longer = await acme.post("/v1/keys", json={"scopes": "predict", "expires_in_days": 30})
        sooner = await acme.post("/v1/keys", json={"scopes": "predict", "expires_in_days": 1})
    assert unasked.status_code == 201, unasked.text
    assert close_to(expiry(unasked), soon)  # no expiry asked: the minter's own
    assert longer.status_code == 403
    assert longer.json()["type"] == "urn:housing-api:problem:outranks-caller"
    assert sooner.status_code == 201
    assert expiry(sooner) <= soon


async def test_a_key_without_expiry_mints_keys_of_the_accounts_longest_lifetime(
    app: FastAPI,
) -> None:
    _, forever = store_of(app).api_keys.create("Acme", MANAGE)  # operator-made, no expiry
    async with as_key(app, forever) as acme:
        unasked = await acme.post("/v1/keys", json={"scopes": "predict"})
        too_long = await acme.post(
            "/v1/keys", json={"scopes": "predict", "expires_in_days": LIFETIME_DAYS + 1}
        )
    assert unasked.status_code == 201
    assert close_to(expiry(unasked), datetime.now(UTC) + timedelta(days=LIFETIME_DAYS))
    assert too_long.status_code == 403


async def test_neither_scopes_nor_plan_rise(app: FastAPI) -> None:
    _, minter = store_of(app).api_keys.create("Acme", MANAGE)  # plan: the account's, default
    async with as_key(app, minter) as acme:
        wider = await acme.post("/v1/keys", json={"scopes": "predict admin"})
        richer = await acme.post("/v1/keys", json={"scopes": "predict", "plan": "partner"})
        poorer = await acme.post("/v1/keys", json={"scopes": "predict", "plan": "free"})
        same = await acme.post("/v1/keys", json={"scopes": "predict"})
    assert wider.status_code == richer.status_code == 403
    assert poorer.status_code == same.status_code == 201
    assert (poorer.json()["plan"], same.json()["plan"]) == ("free", "default")


async def test_rotation_keeps_the_expiry_and_never_widens_anything(app: FastAPI) -> None:
    store = store_of(app)
    in_ten_days = datetime.now(UTC) + timedelta(days=10)
    _, manager = store.api_keys.create("Acme", MANAGE, expires_at=in_ten_days)
    later = datetime.now(UTC) + timedelta(days=60)
    plain_id, _ = store.api_keys.create("Acme", "predict", expires_at=later)
    admin_id, _ = store.api_keys.create("Acme", "predict admin", expires_at=later)
    async with as_key(app, manager) as acme:
        plain = await acme.post(f"/v1/keys/{plain_id}/rotate")
        wider = await acme.post(f"/v1/keys/{admin_id}/rotate")
        asked_later = await acme.post(f"/v1/keys/{plain_id}/rotate", json={"expires_in_days": 30})
        itself = await acme.post(f"/v1/keys/{key_id(manager)}/rotate", json={"grace_seconds": 60})
        # In its grace now, the old key mints nothing that outlives the grace.
        after_grace = await acme.post("/v1/keys", json={"scopes": "predict", "expires_in_days": 1})
    # A key that outlives the caller is cut back to the caller's own end.
    assert plain.status_code == 200, plain.text
    assert close_to(expiry(plain), in_ten_days)
    # A key with scopes the caller lacks is not the caller's to rotate.
    assert wider.status_code == 403
    assert wider.json()["type"] == "urn:housing-api:problem:scope-not-held"
    assert asked_later.status_code == 404  # already rotated, like any key that cannot be
    assert itself.status_code == 200, itself.text
    assert close_to(expiry(itself), in_ten_days)  # the old key's expiry, kept
    assert after_grace.status_code == 403
    new = itself.json()["api_key"]
    async with as_key(app, new) as rotated:
        earlier = await rotated.post(f"/v1/keys/{key_id(new)}/rotate", json={"expires_in_days": 2})
        later_asked = await rotated.post(
            f"/v1/keys/{earlier.json()['key_id']}/rotate", json={"expires_in_days": 30}
        )
    assert earlier.status_code == 200
    assert close_to(expiry(earlier), datetime.now(UTC) + timedelta(days=2))
    assert later_asked.status_code == 403


async def test_past_the_cap_a_new_key_is_a_409_problem(app: FastAPI) -> None:
    store = store_of(app)
    _, manager = store.api_keys.create("Acme", MANAGE)
    async with as_key(app, manager) as acme:
        created = [await acme.post("/v1/keys", json={"scopes": "predict"}) for _ in range(4)]
        listed = (await acme.get("/v1/keys")).json()["keys"]
        # Rotating replaces a key: allowed at the cap, and the count stays.
        rotated = await acme.post(f"/v1/keys/{created[0].json()['key_id']}/rotate")
        revoked = await acme.delete(f"/v1/keys/{created[1].json()['key_id']}")
        after_revoke = await acme.post("/v1/keys", json={"scopes": "predict"})
    assert [c.status_code for c in created] == [201, 201, 201, 409]
    problem = created[-1].json()
    assert created[-1].headers["content-type"] == "application/problem+json"
    assert problem["status"] == 409
    assert str(MAX_KEYS) in problem["detail"]
    assert len(listed) == MAX_KEYS
    assert rotated.status_code == 200
    assert revoked.status_code == 204
    assert after_revoke.status_code == 201
    assert store.api_keys.active_count("Acme") == MAX_KEYS
    # Another account is not concerned.
    _, other = store.api_keys.create("Bravo", MANAGE)
    async with as_key(app, other) as bravo:
        assert (await bravo.post("/v1/keys", json={"scopes": "predict"})).status_code == 201


async def test_minting_and_rotating_gain_no_budget(app: FastAPI) -> None:
    """The account's plan allows 5 a minute: the minter and the key it mints spend the
    same five."""
    store_of(app).accounts.create("Acme", "metered")
    _, minter = store_of(app).api_keys.create("Acme", MANAGE)
    async with as_key(app, minter) as acme:
        spent = [await acme.post("/v1/predict", json=V1_HOUSE) for _ in range(3)]
        minted = (await acme.post("/v1/keys", json={"scopes": "predict"})).json()["api_key"]
    async with as_key(app, minted) as fresh:
        more = [await fresh.post("/v1/predict", json=V1_HOUSE) for _ in range(3)]
        rotated = (await fresh.post(f"/v1/keys/{key_id(minted)}/rotate")).status_code
    assert [a.status_code for a in spent] == [200] * 3
    assert [a.status_code for a in more] == [200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in spent + more[:2]] == list("43210")
    assert rotated == 403  # the minted key has no keys:manage: it cannot rotate at all
    async with as_key(app, minter) as acme:
        usage = (await acme.get("/v1/usage")).json()
    assert (usage["account"], usage["plan"]) == ("Acme", "metered")
    assert (usage["quota"]["limit"], usage["quota"]["remaining"]) == (5, 0)


async def test_a_lower_plan_of_its_own_caps_a_key_inside_its_accounts_budget(
    app: FastAPI,
) -> None:
    store = store_of(app)
    store.accounts.create("Acme", "partner")
    _, capped = store.api_keys.create("Acme", "predict", "free")
    _, sibling = store.api_keys.create("Acme", "predict")
    async with as_key(app, capped) as low:
        answers = [await low.post("/v1/predict", json=V1_HOUSE) for _ in range(4)]
    async with as_key(app, sibling) as high:
        after = await high.post("/v1/predict", json=V1_HOUSE)
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    # Answers report the account's budget; the refusal names the cap it hit.
    assert answers[0].headers["X-RateLimit-Limit"] == "1000"
    assert answers[1].headers["X-RateLimit-Remaining"] == "998"
    assert answers[2].headers["X-RateLimit-Limit"] == "2"
    # Refused by its own cap, the key spent nothing of its siblings' budget.
    assert after.headers["X-RateLimit-Remaining"] == "997"


async def test_errors_describe_what_is_allowed_never_what_was_sent(app: FastAPI) -> None:
    client_id, secret = store_of(app).clients.create("acme-app", MANAGE)
    _, manager = store_of(app).api_keys.create("Acme", MANAGE)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.41", 5001))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        token = await http.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": f"predict {MARKER}"},
            auth=(client_id, secret),
        )
        repeated = await http.post(
            "/token",
            content=f"grant_type=client_credentials&scope={MARKER}&scope=predict",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(client_id, secret),
        )
    async with as_key(app, manager) as acme:
        minted = await acme.post("/v1/keys", json={"scopes": f"predict {MARKER}"})
        planned = await acme.post("/v1/keys", json={"scopes": "predict", "plan": MARKER})
        batch = await acme.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 2000})
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_scope"
    assert "predict" in token.json()["error_description"]  # what is allowed
    assert repeated.status_code == 400
    assert minted.status_code == 403
    assert planned.status_code == 403
    assert batch.status_code == 422
    for answer in (token, repeated, minted, planned):
        assert MARKER not in answer.text, answer.text
    assert "2000" not in batch.text
