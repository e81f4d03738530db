"""Coverage-guided fuzzing (atheris, libFuzzer) of everything that parses a credential.

    .venv/bin/python fuzz/fuzz_credentials.py -max_total_time=120   # what `make fuzz` runs
    .venv/bin/python fuzz/fuzz_credentials.py CORPUS_DIR -runs=100000

The first input byte picks a parser; the rest is what an attacker sends:

0. ``auth.tokens.decode_access_token`` (text) against HS256 and ES256 keys
1. the same with raw bytes
2. ``auth.secrets.parse_api_key``
3. ``auth.oauth.client_credentials``: an ``Authorization`` header (any bytes)
   with form fields, as ``/token`` and ``/revoke`` read them

Oracles: a parser returns or raises only its documented refusal (``InvalidTokenError``,
``None``, ``OAuthError``); only the genuine token authenticates; an API key is accepted
only in its canonical form. Anything else is a crash that libFuzzer saves as
``crash-*`` with the input. Without a corpus directory the seeds (genuine token, key and
Basic header, and a dictionary of JOSE and HTTP words) go to var/fuzz/credentials/,
where the corpus keeps growing from run to run and crash inputs are saved.
"""

from __future__ import annotations

import base64
import re
import secrets
import sys
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - the Makefile says the same before running
    sys.exit("atheris is not installed: add atheris==3.0.0 to the dev extras (make install)")

with atheris.instrument_imports(include=["auth", "jose"]):
    from starlette.requests import Request

    from auth.jwt_keys import (
        SigningKeys,
        generate_private_key_pem,
        signing_keys_from_pem,
        signing_keys_from_secret,
    )
    from auth.oauth import ClientCredentials, OAuthError, client_credentials
    from auth.secrets import format_api_key, parse_api_key
    from auth.tokens import InvalidTokenError, decode_access_token, issue_access_token

ISSUER = AUDIENCE = "housing-api"
WORK = Path(__file__).resolve().parents[1] / "var" / "fuzz" / "credentials"
# Fresh keys for every run: tokens the corpus kept from earlier runs are well-formed
# but must fail their signature, like any other forgery.
KEYS: list[SigningKeys] = [
    signing_keys_from_secret(secrets.token_urlsafe(48).encode()),
    signing_keys_from_pem("ES256", generate_private_key_pem("ES256")),
]
GENUINE = {
    issue_access_token(
        keys,
        subject="cl_fuzzfuzzfuzzfuzz",
        client_id="cl_fuzzfuzzfuzzfuzz",
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl_seconds=86_400,
    ).token
    for keys in KEYS
}
API_KEY = format_api_key("abcdefghijkl", "A" * 43)
REASON = re.compile(r"[a-z_]{3,20}")
DICTIONARY = [
    "eyJ",
    ".",
    "=",
    "Bearer ",
    "Basic ",
    "hpa_",
    "_",
    ":",
    "%3A",
    '"alg"',
    '"none"',
    '"HS256"',
    '"ES256"',
    '"RS256"',
    '"typ"',
    '"at+jwt"',
    '"kid"',
    '"jku"',
    '"jwk"',
    '"crit"',
    '"exp"',
    '"nbf"',
    '"scope"',
]


def _decode(token: str | bytes) -> None:
    for keys in KEYS:
        try:
            claims = decode_access_token(keys, token, issuer=ISSUER, audience=AUDIENCE)
        except InvalidTokenError as error:
            if not REASON.fullmatch(error.reason):
                message = f"refusal reason is not a fixed word: {error.reason!r}"
                raise AssertionError(message) from None
            continue
        text = token.decode("latin-1") if isinstance(token, bytes) else token
        if text not in GENUINE:
            raise AssertionError(f"a forged token was accepted: {token!r}")
        if claims.subject != "cl_fuzzfuzzfuzzfuzz":
            raise AssertionError("a genuine token decoded to the wrong subject")


def _api_key(text: str) -> None:
    parsed = parse_api_key(text)
    if parsed is not None and format_api_key(*parsed) != text:
        raise AssertionError(f"a non-canonical API key was accepted: {text!r}")


def _basic(payload: bytes) -> None:
    header, _, rest = payload.partition(b"\n")
    names = ("client_id", "client_secret", "grant_type")
    form = {
        name: value.decode("utf-8", "replace")
        for name, value in zip(names, rest.split(b"\n"), strict=False)
    }
    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/token",
            "headers": [(b"authorization", header)],
        }
    )
    try:
        result = client_credentials(request.headers.get("authorization"), form)
    except OAuthError as error:
        if error.status not in (400, 401):
            raise AssertionError(f"unexpected OAuth status {error.status}") from None
        return
    if result is not None and not isinstance(result, ClientCredentials):
        raise AssertionError(f"unexpected result {result!r}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, payload = data[0] % 4, data[1:]
    if selector == 0:
        _decode(payload.decode("latin-1"))
    elif selector == 1:
        _decode(payload)
    elif selector == 2:
        _api_key(payload.decode("utf-8", "surrogateescape"))
    else:
        _basic(payload)


def _seed_corpus(directory: Path) -> None:
    basic = base64.b64encode(b"cl_fuzzfuzzfuzzfuzz:secret")
    seeds = [
        *(b"\x00" + token.encode() for token in GENUINE),
        *(b"\x01" + token.encode() for token in GENUINE),
        b"\x02" + API_KEY.encode(),
        b"\x03Basic " + basic + b"\ncl_fuzzfuzzfuzzfuzz\nsecret\nclient_credentials",
        b"\x03Bearer x\n\n",
    ]
    for number, seed in enumerate(seeds):
        (directory / f"seed-{number}").write_bytes(seed)


def main() -> None:
    """libFuzzer's own flags pass through; the corpus (which grows with every run) and
    any crash inputs are kept under var/fuzz/credentials/ unless told otherwise."""
    arguments = list(sys.argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if not any(not arg.startswith("-") for arg in arguments[1:]):
        corpus = WORK / "corpus"
        corpus.mkdir(exist_ok=True)
        _seed_corpus(corpus)
        arguments.append(str(corpus))
    if not any(arg.startswith("-dict=") for arg in arguments):
        dictionary = WORK / "jose.dict"
        dictionary.write_text("".join(f'"{_escape(w)}"\n' for w in DICTIONARY))
        arguments.append(f"-dict={dictionary}")
    if not any(arg.startswith("-artifact_prefix=") for arg in arguments):
        arguments.append(f"-artifact_prefix={WORK}/")
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()


def _escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace('"', '\\"')


if __name__ == "__main__":
    main()
