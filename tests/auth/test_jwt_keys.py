"""Signing keys: what gets published, how the kid is made, and what refuses to start."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from auth.errors import ConfigError
from auth.jwt_keys import (
    DEV_SECRET_FILENAME,
    KNOWN_PLACEHOLDER_SECRETS,
    SigningKeys,
    generate_private_key_pem,
    jwk_thumbprint,
    load_signing_keys,
    public_key_pem,
    signing_keys_from_pem,
    signing_keys_from_secret,
)

STRONG_SECRET = "q7Gx2mVbN9pLs4Rt8WzK1yHc6JdF3eUa0oQiTnB5vXw"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


@functools.cache
def private_pem(algorithm: str, n: int = 0) -> bytes:
    return generate_private_key_pem(algorithm)  # type: ignore[arg-type]


def pem_of(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def write_key(path: Path, pem: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(pem)
    path.chmod(mode)
    return path


def load(tmp_path: Path, **overrides: Any) -> SigningKeys:
    arguments: dict[str, Any] = {
        "algorithm": "HS256",
        "secret_key": None,
        "private_key_file": None,
        "previous_public_key_file": None,
        "var_dir": tmp_path / "var",
        "production": False,
    }
    arguments.update(overrides)
    return load_signing_keys(**arguments)


def refusal(tmp_path: Path, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **overrides)
    message = str(caught.value)
    assert message
    assert caught.value.__cause__ is None
    return message


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- JWKS and kid ------------------------------------------------------------------


def test_kid_follows_rfc7638_example() -> None:
    """RFC 7638 §3.1, the worked example."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    example = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}

    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_kid_is_the_thumbprint_of_the_published_key(algorithm: str) -> None:
    keys = signing_keys_from_pem(algorithm, private_pem(algorithm))  # type: ignore[arg-type]
    (entry,) = keys.jwks()["keys"]

    assert entry["kid"] == keys.kid == jwk_thumbprint(entry)


def test_es256_kid_computed_independently() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    point = private_key.public_key().public_numbers()
    canonical = (
        f'{{"crv":"P-256","kty":"EC","x":"{b64url(point.x.to_bytes(32, "big"))}",'
        f'"y":"{b64url(point.y.to_bytes(32, "big"))}"}}'
    )

    keys = signing_keys_from_pem("ES256", pem_of(private_key))

    assert keys.kid == b64url(hashlib.sha256(canonical.encode()).digest())


def test_hs256_kid_is_the_thumbprint_of_the_oct_key() -> None:
    secret = STRONG_SECRET.encode()
    canonical = json.dumps({"k": b64url(secret), "kty": "oct"}, separators=(",", ":"))

    keys = signing_keys_from_secret(secret)

    assert keys.kid == b64url(hashlib.sha256(canonical.encode()).digest())


def test_hs256_publishes_an_empty_jwks() -> None:
    assert signing_keys_from_secret(STRONG_SECRET.encode()).jwks() == {"keys": []}


def test_es256_jwks_has_public_members_only() -> None:
    keys = signing_keys_from_pem("ES256", private_pem("ES256"))
    (entry,) = keys.jwks()["keys"]

    assert set(entry) == {"kty", "crv", "x", "y", "alg", "use", "kid"}
    assert entry["kty"] == "EC"
    assert entry["crv"] == "P-256"
    assert entry["alg"] == "ES256"
    assert entry["use"] == "sig"
    assert len(base64.urlsafe_b64decode(entry["x"] + "==")) == 32


def test_rs256_jwks_has_public_members_only() -> None:
    keys = signing_keys_from_pem("RS256", private_pem("RS256"))
    (entry,) = keys.jwks()["keys"]

    assert set(entry) == {"kty", "n", "e", "alg", "use", "kid"}
    assert (entry["kty"], entry["e"], entry["alg"], entry["use"]) == ("RSA", "AQAB", "RS256", "sig")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_jwks_contains_no_private_material(algorithm: str) -> None:
    pem = private_pem(algorithm)
    keys = signing_keys_from_pem(
        algorithm,  # type: ignore[arg-type]
        pem,
        previous_public_pems=[public_key_pem(private_pem(algorithm, 1))],
    )
    document = keys.jwks()
    text = json.dumps(document)

    assert len(document["keys"]) == 2
    for entry in document["keys"]:
        assert not PRIVATE_JWK_MEMBERS & set(entry)
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        secret_value = key.private_numbers().d
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        secret_value = key.private_numbers().private_value
    secret_b64 = b64url(secret_value.to_bytes((secret_value.bit_length() + 7) // 8, "big"))
    assert secret_b64 not in text
    assert "PRIVATE" not in text


def test_jwks_is_a_copy() -> None:
    keys = signing_keys_from_pem("ES256", private_pem("ES256"))
    keys.jwks()["keys"][0]["kid"] = "tampered"
    keys.jwks()["keys"].clear()

    assert keys.jwks()["keys"][0]["kid"] == keys.kid


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    secret_keys = signing_keys_from_secret(STRONG_SECRET.encode())
    pem_keys = signing_keys_from_pem("ES256", private_pem("ES256"))

    assert STRONG_SECRET not in repr(secret_keys)
    assert "PRIVATE" not in repr(pem_keys)
    assert secret_keys.kid in repr(secret_keys)


def test_verification_keys_cannot_be_changed_after_loading() -> None:
    keys = signing_keys_from_pem("ES256", private_pem("ES256"))

    with pytest.raises(TypeError):
        keys.verification_keys["attacker"] = b"key"  # type: ignore[index]


def test_a_kid_that_is_not_the_thumbprint_is_rejected() -> None:
    genuine = signing_keys_from_secret(STRONG_SECRET.encode())

    with pytest.raises(ValueError, match="thumbprint"):
        SigningKeys(
            algorithm="HS256",
            signing_key=genuine.signing_key,
            kid="chosen-kid",
            verification_keys={"chosen-kid": genuine.signing_key},
        )


def test_private_keys_are_not_accepted_as_verification_keys() -> None:
    genuine = signing_keys_from_pem("ES256", private_pem("ES256"))

    with pytest.raises(ValueError, match="public"):
        SigningKeys(
            algorithm="ES256",
            signing_key=genuine.signing_key,
            kid=genuine.kid,
            verification_keys={genuine.kid: genuine.signing_key},
        )


# --- generate_private_key_pem ------------------------------------------------------------


def test_generated_rsa_key_is_2048_bits() -> None:
    key = serialization.load_pem_private_key(private_pem("RS256"), password=None)

    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_generated_ec_key_is_p256() -> None:
    key = serialization.load_pem_private_key(private_pem("ES256"), password=None)

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)


def test_no_private_key_for_hs256() -> None:
    with pytest.raises(ValueError, match="HS256"):
        generate_private_key_pem("HS256")  # type: ignore[arg-type]


# --- HS256 in development ----------------------------------------------------------------


def test_dev_secret_is_created_private(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the mode must not depend on a lax umask
    try:
        keys = load(tmp_path)
    finally:
        os.umask(old_umask)

    path = tmp_path / "var" / DEV_SECRET_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 64
    assert keys.signing_key == secret.encode()
    assert [p.name for p in path.parent.iterdir()] == [DEV_SECRET_FILENAME]  # no temp file left


def test_dev_secret_is_reused_on_later_starts(tmp_path: Path) -> None:
    first = load(tmp_path)
    second = load(tmp_path)

    assert second.kid == first.kid
    assert second.signing_key == first.signing_key


def test_workers_starting_together_agree_on_one_dev_secret(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        kids = set(pool.map(lambda _: load(tmp_path).kid, range(16)))

    assert len(kids) == 1


def test_damaged_dev_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / DEV_SECRET_FILENAME).write_text("short\n")

    message = refusal(tmp_path)

    assert "delete it" in message
    assert "short" not in message.replace("shorter", "")


def test_unwritable_var_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the directory should be")

    message = refusal(tmp_path)

    assert "JWT_SECRET_KEY" in message


def test_explicit_secret_is_used_in_development(tmp_path: Path) -> None:
    keys = load(tmp_path, secret_key="dev-only")

    assert keys.signing_key == b"dev-only"
    assert not (tmp_path / "var").exists()


def test_blank_secret_counts_as_unset_in_development(tmp_path: Path) -> None:
    load(tmp_path, secret_key="   ")

    assert (tmp_path / "var" / DEV_SECRET_FILENAME).exists()


def test_pem_as_hmac_secret_is_refused(tmp_path: Path) -> None:
    pem = public_key_pem(private_pem("RS256")).decode()

    message = refusal(tmp_path, secret_key=pem)

    assert "JWT_SECRET_KEY" in message
    assert "RS256" in message
    assert pem not in message


# --- HS256 in production -------------------------------------------------------------------


def test_strong_secret_is_accepted_in_production(tmp_path: Path) -> None:
    keys = load(tmp_path, secret_key=STRONG_SECRET, production=True)

    assert keys.signing_key == STRONG_SECRET.encode()
    assert not (tmp_path / "var").exists()  # production never writes a fallback secret


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_missing_secret_is_refused_in_production(tmp_path: Path, secret: str | None) -> None:
    message = refusal(tmp_path, secret_key=secret, production=True)

    assert "JWT_SECRET_KEY" in message
    assert "required" in message
    assert not (tmp_path / "var").exists()


def test_short_secret_is_refused_in_production(tmp_path: Path) -> None:
    secret = STRONG_SECRET[:31]

    message = refusal(tmp_path, secret_key=secret, production=True)

    assert "JWT_SECRET_KEY" in message
    assert "31 bytes" in message
    assert "32" in message
    assert secret not in message


def test_32_byte_secret_is_the_minimum(tmp_path: Path) -> None:
    assert load(tmp_path, secret_key=STRONG_SECRET[:32], production=True).signing_key


def test_length_is_counted_in_bytes(tmp_path: Path) -> None:
    """16 two-byte characters are 32 bytes: the entropy is what counts, not glyphs."""
    secret = "ÄäÖöÜüßéèêëàâçñø"

    assert len(secret) == 16
    assert load(tmp_path, secret_key=secret, production=True).signing_key == secret.encode()


@pytest.mark.parametrize(
    "secret",
    [
        "changeme",
        "CHANGEME",
        "secret",
        "change-me-in-production",
        "your-secret-key",
        "your-256-bit-secret",
        "CHANGE_THIS_TO_A_LONG_RANDOM_STRING_0123456789",
        "ChangeMe-please-0123456789abcdefghijklmnop",
        "this-is-a-placeholder-value-0123456789abcdef",
        "for-example-0123456789abcdefghijklmnopqrstuv",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
    ],
)
def test_placeholder_secret_is_refused_in_production(tmp_path: Path, secret: str) -> None:
    message = refusal(tmp_path, secret_key=secret, production=True)

    assert "JWT_SECRET_KEY" in message
    assert "placeholder" in message
    assert repr(secret) not in message
    if len(secret) > 8:  # shorter ones ("secret") occur in the advice itself
        assert secret.casefold() not in message.casefold()


def test_every_listed_placeholder_is_refused(tmp_path: Path) -> None:
    for secret in KNOWN_PLACEHOLDER_SECRETS:
        with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
            load(tmp_path, secret_key=secret, production=True)


@pytest.mark.parametrize("secret", ["a" * 64, "ab" * 32, "0123" * 16])
def test_low_variety_secret_is_refused_in_production(tmp_path: Path, secret: str) -> None:
    message = refusal(tmp_path, secret_key=secret, production=True)

    assert "JWT_SECRET_KEY" in message
    assert secret not in message


def test_production_ignores_a_leftover_dev_secret_file(tmp_path: Path) -> None:
    load(tmp_path)  # development writes var/jwt_secret

    message = refusal(tmp_path, production=True)

    assert "JWT_SECRET_KEY" in message


# --- configuration mismatches ------------------------------------------------------------------


def test_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, algorithm="none")

    assert "JWT_ALGORITHM" in message


def test_key_file_with_hs256_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path / "key.pem", private_pem("ES256"))

    message = refusal(tmp_path, private_key_file=path, secret_key=STRONG_SECRET)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert "JWT_ALGORITHM" in message


def test_previous_public_key_with_hs256_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.pub.pem"
    path.write_bytes(public_key_pem(private_pem("ES256")))

    message = refusal(tmp_path, previous_public_key_file=path, secret_key=STRONG_SECRET)

    assert "JWT_PREVIOUS_PUBLIC_KEY_FILE" in message


# --- RS256 / ES256 key files ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_is_loaded_in_production(
    tmp_path: Path, algorithm: str, mode: int
) -> None:
    path = write_key(tmp_path / "key.pem", private_pem(algorithm), mode)

    keys = load(tmp_path, algorithm=algorithm, private_key_file=path, production=True)

    assert keys.algorithm == algorithm
    assert keys.kid == signing_keys_from_pem(algorithm, private_pem(algorithm)).kid  # type: ignore[arg-type]


def test_traditional_openssl_pem_is_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )

    keys = load(tmp_path, algorithm="ES256", private_key_file=write_key(tmp_path / "k.pem", pem))

    assert keys.signing_key.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
@pytest.mark.parametrize("production", [False, True])
def test_missing_private_key_setting_is_refused(
    tmp_path: Path, algorithm: str, production: bool
) -> None:
    message = refusal(tmp_path, algorithm=algorithm, production=production)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert algorithm in message


@pytest.mark.parametrize("production", [False, True])
def test_absent_private_key_file_is_refused(tmp_path: Path, production: bool) -> None:
    path = tmp_path / "nowhere.pem"

    message = refusal(tmp_path, algorithm="ES256", private_key_file=path, production=production)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert str(path) in message
    assert "No such file" in message


def test_unreadable_private_key_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "key.pem"
    directory.mkdir()

    message = refusal(tmp_path, algorithm="ES256", private_key_file=directory)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert "cannot be read" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700])
@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_shared_private_key_file_is_refused_in_production(
    tmp_path: Path, mode: int, algorithm: str
) -> None:
    pem = private_pem(algorithm)
    path = write_key(tmp_path / "key.pem", pem, mode)
    if mode & 0o077 == 0:
        load(tmp_path, algorithm=algorithm, private_key_file=path, production=True)
        return

    message = refusal(tmp_path, algorithm=algorithm, private_key_file=path, production=True)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert f"{mode:04o}" in message
    assert "chmod 600" in message
    assert pem.decode() not in message


def test_world_readable_private_key_file_is_allowed_in_development(tmp_path: Path) -> None:
    path = write_key(tmp_path / "key.pem", private_pem("ES256"), 0o644)

    assert load(tmp_path, algorithm="ES256", private_key_file=path).algorithm == "ES256"


@pytest.mark.parametrize(
    ("algorithm", "content", "expected"),
    [
        ("ES256", b"", "does not hold a PEM private key"),
        ("ES256", b"not a key at all", "does not hold a PEM private key"),
        ("RS256", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM"),
    ],
)
def test_garbage_key_file_is_refused(
    tmp_path: Path, algorithm: str, content: bytes, expected: str
) -> None:
    path = write_key(tmp_path / "key.pem", content)

    message = refusal(tmp_path, algorithm=algorithm, private_key_file=path)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert expected in message


def test_public_key_as_private_key_file_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path / "key.pem", public_key_pem(private_pem("ES256")))

    assert "PEM private key" in refusal(tmp_path, algorithm="ES256", private_key_file=path)


def test_huge_key_file_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path / "key.pem", b"A" * (1024 * 1024))

    assert "bytes" in refusal(tmp_path, algorithm="ES256", private_key_file=path)


def test_encrypted_key_file_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    path = write_key(tmp_path / "key.pem", pem)

    message = refusal(tmp_path, algorithm="ES256", private_key_file=path)

    assert "encrypted" in message
    assert "passphrase" not in message


@pytest.mark.parametrize(
    "curve", [ec.SECP384R1(), ec.SECP521R1(), ec.SECP256K1()], ids=lambda c: c.name
)
def test_wrong_curve_is_refused(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    pem = pem_of(ec.generate_private_key(curve))
    path = write_key(tmp_path / "key.pem", pem)

    message = refusal(tmp_path, algorithm="ES256", private_key_file=path, production=True)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert "P-256" in message
    assert curve.name in message
    assert pem.decode() not in message


def test_small_rsa_key_is_refused(tmp_path: Path) -> None:
    pem = pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 -- the weak key under test
    path = write_key(tmp_path / "key.pem", pem)

    message = refusal(tmp_path, algorithm="RS256", private_key_file=path, production=True)

    assert "1024-bit" in message
    assert "2048" in message


@pytest.mark.parametrize(("algorithm", "key_algorithm"), [("RS256", "ES256"), ("ES256", "RS256")])
def test_key_of_the_other_type_is_refused(
    tmp_path: Path, algorithm: str, key_algorithm: str
) -> None:
    path = write_key(tmp_path / "key.pem", private_pem(key_algorithm))

    message = refusal(tmp_path, algorithm=algorithm, private_key_file=path)

    assert "JWT_PRIVATE_KEY_FILE" in message
    assert algorithm in message


def test_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = write_key(tmp_path / "key.pem", pem_of(ed25519.Ed25519PrivateKey.generate()))

    assert "EC P-256" in refusal(tmp_path, algorithm="ES256", private_key_file=path)


# --- rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_previous_public_key_joins_the_verification_set(tmp_path: Path, algorithm: str) -> None:
    old = signing_keys_from_pem(algorithm, private_pem(algorithm, 0))  # type: ignore[arg-type]
    current = write_key(tmp_path / "key.pem", private_pem(algorithm, 1))
    previous = tmp_path / "old.pub.pem"
    previous.write_bytes(public_key_pem(private_pem(algorithm, 0)))
    previous.chmod(0o644)  # public: its mode does not matter

    keys = load(
        tmp_path,
        algorithm=algorithm,
        private_key_file=current,
        previous_public_key_file=previous,
        production=True,
    )

    assert set(keys.verification_keys) == {keys.kid, old.kid}
    assert {entry["kid"] for entry in keys.jwks()["keys"]} == {keys.kid, old.kid}
    assert keys.kid != old.kid


def test_previous_key_equal_to_the_current_one_is_listed_once(tmp_path: Path) -> None:
    current = write_key(tmp_path / "key.pem", private_pem("ES256"))
    previous = tmp_path / "old.pub.pem"
    previous.write_bytes(public_key_pem(private_pem("ES256")))

    keys = load(
        tmp_path, algorithm="ES256", private_key_file=current, previous_public_key_file=previous
    )

    assert len(keys.jwks()["keys"]) == 1


def test_private_key_as_previous_public_key_is_refused(tmp_path: Path) -> None:
    current = write_key(tmp_path / "key.pem", private_pem("ES256", 1))
    previous = write_key(tmp_path / "old.pem", private_pem("ES256", 0))

    message = refusal(
        tmp_path, algorithm="ES256", private_key_file=current, previous_public_key_file=previous
    )

    assert "JWT_PREVIOUS_PUBLIC_KEY_FILE" in message
    assert "public half" in message


def test_previous_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    current = write_key(tmp_path / "key.pem", private_pem("ES256"))
    previous = tmp_path / "old.pub.pem"
    previous.write_bytes(public_key_pem(private_pem("RS256")))

    message = refusal(
        tmp_path, algorithm="ES256", private_key_file=current, previous_public_key_file=previous
    )

    assert "JWT_PREVIOUS_PUBLIC_KEY_FILE" in message
    assert "P-256" in message


def test_missing_previous_key_file_is_refused(tmp_path: Path) -> None:
    current = write_key(tmp_path / "key.pem", private_pem("ES256"))

    message = refusal(
        tmp_path,
        algorithm="ES256",
        private_key_file=current,
        previous_public_key_file=tmp_path / "gone.pem",
    )

    assert "JWT_PREVIOUS_PUBLIC_KEY_FILE" in message
