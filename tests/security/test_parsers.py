"""Property tests for everything that parses attacker-controlled input.

Two promises, for any input: the parser never raises past its handler (no 500),
and nothing but the genuine credential ever authenticates. The unit tests in
tests/auth and tests/auth_http pin individual attacks; here Hypothesis searches
around them: splices and edits of genuine tokens and keys, arbitrary header bytes,
arbitrary Basic credentials and arbitrary JSON bodies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.routes.keys import CreateKey, RotateKey
from app.schemas import BatchV1, BatchV2, HouseV1, HouseV2
from auth.jwt_keys import (
    SigningKeys,
    generate_private_key_pem,
    signing_keys_from_pem,
    signing_keys_from_secret,
)
from auth.oauth import ClientCredentials, OAuthError, client_credentials
from auth.secrets import format_api_key, parse_api_key
from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token
from ml.features import FEATURES
from tests.security.conftest import ALL_SCOPES_TEXT

ISSUER = AUDIENCE = "housing-api"
FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTTP = settings(FAST, max_examples=100)

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
REASON = re.compile(r"[a-z_]{3,20}")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them as bare words
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=16,
)
# Header values as a raw client could send them: any byte but CR and LF.
header_bytes = st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b)


def _keys() -> list[SigningKeys]:
    return [
        signing_keys_from_secret(b"property-test-secret-" + b"k" * 40),
        signing_keys_from_secret(b"another-hs256-secret-" + b"q" * 40),
        signing_keys_from_pem("ES256", generate_private_key_pem("ES256")),
    ]


KEYS = _keys()


def _token(keys: SigningKeys, subject: str = "cl_aaaaaaaaaaaaaaaa") -> str:
    return issue_access_token(
        keys,
        subject=subject,
        client_id=subject,
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_seconds=900,
    ).token


TOKENS = [_token(keys) for keys in KEYS]


def edits(text: str) -> st.SearchStrategy[str]:
    """``text`` with a few characters inserted, deleted or replaced."""

    @st.composite
    def edited(draw: st.DrawFn) -> str:
        chars = list(text)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(chars)))
            action = draw(st.sampled_from(["insert", "delete", "replace"]))
            char = draw(st.characters(codec="latin-1") | st.sampled_from(list(B64URL + ".=")))
            if action == "insert":
                chars.insert(position, char)
            elif chars and position < len(chars):
                if action == "delete":
                    del chars[position]
                else:
                    chars[position] = char
        return "".join(chars)

    return edited()


@st.composite
def spliced_tokens(draw: st.DrawFn) -> str:
    """Header, payload and signature taken from different genuine tokens (other keys,
    other algorithms), optionally edited: a signature never travels to another body."""
    parts = [t.split(".") for t in TOKENS]
    header, payload, signature = (draw(st.sampled_from(parts))[i] for i in range(3))
    token = ".".join([header, payload, signature])
    return draw(st.just(token) | edits(token))


# --- JWT: decode_access_token -------------------------------------------------------


@FAST
@given(
    value=st.text(max_size=400)
    | st.binary(max_size=400)
    | spliced_tokens()
    | st.sampled_from(TOKENS).flatmap(edits)
)
def test_decode_access_token_refuses_anything_but_a_genuine_token(value: str | bytes) -> None:
    try:
        claims = decode_access_token(KEYS[0], value, issuer=ISSUER, audience=AUDIENCE)
    except InvalidTokenError as error:
        reason = error.reason
    else:
        assert value == TOKENS[0], "a token other than the genuine one was accepted"
        assert claims.subject == "cl_aaaaaaaaaaaaaaaa"
        return
    assert REASON.fullmatch(reason), reason  # a fixed word, never the input


# --- API keys: parse_api_key ----------------------------------------------------------

key_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=12, max_size=12)
secrets_ = st.text(alphabet=B64URL, min_size=43, max_size=128)


@FAST
@given(key_id=key_ids, secret=secrets_)
def test_every_well_formed_api_key_parses_back_to_its_parts(key_id: str, secret: str) -> None:
    assert parse_api_key(format_api_key(key_id, secret)) == (key_id, secret)


@FAST
@given(
    value=st.text(max_size=250)
    | st.builds(format_api_key, key_ids, secrets_).flatmap(edits)
    | st.builds(lambda *parts: "_".join(parts), st.text(max_size=5), key_ids, secrets_)
    | json_values
)
def test_parse_api_key_accepts_only_the_canonical_form(value: object) -> None:
    parsed = parse_api_key(value)
    if parsed is not None:
        key_id, secret = parsed
        assert value == format_api_key(key_id, secret)
        assert isinstance(value, str)
        assert value.isascii()
        assert len(value) <= 200


# --- HTTP Basic client authentication: auth.oauth.client_credentials -----------------


def _request(authorization: bytes | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    return Request({"type": "http", "method": "POST", "path": "/token", "headers": headers})


forms = st.dictionaries(
    st.sampled_from(["client_id", "client_secret", "grant_type"]), st.text(max_size=20)
)


@FAST
@given(
    authorization=st.none()
    | header_bytes
    | st.builds(lambda b: b"Basic " + base64.b64encode(b), st.binary(max_size=80)),
    form=forms,
)
def test_basic_header_parser_answers_credentials_none_or_an_oauth_error(
    authorization: bytes | None, form: dict[str, str]
) -> None:
    try:
        result = client_credentials(_request(authorization).headers.get("authorization"), form)
    except OAuthError as error:
        status = error.status
    else:
        status = None
    assert status in (None, 400, 401)
    if status is not None:
        return
    assert result is None or isinstance(result, ClientCredentials)
    if result is not None and not result.used_basic:
        assert (result.client_id, result.secret) == (form["client_id"], form["client_secret"])


@FAST
@given(client_id=st.text(max_size=40), secret=st.text(max_size=60))
def test_basic_credentials_round_trip_form_urlencoded(client_id: str, secret: str) -> None:
    """RFC 6749 §2.3.1: each part is form-urlencoded, then joined with ':' and base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    header = b"Basic " + base64.b64encode(pair)
    result = client_credentials(_request(header).headers.get("authorization"), {})
    assert result == ClientCredentials(client_id, secret, used_basic=True)


# --- Request schemas ---------------------------------------------------------------

SCHEMAS: list[type[BaseModel]] = [HouseV1, HouseV2, BatchV1, BatchV2, CreateKey, RotateKey]


@FAST
@given(schema=st.sampled_from(SCHEMAS), value=json_values)
def test_request_schemas_only_raise_validation_errors(
    schema: type[BaseModel], value: object
) -> None:
    with contextlib.suppress(ValidationError):
        schema.model_validate(value)


@FAST
@given(
    version=st.sampled_from(["v1", "v2"]),
    house=st.dictionaries(st.sampled_from([f.name for f in FEATURES["v2"]]), json_values),
)
def test_an_accepted_house_is_complete_typed_and_in_range(
    version: str, house: dict[str, Any]
) -> None:
    schema = HouseV1 if version == "v1" else HouseV2
    try:
        accepted = schema.model_validate(house)
    except ValidationError:
        return
    for feature in FEATURES[version]:  # type: ignore[index]
        value = getattr(accepted, feature.name)
        if feature.kind == "bool":
            assert house[feature.name] is value
        else:
            assert type(house[feature.name]) in (int, float)
            assert house[feature.name] == value
            assert feature.lower <= value <= feature.upper


# --- Through the HTTP app ----------------------------------------------------------


class Http:
    """Drive the running app from synchronous Hypothesis tests, raw header bytes allowed."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], content: bytes = b""
    ) -> httpx.Response:
        return self.portal.call(
            lambda: self.client.request(method, path, headers=headers, content=content)
        )


@pytest.fixture(scope="module")
def http(security_app: FastAPI) -> Iterator[Http]:
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(security_app.router.lifespan_context(security_app)):
            transport = httpx.ASGITransport(app=security_app, client=("198.51.100.9", 4000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            try:
                yield Http(portal, client)
            finally:
                portal.call(client.aclose)


@pytest.fixture(scope="module")
def genuine(security_app: FastAPI, http: Http) -> dict[str, str]:
    """A real API key, client and bearer token, all holding every scope."""
    store = security_app.state.services.store
    _, api_key = store.api_keys.create("property-tests", ALL_SCOPES_TEXT)
    client_id, secret = store.clients.create("property-tests", ALL_SCOPES_TEXT)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer = http.request(
        "POST",
        "/token",
        [
            (b"authorization", f"Basic {basic}".encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials",
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    return {"api_key": api_key, "client_id": client_id, "secret": secret, "token": token}


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


@st.composite
def presented(draw: st.DrawFn, genuine: str, scheme: bytes) -> tuple[bytes | None, bool]:
    """``(header value or None, whether it is the genuine credential)``. An empty
    header counts as no header, as tests/auth_http's test_empty_key_is_no_credential has it."""
    choice = draw(st.sampled_from(["absent", "genuine", "edited", "arbitrary", "other"]))
    if choice == "absent":
        return None, False
    if choice == "genuine":
        return scheme + genuine.encode(), True
    if choice == "edited":
        # Whitespace around the token is trimmed like any header's: not an edit.
        edited = draw(edits(genuine).filter(lambda e: e.strip() != genuine))
        return scheme + edited.encode("latin-1"), False
    if choice == "other" and scheme:
        return scheme + draw(st.sampled_from(TOKENS[1:])).encode(), False
    value = draw(header_bytes)
    assume(genuine.encode() not in value)
    return value or None, False


@HTTP
@given(data=st.data())
def test_only_genuine_credentials_authenticate_and_nothing_answers_500(
    http: Http, genuine: dict[str, str], data: st.DataObject
) -> None:
    """Every credential presented must be valid; one bad one is a 401, whatever else."""
    authorization, good_token = data.draw(presented(genuine["token"], b"Bearer "))
    api_key, good_key = data.draw(presented(genuine["api_key"], b""))
    headers = [
        (name, value)
        for name, value in ((b"authorization", authorization), (b"x-api-key", api_key))
        if value is not None
    ]
    response = http.request("GET", "/v1/model", headers)
    sent_bad = (authorization is not None and not good_token) or (
        api_key is not None and not good_key
    )
    if headers and not sent_bad:
        assert response.status_code == 200, response.text
        return
    assert_problem(response, 401)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="housing-api"')
    assert ('error="invalid_token"' in challenge) == bool(headers)


@HTTP
@given(
    authorization=header_bytes
    | st.builds(lambda b: b"Basic " + base64.b64encode(b), st.binary(max_size=120)),
    body=st.sampled_from([b"grant_type=client_credentials", b"grant_type=password", b""]),
)
def test_arbitrary_client_authentication_on_token_is_refused_in_oauth_shape(
    http: Http, genuine: dict[str, str], authorization: bytes, body: bytes
) -> None:
    pair = f"{genuine['client_id']}:{genuine['secret']}".encode()
    assume(base64.b64encode(pair) not in authorization)
    response = http.request(
        "POST",
        "/token",
        [
            (b"authorization", authorization),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        body,
    )
    assert response.status_code in (400, 401), response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in ("invalid_client", "invalid_request", "invalid_grant")
    assert "access_token" not in response.text
    assert response.headers["cache-control"] == "no-store"


JSON_ROUTES = {
    "/v1/predict": (200,),
    "/v2/predict": (200,),
    "/v1/predict/batch": (200,),
    "/v2/predict/batch": (200,),
    # A new key, scopes (or a plan, an expiry) beyond the caller's, or the account's cap.
    "/v1/keys": (201, 403, 409),
}


def _utf8_json_text(body: bytes) -> bool:
    """What RFC 8259 §8.1 calls JSON text between systems: UTF-8, no byte-order mark
    (a NUL byte, never in JSON text, is how UTF-16/32 shows)."""
    if body.startswith(b"\xef\xbb\xbf") or b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@HTTP
@given(
    path=st.sampled_from(sorted(JSON_ROUTES)),
    body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200),
)
def test_arbitrary_json_bodies_get_an_answer_a_400_or_a_422_never_a_500(
    http: Http, genuine: dict[str, str], path: str, body: bytes
) -> None:
    headers = [(b"x-api-key", genuine["api_key"].encode()), (b"content-type", b"application/json")]
    response = http.request("POST", path, headers, body)
    if not _utf8_json_text(body):  # refused before any validation, whatever it holds
        assert_problem(response, 400)
        assert response.json()["type"] == "urn:housing-api:problem:json-not-utf8"
        return
    if response.status_code == 422:
        assert_problem(response, 422)
        assert response.json()["errors"], response.text
        return
    assert response.status_code in JSON_ROUTES[path], response.text
