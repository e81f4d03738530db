"""Bearer tokens on the protected routes, from the attacker's side (RFC 6750, RFC 8725)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.settings import Settings
from auth.jwt_keys import (
    SigningKeys,
    generate_private_key_pem,
    public_key_pem,
    signing_keys_from_pem,
    signing_keys_from_secret,
)
from auth.store import CredentialStore
from auth.tokens import MAX_TOKEN_BYTES, issue_access_token
from tests.auth_http.support import (
    V1_HOUSE,
    NewClient,
    api_key,
    assert_problem,
    assert_unauthenticated,
    b64url,
    b64url_decode_json,
    b64url_json,
    bearer,
    get_token,
    predict,
)

pytestmark = pytest.mark.anyio


# --- helpers: tokens an attacker could bring ------------------------------------------


def claims_for(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """The claims our /token would write for ``client_id``, overridable one by one."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "sub": client_id,
        "aud": settings.jwt_audience,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": "predict",
        "kind": "client",
        "plan": "default",
    }
    claims.update(overrides)
    return claims


def sign(claims: dict[str, Any], key: Any, algorithm: str, **header: Any) -> str:
    token: str = jwt.encode(claims, key, algorithm=algorithm, headers={"typ": "at+jwt", **header})
    return token


def foreign_keys(algorithm: str) -> SigningKeys:
    """A key pair (or secret) of the same kind as the app's, but not the app's."""
    if algorithm == "HS256":
        return signing_keys_from_secret(secrets.token_urlsafe(48).encode())
    return signing_keys_from_pem("ES256", generate_private_key_pem("ES256"))


def app_keys(app: FastAPI) -> SigningKeys:
    keys: SigningKeys = app.state.services.signing_keys
    return keys


def issue(app: FastAPI, settings: Settings, client_id: str, **overrides: Any) -> str:
    """A token signed with the app's own keys, through the app's own issuing code."""
    values: dict[str, Any] = {
        "subject": client_id,
        "client_id": client_id,
        "scopes": frozenset({"predict"}),
        "kind": "client",
        "plan": "default",
        "issuer": settings.jwt_issuer,
        "audience": settings.jwt_audience,
        "ttl_seconds": 600,
    }
    values.update(overrides)
    return issue_access_token(app_keys(app), **values).token


@pytest.fixture
def predictor(new_client: NewClient) -> str:
    """A client allowed to predict; its id is the subject of forged tokens."""
    client_id, _ = new_client("predict models:read")
    return client_id


async def assert_refused(client: httpx.AsyncClient, token: str) -> None:
    assert_unauthenticated(await predict(client, bearer(token)))
    assert_unauthenticated(await client.get("/v1/model", headers=bearer(token)))


# --- tokens used as intended -----------------------------------------------------------


async def test_predict_token_calls_predict(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    response = await predict(client, bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1"


async def test_model_metadata_with_predict_or_models_read(
    client: httpx.AsyncClient, new_client: NewClient, subtests: pytest.Subtests
) -> None:
    for scope in ("predict", "models:read"):
        client_id, secret = new_client(scope)
        token = await get_token(client, client_id, secret)
        for version in ("v1", "v2"):
            with subtests.test(scope=scope, version=version):
                response = await client.get(f"/{version}/model", headers=bearer(token))
                assert response.status_code == 200, response.text
                assert response.json()["version"] == version


async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    response = await predict(client, {"Authorization": f"bearer {token}"})
    assert response.status_code == 200, response.text


async def test_token_without_predict_is_403_insufficient_scope(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("models:read metrics")
    token = await get_token(client, client_id, secret)
    response = await predict(client, bearer(token))
    assert_problem(response, 403)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="predict"' in challenge


async def test_no_credentials_is_401_with_a_bare_challenge(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await predict(client, {}), token_sent=False)
    assert_unauthenticated(await client.get("/v1/model"), token_sent=False)


async def test_bad_token_is_401_invalid_token(client: httpx.AsyncClient) -> None:
    await assert_refused(client, "not-a-token")


# --- forged and unacceptable tokens --------------------------------------------------------


async def test_alg_none_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    predictor: str,
    subtests: pytest.Subtests,
) -> None:
    genuine = issue(app, settings, predictor)
    payload = b64url_json(claims_for(settings, predictor, scope="predict admin"))
    for alg in ("none", "None", "NONE", "nOnE"):
        header = b64url_json({"alg": alg, "typ": "at+jwt", "kid": app_keys(app).kid})
        for signature in ("", genuine.split(".")[2]):
            with subtests.test(alg=alg, signature="kept" if signature else "empty"):
                await assert_refused(client, f"{header}.{payload}.{signature}")


async def test_tampered_payload_is_refused(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("models:read")
    token = await get_token(client, client_id, secret)
    header, payload, signature = token.split(".")
    claims = b64url_decode_json(payload)
    assert claims["scope"] == "models:read"
    raised = b64url_json(claims | {"scope": "admin keys:manage metrics models:read predict"})
    await assert_refused(client, f"{header}.{raised}.{signature}")


async def test_tampered_signature_is_refused(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = signature[:middle] + flipped + signature[middle + 1 :]
    await assert_refused(client, f"{header}.{payload}.{forged}")
    # A signature cut short or doubled is no better.
    await assert_refused(client, f"{header}.{payload}.{signature[:-8]}")
    await assert_refused(client, f"{header}.{payload}.{signature}{signature}")


async def test_token_signed_with_another_key_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    algorithm: str,
    predictor: str,
    subtests: pytest.Subtests,
) -> None:
    other = foreign_keys(algorithm)
    claims = claims_for(settings, predictor)
    for kid_label, kid in (("ours", app_keys(app).kid), ("theirs", other.kid)):
        with subtests.test(kid=kid_label):
            await assert_refused(client, sign(claims, other.signer(), algorithm, kid=kid))


async def test_embedded_attacker_key_is_not_trusted(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, algorithm: str, predictor: str
) -> None:
    """RFC 8725 §3.10: a key (or key URL) named by the token itself is never used."""
    other = foreign_keys(algorithm)
    claims = claims_for(settings, predictor)
    for extra in (
        {"jwk": other.jwks()["keys"][0] if other.jwks()["keys"] else {"kty": "oct"}},
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
    ):
        await assert_refused(
            client, sign(claims, other.signer(), algorithm, kid=other.kid, **extra)
        )


async def test_wrong_issuer_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    predictor: str,
    subtests: pytest.Subtests,
) -> None:
    for issuer in ("https://attacker.example", "housing-api-staging", "", "HOUSING-API"):
        with subtests.test(issuer=issuer):
            await assert_refused(client, issue(app, settings, predictor, issuer=issuer))


async def test_wrong_audience_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    predictor: str,
    subtests: pytest.Subtests,
) -> None:
    for audience in ("https://other-api.example", "housing-api-admin", "", "HOUSING-API"):
        with subtests.test(audience=audience):
            await assert_refused(client, issue(app, settings, predictor, audience=audience))


async def test_expired_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, predictor: str
) -> None:
    past = int(time.time()) - 3600
    await assert_refused(client, issue(app, settings, predictor, now=past, ttl_seconds=900))


async def test_not_yet_valid_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, predictor: str
) -> None:
    future = int(time.time()) + 3600
    await assert_refused(client, issue(app, settings, predictor, now=future, ttl_seconds=900))


async def test_controls_our_own_helpers_make_accepted_tokens(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, algorithm: str, predictor: str
) -> None:
    """The control for every forgery here: with nothing changed, both helpers' tokens work,
    so each refusal above is due to the one thing the attacker changed."""
    keys = app_keys(app)
    for token in (
        issue(app, settings, predictor),
        sign(claims_for(settings, predictor), keys.signer(), algorithm, kid=keys.kid),
    ):
        response = await predict(client, bearer(token))
        assert response.status_code == 200, response.text


async def test_oversized_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, algorithm: str, predictor: str
) -> None:
    keys = app_keys(app)
    claims = claims_for(settings, predictor, pad="x" * MAX_TOKEN_BYTES)
    token = sign(claims, keys.signer(), algorithm, kid=keys.kid)  # a genuine signature
    assert len(token) > MAX_TOKEN_BYTES
    await assert_refused(client, token)


async def test_basic_authorization_on_predict_is_refused(
    client: httpx.AsyncClient, new_client: NewClient
) -> None:
    """Client credentials authenticate at /token only, never on a resource."""
    client_id, secret = new_client("predict")
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = await predict(client, {"Authorization": f"Basic {basic}"})
    assert_unauthenticated(response)
    assert secret not in response.text


GARBAGE_HEADERS: list[bytes] = [
    b"Bearer",
    b"Bearer ",
    b"Bearer not-a-jwt",
    b"Bearer a.b.c",
    b"Bearer ...",
    b"Bearer e30.e30.e30",
    b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
    b"Bearer " + b"A" * 10_000,
    b"Bearer " + b".".join([b"A" * 20] * 5),
    b"Token abc",
    b"Digest username=admin",
    b"Bearer\tabc.def.ghi",
    b"{'alg': 'none'}",
    b"Bearer \xff\xfe\xfd",
    b"Bearer \xc3\xa9.\xc3\xa9.\xc3\xa9",
    b"\x80\x81",
]


async def test_garbage_authorization_header_is_401(
    client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for index, value in enumerate(GARBAGE_HEADERS):
        with subtests.test(index=index, value=value[:40]):
            headers = [(b"authorization", value), (b"content-type", b"application/json")]
            response = await client.post("/v1/predict", content=b"{}", headers=headers)
            assert_unauthenticated(response)


@pytest.mark.parametrize("algorithm", ["ES256"])
async def test_es256_algorithm_confusion_is_refused(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, predictor: str
) -> None:
    """An HS256 token keyed with our public key (which anyone can fetch) is refused."""
    assert settings.jwt_private_key_file is not None
    public_pem = public_key_pem(settings.jwt_private_key_file.read_bytes())
    kid = app_keys(app).kid
    claims = claims_for(settings, predictor, scope="admin predict")
    for secret in (public_pem, public_pem.strip(), public_pem.replace(b"\n", b"\r\n")):
        header = b64url_json({"alg": "HS256", "typ": "at+jwt", "kid": kid})
        signing_input = f"{header}.{b64url_json(claims)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await assert_refused(client, f"{signing_input}.{b64url(mac)}")


# --- every presented credential must be valid -----------------------------------------------


@pytest.fixture
def valid_api_key(store: CredentialStore) -> str:
    _, key = store.api_keys.create("partner-x", "predict")
    return key


async def test_valid_bearer_and_valid_api_key_together_are_accepted(
    client: httpx.AsyncClient, new_client: NewClient, valid_api_key: str
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    response = await predict(client, bearer(token) | api_key(valid_api_key))
    assert response.status_code == 200, response.text


BAD_AUTHORIZATION = ["Bearer not-a-token", "Basic Zm9vOmJhcg==", "Bearer", "Bearer a.b.c"]
BAD_API_KEYS = ["hpa_aaaaaaaaaaaa_" + "x" * 43, "garbage", "hpa_", "x" * 300]


async def test_bad_authorization_next_to_valid_api_key_is_401(
    client: httpx.AsyncClient, valid_api_key: str, subtests: pytest.Subtests
) -> None:
    assert (await predict(client, api_key(valid_api_key))).status_code == 200
    for authorization in BAD_AUTHORIZATION:
        with subtests.test(authorization=authorization):
            headers = {"Authorization": authorization} | api_key(valid_api_key)
            assert_unauthenticated(await predict(client, headers))


async def test_forged_token_next_to_valid_api_key_is_401(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    algorithm: str,
    predictor: str,
    valid_api_key: str,
) -> None:
    other = foreign_keys(algorithm)
    forged = sign(claims_for(settings, predictor), other.signer(), algorithm, kid=other.kid)
    response = await predict(client, bearer(forged) | api_key(valid_api_key))
    assert_unauthenticated(response)


async def test_bad_api_key_next_to_valid_bearer_is_401(
    client: httpx.AsyncClient, new_client: NewClient, subtests: pytest.Subtests
) -> None:
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    assert (await predict(client, bearer(token))).status_code == 200
    for bad_key in BAD_API_KEYS:
        with subtests.test(api_key=bad_key[:40]):
            assert_unauthenticated(await predict(client, bearer(token) | api_key(bad_key)))


async def test_repeated_credential_headers_are_401(
    client: httpx.AsyncClient,
    new_client: NewClient,
    valid_api_key: str,
    subtests: pytest.Subtests,
) -> None:
    """A second Authorization or X-API-Key header cannot hide behind a valid first one."""
    client_id, secret = new_client("predict")
    token = await get_token(client, client_id, secret)
    cases = {
        "bearer, then garbage": [("authorization", f"Bearer {token}"), ("authorization", "x")],
        "garbage, then bearer": [("authorization", "x"), ("authorization", f"Bearer {token}")],
        "key, then garbage": [("x-api-key", valid_api_key), ("x-api-key", "x")],
        "garbage, then key": [("x-api-key", "x"), ("x-api-key", valid_api_key)],
    }
    for label, headers in cases.items():
        with subtests.test(label):
            response = await client.post("/v1/predict", json=V1_HOUSE, headers=headers)
            assert_unauthenticated(response)
