"""The keys that sign and verify access tokens, and the checks that load them.

Everything here is a pure function of its arguments (plus the files it is pointed
at): ``create_app(settings)`` calls :func:`load_signing_keys` once at start, and a
:class:`ConfigError` stops the start with a message an operator can act on. No
message ever contains a secret.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

from auth.errors import ConfigError

Algorithm = Literal["HS256", "RS256", "ES256"]
ALGORITHMS: Final[frozenset[str]] = frozenset(get_args(Algorithm))

MIN_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
MIN_RSA_BITS: Final = 2048  # RFC 7518 §3.3
DEV_SECRET_FILENAME: Final = "jwt_secret"  # noqa: S105 -- a file name, not a secret
_MAX_KEY_FILE_BYTES: Final = 64 * 1024  # a PEM key is a few KiB; refuse to slurp anything else
_MIN_DISTINCT_CHARS: Final = 8  # "aaaa…" or "0000…" is long but not secret
_KEY_KIND: Final = {"RS256": "an RSA key", "ES256": "an EC P-256 key"}

# Values copied from tutorials, templates and our own .env.example. Compared
# case-insensitively; see _placeholder_reason for the pattern rules.
KNOWN_PLACEHOLDER_SECRETS: Final[frozenset[str]] = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "change-me-in-production",
        "changethis",
        "secret",
        "secretkey",
        "secret-key",
        "secret_key",
        "your-secret-key",
        "your_secret_key",
        "yoursecretkey",
        "your-256-bit-secret",  # jwt.io's default HS256 secret
        "jwt-secret",
        "jwt_secret",
        "jwtsecret",
        "supersecret",
        "super-secret",
        "supersecretkey",
        "mysecret",
        "mysecretkey",
        "my-secret-key",
        "password",
        "default",
        "development",
        "dev",
        "test",
        "testing",
        "todo",
        "xxx",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",  # FastAPI docs
    }
)
_PLACEHOLDER_FRAGMENTS: Final = ("placeholder", "example", "replace-me", "replace_me", "insecure")


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs new tokens and every key a token may be verified with.

    ``verification_keys`` maps kid → key: for HS256 the one secret, for RS256/ES256
    public PEMs (the current key's and, during a rotation, the previous one's, so
    tokens issued before the switch stay valid until they expire). Each kid is the
    RFC 7638 thumbprint of its key, checked here so a kid can never name the wrong key.
    """

    algorithm: Algorithm
    signing_key: bytes = field(repr=False)  # HS256 secret, or a private PEM
    kid: str
    verification_keys: Mapping[str, bytes] = field(repr=False)
    _signer: Key = field(init=False, repr=False, compare=False)
    _verifiers: Mapping[str, Key] = field(init=False, repr=False, compare=False)
    _jwks: tuple[dict[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {self.algorithm!r}")
        if self.kid not in self.verification_keys:
            raise ValueError("the signing key's kid must be among the verification keys")
        if _thumbprint_of(self.algorithm, self.signing_key) != self.kid:
            raise ValueError("kid is not the RFC 7638 thumbprint of the signing key")
        verifiers: dict[str, Key] = {}
        public_jwks: list[dict[str, str]] = []
        for kid, key in self.verification_keys.items():
            if _thumbprint_of(self.algorithm, key) != kid:
                raise ValueError("a verification kid is not the RFC 7638 thumbprint of its key")
            if self.algorithm != "HS256" and not _is_public_pem(key):
                raise ValueError("verification keys must be public keys")
            # Prepared once: python-jose would otherwise parse the PEM (and, for a
            # str key, try json.loads on it) on every request.
            verifiers[kid] = jwk.construct(key, self.algorithm)
            if self.algorithm != "HS256":
                public_jwks.append(
                    {**_public_jwk(key), "alg": self.algorithm, "use": "sig", "kid": kid}
                )
        object.__setattr__(
            self, "verification_keys", MappingProxyType(dict(self.verification_keys))
        )
        object.__setattr__(self, "_signer", jwk.construct(self.signing_key, self.algorithm))
        object.__setattr__(self, "_verifiers", MappingProxyType(verifiers))
        object.__setattr__(self, "_jwks", tuple(public_jwks))

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set for ``/.well-known/jwks.json``; empty for HS256."""
        return {"keys": [dict(entry) for entry in self._jwks]}

    def signer(self) -> Key:
        """The prepared key that signs new tokens."""
        return self._signer

    def verifier(self, kid: str) -> Key | None:
        """The prepared key for ``kid``, looked up only in our own set."""
        return self._verifiers.get(kid)


def load_signing_keys(
    *,
    algorithm: str,
    secret_key: str | None,
    private_key_file: Path | None,
    previous_public_key_file: Path | None,
    var_dir: Path,
    production: bool,
) -> SigningKeys:
    """Build the signing keys from settings, refusing anything weak in production."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"JWT_ALGORITHM must be one of {', '.join(sorted(ALGORITHMS))}, not {algorithm!r}."
        )
    if algorithm == "HS256":
        if private_key_file is not None:
            raise ConfigError(
                "JWT_PRIVATE_KEY_FILE is set but JWT_ALGORITHM is HS256, which would ignore it: "
                "set JWT_ALGORITHM=RS256 or ES256 to sign with that key, or unset the file."
            )
        if previous_public_key_file is not None:
            raise ConfigError(
                "JWT_PREVIOUS_PUBLIC_KEY_FILE only applies to RS256/ES256; HS256 has no public key."
            )
        return signing_keys_from_secret(_hs256_secret(secret_key, var_dir, production))

    key_algorithm: Literal["RS256", "ES256"] = "RS256" if algorithm == "RS256" else "ES256"
    if private_key_file is None:
        raise ConfigError(
            f"JWT_PRIVATE_KEY_FILE is required when JWT_ALGORITHM={algorithm}: "
            "point it at an unencrypted PEM private key."
        )
    if production:
        _refuse_shared_permissions(private_key_file)
    private_pem = _read_key_file(private_key_file, "JWT_PRIVATE_KEY_FILE")
    previous: list[bytes] = []
    if previous_public_key_file is not None:
        previous.append(_read_key_file(previous_public_key_file, "JWT_PREVIOUS_PUBLIC_KEY_FILE"))
    return signing_keys_from_pem(key_algorithm, private_pem, previous_public_pems=previous)


def signing_keys_from_secret(secret: bytes) -> SigningKeys:
    """HS256 keys from a shared secret (length rules are the loader's job)."""
    try:
        jwk.construct(secret, "HS256")
    except JOSEError:
        raise ConfigError(
            "JWT_SECRET_KEY looks like a PEM or SSH key, which must not be used as an HMAC "
            "secret: for a key pair set JWT_ALGORITHM=RS256 or ES256 and JWT_PRIVATE_KEY_FILE."
        ) from None
    kid = _thumbprint_of("HS256", secret)
    return SigningKeys(
        algorithm="HS256", signing_key=secret, kid=kid, verification_keys={kid: secret}
    )


def signing_keys_from_pem(
    algorithm: Literal["RS256", "ES256"],
    private_pem: bytes,
    *,
    previous_public_pems: Iterable[bytes] = (),
    source: str = "JWT_PRIVATE_KEY_FILE",
) -> SigningKeys:
    """RS256/ES256 keys from a private PEM plus any still-trusted previous public keys."""
    private_key = _load_private_pem(private_pem, algorithm, source)
    signing_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = _thumbprint_of(algorithm, public_pem)
    verification = {kid: public_pem}
    for pem in previous_public_pems:
        normalized = _load_public_pem(pem, algorithm, "JWT_PREVIOUS_PUBLIC_KEY_FILE")
        verification.setdefault(_thumbprint_of(algorithm, normalized), normalized)
    return SigningKeys(
        algorithm=algorithm, signing_key=signing_pem, kid=kid, verification_keys=verification
    )


def generate_private_key_pem(algorithm: Literal["RS256", "ES256"]) -> bytes:
    """A fresh unencrypted PKCS#8 PEM key for tests, a dev CA or a key-rotation CLI."""
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    elif algorithm == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"no private key for {algorithm!r}: HS256 uses a shared secret")
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(private_pem: bytes) -> bytes:
    """The public half of a private PEM, e.g. to keep as JWT_PREVIOUS_PUBLIC_KEY_FILE."""
    private_key = serialization.load_pem_private_key(private_pem, password=None)
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_thumbprint(jwk_members: Mapping[str, str]) -> str:
    """RFC 7638: base64url SHA-256 of the required members, sorted, without whitespace."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "oct": ("k", "kty")}
    names = required[jwk_members["kty"]]
    canonical = json.dumps(
        {name: jwk_members[name] for name in names}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


# --- HS256 secrets ------------------------------------------------------------


def _hs256_secret(secret_key: str | None, var_dir: Path, production: bool) -> bytes:
    given = secret_key if secret_key is not None and secret_key.strip() else None
    if production:
        if given is None:
            raise ConfigError(
                "JWT_SECRET_KEY is required in production when JWT_ALGORITHM=HS256: set it to "
                'a random value of at least 32 bytes, e.g. python -c "import secrets; '
                'print(secrets.token_urlsafe(48))", or use RS256/ES256 with JWT_PRIVATE_KEY_FILE.'
            )
        problem = _weak_secret_reason(given)
        if problem is not None:
            raise ConfigError(
                f"JWT_SECRET_KEY is refused in production: {problem}. Generate a new one, "
                'e.g. python -c "import secrets; print(secrets.token_urlsafe(48))".'
            )
    if given is not None:
        return given.encode("utf-8")
    return _dev_secret(var_dir)


def _weak_secret_reason(secret: str) -> str | None:
    """Why a secret is unfit for production, in words that do not repeat it."""
    placeholder = _placeholder_reason(secret)
    if placeholder is not None:
        return placeholder
    length = len(secret.encode("utf-8"))
    if length < MIN_SECRET_BYTES:
        return f"it is {length} bytes long; HS256 needs at least {MIN_SECRET_BYTES}"
    if len(set(secret)) < _MIN_DISTINCT_CHARS:
        return "it repeats too few distinct characters to be random"
    return None


def _placeholder_reason(secret: str) -> str | None:
    folded = secret.strip().casefold()
    if folded in KNOWN_PLACEHOLDER_SECRETS:
        return "it is a well-known placeholder value"
    if folded.startswith("change"):
        return "it is a placeholder (it starts with 'change')"
    for fragment in _PLACEHOLDER_FRAGMENTS:
        if fragment in folded:
            return f"it is a placeholder (it contains {fragment!r})"
    return None


def _dev_secret(var_dir: Path) -> bytes:
    """Development only: one random secret kept in ``var/`` so restarts keep tokens valid.

    Written to a private temporary file and published with ``os.link`` so that two
    workers starting at once agree on one complete secret.
    """
    path = var_dir / DEV_SECRET_FILENAME
    if not path.exists():
        try:
            _create_dev_secret(path)
        except OSError as error:
            raise ConfigError(
                f"cannot create the development JWT secret {path} ({_describe(error)}): "
                "make VAR_DIR writable, or set JWT_SECRET_KEY."
            ) from None
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"cannot read the development JWT secret {path} ({_describe(error)}): "
            "fix its permissions or delete it to generate a new one."
        ) from None
    if len(secret.encode("ascii")) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the development JWT secret {path} is shorter than {MIN_SECRET_BYTES} bytes: "
            "delete it to generate a new one, or set JWT_SECRET_KEY."
        )
    return secret.encode("ascii")


def _create_dev_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # Atomic publish, never a half-written secret. If another worker won the
        # race, everyone reads its secret.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- RS256 / ES256 key files ---------------------------------------------------


def _refuse_shared_permissions(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(
            f"JWT_PRIVATE_KEY_FILE {path} cannot be read: {_describe(error)}."
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"JWT_PRIVATE_KEY_FILE {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 on it (or mount the secret with "
            "mode 0400) so only the service account can read the private key."
        )


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{setting} {path} cannot be read: {_describe(error)}.") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{setting} {path} is over {_MAX_KEY_FILE_BYTES} bytes: not a PEM key.")
    return data


def _load_private_pem(
    pem: bytes, algorithm: Literal["RS256", "ES256"], setting: str
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(
            f"{setting} holds an encrypted private key; the service needs it unencrypted "
            "(protect the file with its permissions or a secret mount instead)."
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting} does not hold a PEM private key.") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"{setting} must hold {_KEY_KIND[algorithm]} for JWT_ALGORITHM={algorithm}."
        )
    _check_key_type(key, algorithm, setting)
    return key


def _load_public_pem(pem: bytes, algorithm: Literal["RS256", "ES256"], setting: str) -> bytes:
    """A normalized SubjectPublicKeyInfo PEM; a private key here is refused, not used."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" in pem:
            raise ConfigError(
                f"{setting} holds a private key: give only the public half "
                "(openssl pkey -in old.pem -pubout -out old.pub.pem) and retire the private key."
            ) from None
        raise ConfigError(f"{setting} does not hold a PEM public key.") from None
    _check_key_type(key, algorithm, setting)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_type(key: object, algorithm: Literal["RS256", "ES256"], setting: str) -> None:
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise ConfigError(
                f"{setting} must hold {_KEY_KIND[algorithm]} for JWT_ALGORITHM=RS256."
            )
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"{setting} holds a {key.key_size}-bit RSA key; RS256 needs at least "
                f"{MIN_RSA_BITS} bits."
            )
        return
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise ConfigError(f"{setting} must hold {_KEY_KIND[algorithm]} for JWT_ALGORITHM=ES256.")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{setting} holds an EC key on curve {key.curve.name}; ES256 needs P-256 (secp256r1)."
        )


# --- JWK helpers --------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_b64url(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def _is_public_pem(pem: bytes) -> bool:
    try:
        serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _public_jwk(pem: bytes) -> dict[str, str]:
    """The public JWK members of a PEM (public or private); never ``d`` or primes."""
    key: Any
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        key = serialization.load_pem_private_key(pem, password=None).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint_b64url(numbers.n), "e": _uint_b64url(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _uint_b64url(point.x, 32),
            "y": _uint_b64url(point.y, 32),
        }
    raise ValueError("unsupported public key type")


def _thumbprint_of(algorithm: str, key: bytes) -> str:
    if algorithm == "HS256":
        return jwk_thumbprint({"kty": "oct", "k": _b64url(key)})
    return jwk_thumbprint(_public_jwk(key))


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
