"""JWT access tokens in the RFC 9068 profile: issue one, or decode one defensively.

:func:`decode_access_token` treats its input as hostile. It refuses anything large
or oddly shaped before parsing, reads the unverified header only to choose one of
*our* keys (the algorithm is ours, never the token's), lets python-jose check the
signature, audience and issuer, and then checks every claim itself. Whatever the
input, it returns claims or raises :class:`InvalidTokenError`, whose message is a
short machine reason and never contains the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, cast, get_args

from jose import jwt
from jose.backends.base import Key
from jose.exceptions import JWTClaimsError, JWTError

from auth.jwt_keys import SigningKeys
from auth.principal import PrincipalKind
from auth.scopes import ALL_SCOPES, UnknownScopeError, format_scopes, parse_scopes

MAX_TOKEN_BYTES: Final = 8 * 1024
TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 -- RFC 9068 §2.1 media type, not a secret
DEFAULT_LEEWAY_SECONDS: Final = 30
TOKEN_KINDS: Final[frozenset[str]] = frozenset(get_args(PrincipalKind))

# Three base64url segments and nothing else: python-jose's decoder would
# otherwise skip stray characters (base64.urlsafe_b64decode does not validate).
_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Exactly the header we write. Anything else, above all a key or a key URL an
# attacker could point at (jku, x5u, jwk, x5c) or a "crit" extension, is refused.
_ALLOWED_HEADER: Final = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS: Final = (
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
# The account the subject belongs to, written at issuance. Optional on the way in:
# tokens issued before accounts existed carry none, and the verifier reads the account
# from the store either way (the claim, when present, must name that very account).
ACCOUNT_CLAIM: Final = "acct"
# Claims python-jose checks itself once the signature holds. exp/iat/nbf are not
# here: ``require_exp`` would force jose's own wall-clock check (ignoring our
# ``now``), and jose accepts "123" or 1.5 as times; we check them strictly below.
_JOSE_OPTIONS: Final[dict[str, Any]] = {
    "verify_signature": True,
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_at_hash": False,
    "require_aud": True,
    "require_iss": True,
    "require_sub": True,
    "require_jti": True,
}


class InvalidTokenError(Exception):
    """A token we do not accept; ``reason`` is for logs and metrics, not for clients."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int  # epoch seconds
    scope: str  # RFC 6749 §3.3 space-separated, as in the token response


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    subject: str
    client_id: str
    scopes: frozenset[str]
    kind: PrincipalKind  # so Principal(kind=claims.kind, ...) needs no cast
    plan: str
    jti: str
    expires_at: int
    issued_at: int
    account: str | None = None  # the ``acct`` claim


def issue_access_token(
    keys: SigningKeys,
    *,
    subject: str,
    client_id: str,
    scopes: frozenset[str],
    kind: str,
    plan: str,
    issuer: str,
    audience: str,
    ttl_seconds: int,
    now: int | None = None,
    account: str | None = None,
) -> IssuedToken:
    """Sign an RFC 9068 access token with the current key; ``account`` goes in ``acct``."""
    unknown = scopes - ALL_SCOPES
    if unknown:
        raise UnknownScopeError(set(unknown))
    if kind not in TOKEN_KINDS:
        raise ValueError(f"kind must be one of {sorted(TOKEN_KINDS)}")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    for name, value in (("subject", subject), ("client_id", client_id), ("plan", plan)):
        if not value:
            raise ValueError(f"{name} must not be empty")
    if account is not None and not account:
        raise ValueError("account must not be empty")
    issued_at = int(time.time()) if now is None else now
    expires_at = issued_at + ttl_seconds
    jti = secrets.token_urlsafe(16)
    scope = format_scopes(scopes)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": expires_at,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
        "kind": kind,
        "plan": plan,
    }
    if account is not None:
        claims[ACCOUNT_CLAIM] = account
    token = jwt.encode(
        claims,
        keys.signer(),
        algorithm=keys.algorithm,
        headers={"typ": TOKEN_TYPE, "kid": keys.kid},
    )
    if len(token) > MAX_TOKEN_BYTES:
        raise ValueError("the token would exceed MAX_TOKEN_BYTES and be refused on use")
    return IssuedToken(token=token, jti=jti, expires_at=expires_at, scope=scope)


def decode_access_token(
    keys: SigningKeys,
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
    now: int | None = None,
) -> AccessTokenClaims:
    """Verify a presented access token; any failure is an :class:`InvalidTokenError`."""
    if leeway_seconds < 0:
        raise ValueError("leeway_seconds must not be negative")
    try:
        return _decode(
            keys, token, issuer=issuer, audience=audience, leeway=leeway_seconds, now=now
        )
    except InvalidTokenError:
        raise
    except Exception:  # hostile input must not find a path to a 500
        raise InvalidTokenError("malformed") from None


def _decode(
    keys: SigningKeys, token: object, *, issuer: str, audience: str, leeway: int, now: int | None
) -> AccessTokenClaims:
    if not isinstance(token, str | bytes):
        raise InvalidTokenError("malformed")
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidTokenError("too_large")
    text = token.decode("latin-1") if isinstance(token, bytes) else token
    if not text or _SHAPE.fullmatch(text) is None:
        raise InvalidTokenError("malformed")
    segments = text.split(".")
    for segment in segments:
        _b64url_decode(segment)  # canonical base64url only: one token, one spelling
    header = _parse_header(_b64url_decode(segments[0]))
    key = _select_key(keys, header)

    try:
        claims = jwt.decode(
            text,
            key,
            algorithms=[keys.algorithm],
            audience=audience,
            issuer=issuer,
            options={**_JOSE_OPTIONS, "leeway": leeway},
        )
    except JWTClaimsError as error:
        raise InvalidTokenError(_claims_reason(str(error))) from None
    except JWTError as error:
        raise InvalidTokenError(_jose_error_reason(str(error))) from None

    return _check_claims(claims, leeway=leeway, now=int(time.time()) if now is None else now)


def _b64url_decode(segment: str) -> bytes:
    if len(segment) % 4 == 1:
        raise InvalidTokenError("malformed")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTokenError("malformed") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise InvalidTokenError("malformed")  # stray trailing bits: a second spelling
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidTokenError("bad_header")
    return result


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except InvalidTokenError:
        raise
    except (ValueError, RecursionError):
        raise InvalidTokenError("malformed") from None
    if not isinstance(header, dict):
        raise InvalidTokenError("malformed")
    return header


def _select_key(keys: SigningKeys, header: dict[str, Any]) -> Key:
    """Our key for this header, or a refusal; the header never supplies key material."""
    if header.get("alg") != keys.algorithm:
        raise InvalidTokenError("bad_algorithm")  # "none", and RS256↔HS256 confusion
    if not _ALLOWED_HEADER.issuperset(header):
        raise InvalidTokenError("bad_header")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != TOKEN_TYPE:
        raise InvalidTokenError("wrong_type")  # RFC 9068 §4; RFC 7515 §4.1.9 casing
    kid = header.get("kid")
    key = keys.verifier(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidTokenError("unknown_kid")
    return key


def _jose_error_reason(message: str) -> str:
    """python-jose 3.5 has one JWTError for these; its messages are all that tell them apart."""
    if message.startswith("missing required key"):
        return "missing_claim"  # only raised after the signature held
    if message.startswith("Invalid payload string"):
        return "malformed"  # signed, but not a JSON object
    return "bad_signature"


def _claims_reason(message: str) -> str:
    if "audience" in message:
        return "wrong_audience"
    if "issuer" in message:
        return "wrong_issuer"
    return "invalid_claim"


def _check_claims(claims: dict[str, Any], *, leeway: int, now: int) -> AccessTokenClaims:
    for name in _REQUIRED_CLAIMS:
        if name not in claims:
            raise InvalidTokenError("missing_claim")
    expires_at = _numeric_date(claims["exp"])
    issued_at = _numeric_date(claims["iat"])
    not_before = _numeric_date(claims["nbf"])
    if now >= expires_at + leeway:  # RFC 7519 §4.1.4: "on or after" exp is expired
        raise InvalidTokenError("expired")
    if not_before > now + leeway or issued_at > now + leeway:
        raise InvalidTokenError("not_yet_valid")
    subject = _nonempty_str(claims["sub"])
    client_id = _nonempty_str(claims["client_id"])
    jti = _nonempty_str(claims["jti"])
    plan = _nonempty_str(claims["plan"])
    account = _nonempty_str(claims[ACCOUNT_CLAIM]) if ACCOUNT_CLAIM in claims else None
    kind = claims["kind"]
    if not isinstance(kind, str) or kind not in TOKEN_KINDS:
        raise InvalidTokenError("invalid_claim")
    scope = claims["scope"]
    if not isinstance(scope, str):
        raise InvalidTokenError("invalid_claim")
    try:
        scopes = parse_scopes(scope)
    except UnknownScopeError:
        raise InvalidTokenError("unknown_scope") from None
    return AccessTokenClaims(
        subject=subject,
        client_id=client_id,
        scopes=scopes,
        kind=cast(PrincipalKind, kind),
        plan=plan,
        jti=jti,
        expires_at=expires_at,
        issued_at=issued_at,
        account=account,
    )


def _numeric_date(value: object) -> int:
    """An integer epoch second; jose would also take "123", 1.5 or true."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTokenError("invalid_claim")
    return value


def _nonempty_str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidTokenError("invalid_claim")
    return value
