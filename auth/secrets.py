"""Machine-generated secrets (client secrets, API keys) and how we store them.

Why HMAC-SHA256 with a pepper and not argon2: these secrets carry 256 bits from
``secrets.token_urlsafe(32)``. Brute-forcing 2**256 candidates is infeasible at any
hash speed, so a slow hash adds no protection; it would only turn ``/token`` and every
``X-API-Key`` request into a CPU lever for an attacker (argon2 costs tens of
milliseconds and megabytes per check, HMAC about a microsecond; see
``python -m bench.secret_hashing``). The pepper (``API_KEY_PEPPER``) lives outside the
database, so a stolen database alone cannot even confirm a guessed key. Passwords are
chosen by people and have little entropy: they go through argon2 in ``auth.passwords``.

Everything here is a pure function except ``load_or_create_pepper``, which touches
one file in development.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from contextlib import suppress
from pathlib import Path

from auth.errors import ConfigError

API_KEY_PREFIX = "hpa"
CLIENT_ID_PREFIX = "cl"
KEY_ID_LENGTH = 12  # 60 random bits: an identifier, not the secret
CLIENT_ID_LENGTH = 16  # 80 random bits
SECRET_BYTES = 32  # 256 bits -> 43 url-safe characters
MAX_API_KEY_LENGTH = 200

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_API_KEY_RE = re.compile(
    rf"{API_KEY_PREFIX}_([a-z2-7]{{{KEY_ID_LENGTH}}})_([A-Za-z0-9_-]{{43,128}})", re.ASCII
)
_CLIENT_ID_RE = re.compile(rf"{CLIENT_ID_PREFIX}_[a-z2-7]{{{CLIENT_ID_LENGTH}}}", re.ASCII)

# Compared against when the id is unknown, so a miss costs the same HMAC as a hit.
DUMMY_HMAC = "0" * 64

PEPPER_FILENAME = "api_key_pepper"
MIN_PEPPER_BYTES = 32
_PLACEHOLDER_WORDS = ("change", "example", "placeholder", "replace", "dummy", "default")


def generate_secret() -> str:
    """A 256-bit secret, 43 url-safe characters."""
    return secrets.token_urlsafe(SECRET_BYTES)


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def generate_key_id() -> str:
    """A random, non-sequential key id: it shows up in logs, so it must reveal no count."""
    return _random_id(KEY_ID_LENGTH)


def generate_client_id() -> str:
    return f"{CLIENT_ID_PREFIX}_{_random_id(CLIENT_ID_LENGTH)}"


def format_api_key(key_id: str, secret: str) -> str:
    """``hpa_<key_id>_<secret>``: the prefix makes leaked keys easy to scan for."""
    return f"{API_KEY_PREFIX}_{key_id}_{secret}"


def generate_api_key() -> tuple[str, str, str]:
    """A fresh ``(key_id, secret, api_key)``; show ``api_key`` once, store only the HMAC."""
    key_id, secret = generate_key_id(), generate_secret()
    return key_id, secret, format_api_key(key_id, secret)


def parse_api_key(text: object) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None; never raises on garbage."""
    if not isinstance(text, str) or len(text) > MAX_API_KEY_LENGTH or not text.isascii():
        return None
    match = _API_KEY_RE.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2)


def is_client_id(text: object) -> bool:
    """Whether ``text`` has the shape of a client id (safe to write into the audit log)."""
    return isinstance(text, str) and _CLIENT_ID_RE.fullmatch(text) is not None


def _encode(secret: str) -> bytes:
    # surrogatepass: a lone surrogate from a hostile client must not raise.
    return secret.encode("utf-8", "surrogatepass")


def hmac_secret(pepper: bytes, secret: str) -> str:
    """HMAC-SHA256 of ``secret`` keyed by the pepper, hex: what the database keeps."""
    return hmac.new(pepper, _encode(secret), hashlib.sha256).hexdigest()


def verify_secret(pepper: bytes, secret: str, stored_hmac: str) -> bool:
    """Constant-time comparison of the presented secret's HMAC with the stored one."""
    presented = hmac_secret(pepper, secret).encode("ascii")
    return hmac.compare_digest(presented, stored_hmac.encode("utf-8", "surrogatepass"))


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(word in lowered for word in _PLACEHOLDER_WORDS) or len(set(value)) < 10


def load_or_create_pepper(var_dir: Path, configured: str | None, production: bool) -> bytes:
    """The HMAC key for stored secrets.

    A configured value wins and must have at least 32 bytes. Production refuses to
    start without a strong one: a pepper generated on one replica would not match the
    others. Development generates one into ``var_dir/api_key_pepper`` (mode 0600) once
    and reuses it, so keys survive restarts.
    """
    if configured:
        encoded = configured.encode("utf-8")
        if len(encoded) < MIN_PEPPER_BYTES:
            raise ConfigError(
                f"API_KEY_PEPPER must be at least {MIN_PEPPER_BYTES} bytes; "
                'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if production and _is_placeholder(configured):
            raise ConfigError(
                "API_KEY_PEPPER looks like a placeholder; set a random value of at least "
                f"{MIN_PEPPER_BYTES} bytes"
            )
        return encoded
    if production:
        raise ConfigError(
            "API_KEY_PEPPER is required in production (the HMAC key for stored API keys and "
            "client secrets); set a random value of at least "
            f"{MIN_PEPPER_BYTES} bytes, the same on every replica"
        )
    return _load_or_create_pepper_file(var_dir / PEPPER_FILENAME)


def _load_or_create_pepper_file(path: Path) -> bytes:
    if not path.exists():
        _create_pepper_file(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    value = path.read_bytes().strip()
    if len(value) < MIN_PEPPER_BYTES:
        raise ConfigError(f"{path} holds fewer than {MIN_PEPPER_BYTES} bytes; delete it")
    return value


def _create_pepper_file(path: Path) -> None:
    """Write to a private temp file, then link it into place: concurrent workers agree on one
    pepper and nobody ever reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_urlsafe(48).encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileExistsError):  # another process won the race: use its pepper
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
