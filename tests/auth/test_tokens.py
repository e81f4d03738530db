"""Access tokens from the attacker's side: each forgery or mistake is its own test.

Tokens are forged by hand (header and payload as JSON, signed with a real key)
so that every test changes exactly one thing about an otherwise valid token.
Nothing is mocked: python-jose and cryptography do the real work.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jose import jwk, jwt

from auth.jwt_keys import (
    SigningKeys,
    generate_private_key_pem,
    public_key_pem,
    signing_keys_from_pem,
    signing_keys_from_secret,
)
from auth.scopes import UnknownScopeError
from auth.tokens import (
    MAX_TOKEN_BYTES,
    AccessTokenClaims,
    InvalidTokenError,
    decode_access_token,
    issue_access_token,
)

ISSUER = "housing-api"
AUDIENCE = "housing-api"
NOW = 1_700_000_000
TTL = 900
ALGORITHMS = ("HS256", "ES256", "RS256")
REQUIRED_CLAIMS = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "client_id",
    "scope",
    "kind",
    "plan",
)


# --- helpers -------------------------------------------------------------------


@functools.cache
def private_pem(algorithm: str, n: int = 0) -> bytes:
    """Key generation is slow for RSA: one key per (algorithm, n) for the session."""
    assert algorithm in ("RS256", "ES256")
    return generate_private_key_pem(algorithm)  # type: ignore[arg-type]


@functools.cache
def make_keys(algorithm: str, n: int = 0) -> SigningKeys:
    if algorithm == "HS256":
        return signing_keys_from_secret(f"test-secret-{n}-".encode() + b"x" * 40)
    return signing_keys_from_pem(algorithm, private_pem(algorithm, n))  # type: ignore[arg-type]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def valid_header(keys: SigningKeys) -> dict[str, Any]:
    return {"alg": keys.algorithm, "typ": "at+jwt", "kid": keys.kid}


def valid_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-1",
        "aud": AUDIENCE,
        "exp": NOW + TTL,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-1",
        "client_id": "client-1",
        "scope": "predict",
        "kind": "client",
        "plan": "default",
    }
    claims.update(overrides)
    return claims


def forge(
    keys: SigningKeys,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """A token signed by ``keys``' real signing key, with any header and claims."""
    signing_input = (
        f"{b64url_json(header or valid_header(keys))}.{b64url_json(claims or valid_claims())}"
    )
    signature = keys.signer().sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def decode(keys: SigningKeys, token: str, **kwargs: Any) -> AccessTokenClaims:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW}
    options.update(kwargs)
    return decode_access_token(keys, token, **options)


def assert_refused(keys: SigningKeys, token: str, reason: str | set[str], **kwargs: Any) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        decode(keys, token, **kwargs)
    expected = {reason} if isinstance(reason, str) else reason
    assert caught.value.reason in expected
    # The message is the reason alone: never the token, and no chained jose error.
    assert str(caught.value) == caught.value.reason
    if token:
        assert token not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def issue(keys: SigningKeys, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "subject": "client-1",
        "client_id": "client-1",
        "scopes": frozenset({"predict", "models:read"}),
        "kind": "client",
        "plan": "default",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "ttl_seconds": TTL,
        "now": NOW,
    }
    arguments.update(overrides)
    return issue_access_token(keys, **arguments).token


@pytest.fixture(params=ALGORITHMS)
def keys(request: pytest.FixtureRequest) -> SigningKeys:
    return make_keys(request.param)


@pytest.fixture(params=("ES256", "RS256"))
def asymmetric_keys(request: pytest.FixtureRequest) -> SigningKeys:
    return make_keys(request.param)


# --- the happy path ----------------------------------------------------------------


def test_round_trip(keys: SigningKeys) -> None:
    issued = issue_access_token(
        keys,
        subject="alice",
        client_id="docs-ui",
        scopes=frozenset({"predict", "metrics"}),
        kind="user",
        plan="gold",
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_seconds=TTL,
        now=NOW,
    )
    assert issued.expires_at == NOW + TTL
    assert issued.scope == "metrics predict"

    claims = decode(keys, issued.token)

    assert claims == AccessTokenClaims(
        subject="alice",
        client_id="docs-ui",
        scopes=frozenset({"predict", "metrics"}),
        kind="user",
        plan="gold",
        jti=issued.jti,
        expires_at=NOW + TTL,
        issued_at=NOW,
    )


def test_issued_header_is_rfc9068(keys: SigningKeys) -> None:
    token = issue(keys)

    assert jwt.get_unverified_header(token) == {
        "alg": keys.algorithm,
        "typ": "at+jwt",
        "kid": keys.kid,
    }
    claims = jwt.get_unverified_claims(token)
    assert set(claims) == set(REQUIRED_CLAIMS)
    assert claims["nbf"] == claims["iat"] == NOW


def test_each_token_gets_a_fresh_jti(keys: SigningKeys) -> None:
    assert decode(keys, issue(keys)).jti != decode(keys, issue(keys)).jti


def test_decode_uses_the_wall_clock_by_default(keys: SigningKeys) -> None:
    token = issue(keys, now=None)

    assert decode_access_token(keys, token, issuer=ISSUER, audience=AUDIENCE).scopes


def test_typ_is_compared_as_a_media_type(keys: SigningKeys) -> None:
    for typ in ("AT+JWT", "application/at+jwt", "Application/AT+JWT"):
        header = {**valid_header(keys), "typ": typ}
        assert decode(keys, forge(keys, header=header)).subject == "client-1"


def test_audience_list_containing_ours_is_accepted(keys: SigningKeys) -> None:
    token = forge(keys, claims=valid_claims(aud=["other-api", AUDIENCE]))

    assert decode(keys, token).subject == "client-1"


# --- issuing refuses nonsense -----------------------------------------------------


def test_issue_refuses_an_unknown_scope(keys: SigningKeys) -> None:
    with pytest.raises(UnknownScopeError):
        issue(keys, scopes=frozenset({"predict", "root"}))


@pytest.mark.parametrize(
    "overrides",
    [{"kind": "robot"}, {"ttl_seconds": 0}, {"subject": ""}, {"client_id": ""}, {"plan": ""}],
)
def test_issue_refuses_invalid_arguments(keys: SigningKeys, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        issue(keys, **overrides)


# --- algorithm attacks ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_refused(keys: SigningKeys, alg: str) -> None:
    header = {**valid_header(keys), "alg": alg}
    unsigned = f"{b64url_json(header)}.{b64url_json(valid_claims())}."
    with_junk_signature = unsigned + "AAAA"

    assert_refused(keys, unsigned, "malformed")  # an empty signature segment
    assert_refused(keys, with_junk_signature, "bad_algorithm")


def test_missing_alg_is_refused(keys: SigningKeys) -> None:
    header = {"typ": "at+jwt", "kid": keys.kid}

    assert_refused(keys, forge(keys, header=header), "bad_algorithm")


def test_hs256_signed_with_the_public_key_is_refused(asymmetric_keys: SigningKeys) -> None:
    """The classic confusion: an RS256/ES256 public key used as an HMAC secret."""
    keys = asymmetric_keys
    public_pem = keys.verification_keys[keys.kid]
    header = {"alg": "HS256", "typ": "at+jwt", "kid": keys.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(valid_claims(scope='admin'))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"

    assert_refused(keys, token, "bad_algorithm")


def test_hmac_signature_under_the_configured_alg_is_refused(asymmetric_keys: SigningKeys) -> None:
    """The same forgery with the header claiming our algorithm fails the signature."""
    keys = asymmetric_keys
    public_pem = keys.verification_keys[keys.kid]
    signing_input = f"{b64url_json(valid_header(keys))}.{b64url_json(valid_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()

    assert_refused(keys, f"{signing_input}.{b64url(mac)}", "bad_signature")


@pytest.mark.parametrize(
    ("token_alg", "verifier_alg"),
    [
        ("ES256", "HS256"),
        ("RS256", "HS256"),
        ("RS256", "ES256"),
        ("ES256", "RS256"),
        ("HS256", "RS256"),
    ],
)
def test_token_of_another_algorithm_is_refused(token_alg: str, verifier_alg: str) -> None:
    token = issue(make_keys(token_alg))

    assert_refused(make_keys(verifier_alg), token, "bad_algorithm")


def test_alg_that_our_key_type_cannot_do_is_refused(keys: SigningKeys) -> None:
    for alg in ("HS512", "RS512", "ES384", "PS256", "EdDSA", "dir", "HS2", "RS"):
        if alg != keys.algorithm:
            header = {**valid_header(keys), "alg": alg}
            assert_refused(keys, forge(keys, header=header), "bad_algorithm")


# --- tampering and foreign keys --------------------------------------------------------


def test_tampered_payload_is_refused(keys: SigningKeys) -> None:
    header, payload, signature = issue(keys).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "predict models:read admin"
    tampered = f"{header}.{b64url_json(claims)}.{signature}"

    assert_refused(keys, tampered, "bad_signature")


def test_tampered_signature_is_refused(keys: SigningKeys) -> None:
    header, payload, signature = issue(keys).split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]

    assert_refused(keys, f"{header}.{payload}.{flipped}", "bad_signature")


def test_truncated_signature_is_refused(keys: SigningKeys) -> None:
    header, payload, signature = issue(keys).split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))

    assert_refused(keys, f"{header}.{payload}.{b64url(raw[:-1])}", "bad_signature")


def test_signature_with_stray_trailing_bits_is_refused(keys: SigningKeys) -> None:
    """base64url has two spellings for the last character; only the canonical one counts."""
    header, payload, signature = issue(keys).split(".")
    assert len(signature) % 4 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = signature[:-1] + alphabet[alphabet.index(signature[-1]) + 1]

    assert_refused(keys, f"{header}.{payload}.{twin}", "malformed")


def test_token_from_another_key_is_refused(keys: SigningKeys) -> None:
    stranger = make_keys(keys.algorithm, 1)

    assert_refused(keys, issue(stranger), "unknown_kid")


def test_another_key_claiming_our_kid_is_refused(keys: SigningKeys) -> None:
    stranger = make_keys(keys.algorithm, 1)

    assert_refused(keys, forge(stranger, header=valid_header(keys)), "bad_signature")


# --- the header names only our own keys --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ("crit", ["exp"]),
        ("cty", "JWT"),
        ("b64", False),
        ("zip", "DEF"),
    ],
)
def test_key_bearing_or_unknown_headers_are_refused(
    keys: SigningKeys, name: str, value: Any
) -> None:
    header = {**valid_header(keys), name: value}

    assert_refused(keys, forge(keys, header=header), "bad_header")


def test_embedded_jwk_header_is_refused(keys: SigningKeys) -> None:
    """The attacker signs with their own key and ships its public half in the header."""
    attacker = make_keys("ES256", 2)
    attacker_jwk = attacker.jwks()["keys"][0]
    header = {**valid_header(keys), "alg": "ES256", "jwk": attacker_jwk}
    if keys.algorithm == "ES256":
        header["kid"] = attacker.kid

    token = forge(attacker, header=header)

    expected = "bad_header" if keys.algorithm == "ES256" else "bad_algorithm"
    assert_refused(keys, token, expected)


def test_duplicate_header_members_are_refused(keys: SigningKeys) -> None:
    raw = f'{{"alg":"{keys.algorithm}","alg":"none","typ":"at+jwt","kid":"{keys.kid}"}}'
    signing_input = f"{b64url(raw.encode())}.{b64url_json(valid_claims())}"
    token = f"{signing_input}.{b64url(keys.signer().sign(signing_input.encode()))}"

    assert_refused(keys, token, "bad_header")


@pytest.mark.parametrize(
    "kid", ["no-such-kid", "", None, 1, ["x"], {"kid": "x"}, "../../etc/passwd"]
)
def test_unknown_kid_is_refused(keys: SigningKeys, kid: Any) -> None:
    header = {**valid_header(keys), "kid": kid}

    assert_refused(keys, forge(keys, header=header), "unknown_kid")


def test_missing_kid_is_refused(keys: SigningKeys) -> None:
    header = {"alg": keys.algorithm, "typ": "at+jwt"}

    assert_refused(keys, forge(keys, header=header), "unknown_kid")


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "", "at+jwt ", "application/jwt", "id+jwt", 1])
def test_wrong_typ_is_refused(keys: SigningKeys, typ: Any) -> None:
    """RFC 9068 §4: an ID token or a plain JWT must not pass for an access token."""
    header = {**valid_header(keys), "typ": typ}

    assert_refused(keys, forge(keys, header=header), "wrong_type")


def test_missing_typ_is_refused(keys: SigningKeys) -> None:
    header = {"alg": keys.algorithm, "kid": keys.kid}

    assert_refused(keys, forge(keys, header=header), "wrong_type")


# --- claims ----------------------------------------------------------------------------


def test_wrong_issuer_is_refused(keys: SigningKeys) -> None:
    assert_refused(keys, issue(keys, issuer="https://evil.example"), "wrong_issuer")


def test_wrong_audience_is_refused(keys: SigningKeys) -> None:
    assert_refused(keys, issue(keys, audience="another-api"), "wrong_audience")


def test_issuer_and_audience_are_case_sensitive(keys: SigningKeys) -> None:
    assert_refused(keys, issue(keys, issuer=ISSUER.upper()), "wrong_issuer")
    assert_refused(keys, issue(keys, audience=AUDIENCE.upper()), "wrong_audience")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_claim_is_refused(keys: SigningKeys, claim: str) -> None:
    claims = valid_claims()
    del claims[claim]

    assert_refused(keys, forge(keys, claims=claims), "missing_claim")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", str(NOW + TTL)),
        ("exp", NOW + TTL + 0.5),
        ("exp", True),
        ("exp", None),
        ("iat", "now"),
        ("nbf", [NOW]),
        ("sub", 42),
        ("sub", ""),
        ("jti", 7),
        ("client_id", None),
        ("scope", ["predict"]),
        ("kind", "superuser"),
        ("kind", ["client"]),
        ("plan", {"tier": "gold"}),
        ("aud", 5),
        ("aud", [AUDIENCE, 5]),
    ],
)
def test_claim_of_the_wrong_type_is_refused(keys: SigningKeys, claim: str, value: Any) -> None:
    token = forge(keys, claims=valid_claims(**{claim: value}))

    assert_refused(keys, token, "invalid_claim")


def test_payload_that_is_not_an_object_is_refused(keys: SigningKeys) -> None:
    signing_input = f"{b64url_json(valid_header(keys))}.{b64url_json(['predict'])}"
    token = f"{signing_input}.{b64url(keys.signer().sign(signing_input.encode()))}"

    assert_refused(keys, token, "malformed")


@pytest.mark.parametrize("scope", ["predict superuser", "admin,root", "PREDICT"])
def test_unknown_scope_is_refused(keys: SigningKeys, scope: str) -> None:
    assert_refused(keys, forge(keys, claims=valid_claims(scope=scope)), "unknown_scope")


def test_empty_scope_is_a_token_that_can_do_nothing(keys: SigningKeys) -> None:
    assert decode(keys, forge(keys, claims=valid_claims(scope=""))).scopes == frozenset()


# --- time ----------------------------------------------------------------------------------


def test_expired_beyond_leeway_is_refused(keys: SigningKeys) -> None:
    token = issue(keys)

    assert_refused(keys, token, "expired", now=NOW + TTL + 30)
    assert_refused(keys, token, "expired", now=NOW + TTL + 3600)


def test_expired_within_leeway_is_accepted(keys: SigningKeys) -> None:
    assert decode(keys, issue(keys), now=NOW + TTL + 29).subject == "client-1"


def test_expiry_instant_itself_is_expired_without_leeway(keys: SigningKeys) -> None:
    """RFC 7519 §4.1.4: the token must not be accepted "on or after" exp."""
    token = issue(keys)

    assert decode(keys, token, now=NOW + TTL - 1, leeway_seconds=0).subject == "client-1"
    assert_refused(keys, token, "expired", now=NOW + TTL, leeway_seconds=0)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_or_iat_beyond_leeway_is_refused(keys: SigningKeys, claim: str) -> None:
    token = forge(keys, claims=valid_claims(**{claim: NOW + 31}))

    assert_refused(keys, token, "not_yet_valid")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_future_nbf_or_iat_within_leeway_is_accepted(keys: SigningKeys, claim: str) -> None:
    token = forge(keys, claims=valid_claims(**{claim: NOW + 30}))

    assert decode(keys, token).subject == "client-1"


def test_token_issued_in_the_future_is_refused(keys: SigningKeys) -> None:
    """A clock far ahead on the issuer (or a forged iat) must not pre-date tokens."""
    assert_refused(keys, issue(keys, now=NOW + 3600), "not_yet_valid")


def test_negative_leeway_is_a_programming_error(keys: SigningKeys) -> None:
    with pytest.raises(ValueError, match="leeway"):
        decode(keys, issue(keys), leeway_seconds=-1)


# --- size and shape ------------------------------------------------------------------------


def test_oversized_token_is_refused_before_parsing(keys: SigningKeys) -> None:
    """Even a genuinely signed token is refused unread once it is over 8 KiB."""
    token = forge(keys, claims=valid_claims(plan="p" * MAX_TOKEN_BYTES))
    assert len(token) > MAX_TOKEN_BYTES

    assert_refused(keys, token, "too_large")


@pytest.mark.parametrize("size", [MAX_TOKEN_BYTES + 1, 1024 * 1024])
def test_oversized_garbage_is_refused_as_too_large(keys: SigningKeys, size: int) -> None:
    assert_refused(keys, "!" * size, "too_large")  # not "malformed": size comes first


def test_oversized_bytes_are_refused_as_too_large(keys: SigningKeys) -> None:
    with pytest.raises(InvalidTokenError, match=r"^too_large$"):
        decode(keys, b"\xff" * (MAX_TOKEN_BYTES + 1))  # type: ignore[arg-type]


def test_issue_refuses_to_mint_an_oversized_token(keys: SigningKeys) -> None:
    with pytest.raises(ValueError, match="MAX_TOKEN_BYTES"):
        issue(keys, subject="s" * MAX_TOKEN_BYTES)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "null",
        "Bearer",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "a.b.c.d.e",
        "...",
        "..",
        "ünïcödé.ünïcödé.ünïcödé",
        "eyJ.eyJ.\u0000",
        "eyJhbGciOiJIUzI1NiJ9.e30.e30=",
        "eyJhbGciOiJIUzI1NiJ9.e30.e30\n",
        " eyJhbGciOiJIUzI1NiJ9.e30.e30",
        "eyJhbGciOiJIUzI1NiJ9 .e30.e30",
        "eyJhbGciOiJIUzI1NiJ9.e30+/.e30",
        "W10.e30.e30",  # header is a JSON array
        "bnVsbA.e30.e30",  # header is JSON null
        "e30.e30.e30",  # header {} has no alg
        "ew.e30.e30",  # header is "{" alone
        "_w.e30.e30",  # header is not UTF-8
        "A.e30.e30",  # a segment of length 1 mod 4 is never base64
    ],
)
def test_garbage_is_refused(keys: SigningKeys, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        decode(keys, garbage)


@pytest.mark.parametrize("value", [None, 42, ["a.b.c"], {"token": "a.b.c"}, b"a.b.c"])
def test_non_string_input_is_refused(keys: SigningKeys, value: Any) -> None:
    with pytest.raises(InvalidTokenError):
        decode(keys, value)


def test_whitespace_around_a_valid_token_is_refused(keys: SigningKeys) -> None:
    """Stripping is the transport's job; the verifier accepts one exact spelling."""
    token = issue(keys)

    for variant in (f" {token}", f"{token}\n", f"{token} ", f"Bearer {token}"):
        assert_refused(keys, variant, "malformed")


def test_deeply_nested_header_is_refused(keys: SigningKeys) -> None:
    header = b64url(b"[" * 6000)

    assert_refused(keys, f"{header}.e30.e30", "malformed")


# --- key rotation --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_previous_key_still_verifies_during_rotation(algorithm: str) -> None:
    old = make_keys(algorithm, 0)
    old_token = issue(old)
    rotated = signing_keys_from_pem(
        algorithm,  # type: ignore[arg-type]
        private_pem(algorithm, 1),
        previous_public_pems=[public_key_pem(private_pem(algorithm, 0))],
    )

    assert rotated.kid != old.kid
    assert decode(rotated, old_token).subject == "client-1"
    assert decode(rotated, issue(rotated)).subject == "client-1"
    assert jwt.get_unverified_header(issue(rotated))["kid"] == rotated.kid


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_removed_key_no_longer_verifies(algorithm: str) -> None:
    old_token = issue(make_keys(algorithm, 0))
    after_rotation = make_keys(algorithm, 1)  # the previous key is no longer listed

    assert_refused(after_rotation, old_token, "unknown_kid")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_previous_key_cannot_sign_new_tokens_in_its_name(algorithm: str) -> None:
    """Only the public half is kept: a token claiming the current kid but signed by the
    previous key is refused."""
    old = make_keys(algorithm, 0)
    rotated = signing_keys_from_pem(
        algorithm,  # type: ignore[arg-type]
        private_pem(algorithm, 1),
        previous_public_pems=[public_key_pem(private_pem(algorithm, 0))],
    )

    assert_refused(rotated, forge(old, header=valid_header(rotated)), "bad_signature")


# --- the JWKS is enough for an outside verifier ---------------------------------------------


def test_jwks_verifies_our_tokens_with_plain_jose(asymmetric_keys: SigningKeys) -> None:
    keys = asymmetric_keys
    token = issue(keys)
    (entry,) = keys.jwks()["keys"]

    claims = jwt.decode(
        token,
        jwk.construct(entry, entry["alg"]),
        algorithms=[entry["alg"]],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )

    assert claims["sub"] == "client-1"


# --- properties: nothing arbitrary ever authenticates ------------------------------------------


def _must_refuse(keys: SigningKeys, value: Any) -> None:
    with pytest.raises(InvalidTokenError, match=r"^[a-z_]+$"):
        decode(keys, value)


_fast = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_fast
@given(
    value=st.one_of(st.text(max_size=400), st.binary(max_size=400)),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_arbitrary_input_only_raises_invalid_token(value: str | bytes, algorithm: str) -> None:
    _must_refuse(make_keys(algorithm), value)


_b64_segment = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=1,
    max_size=80,
)


@_fast
@given(
    parts=st.tuples(_b64_segment, _b64_segment, _b64_segment), algorithm=st.sampled_from(ALGORITHMS)
)
def test_arbitrary_well_shaped_tokens_are_refused(
    parts: tuple[str, str, str], algorithm: str
) -> None:
    _must_refuse(make_keys(algorithm), ".".join(parts))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@_fast
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "jku", "jwk", "crit", "x"]), _json_values, max_size=5
    ),
    claims=_json_values,
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_arbitrary_json_with_a_junk_signature_is_refused(
    header: dict[str, Any], claims: Any, algorithm: str
) -> None:
    token = f"{b64url_json(header)}.{b64url_json(claims)}.{b64url(b'not a signature')}"
    _must_refuse(make_keys(algorithm), token)


@_fast
@given(data=st.data(), algorithm=st.sampled_from(ALGORITHMS))
def test_any_single_character_change_to_a_valid_token_is_refused(
    data: st.DataObject, algorithm: str
) -> None:
    keys = make_keys(algorithm)
    token = issue(keys)
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[position]))
    _must_refuse(keys, token[:position] + replacement + token[position + 1 :])


@_fast
@given(
    claims=st.fixed_dictionaries(
        {},
        optional={name: _json_values for name in REQUIRED_CLAIMS},
    ),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_genuinely_signed_junk_claims_only_raise_invalid_token(
    claims: dict[str, Any], algorithm: str
) -> None:
    """Even with our own signature, malformed claims are an InvalidTokenError, never a crash."""
    keys = make_keys(algorithm)
    with contextlib.suppress(InvalidTokenError):
        decode(keys, forge(keys, claims=claims or {"x": 1}))
