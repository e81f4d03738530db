"""Machine secrets: entropy, formats, a parser that never raises, HMAC storage, the pepper."""

from __future__ import annotations

import base64
import hmac
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.errors import ConfigError
from auth.secrets import (
    DUMMY_HMAC,
    MAX_API_KEY_LENGTH,
    PEPPER_FILENAME,
    format_api_key,
    generate_api_key,
    generate_client_id,
    generate_key_id,
    generate_secret,
    hmac_secret,
    is_client_id,
    load_or_create_pepper,
    parse_api_key,
    verify_secret,
)

PEPPER = b"p" * 16 + b"q" * 16
STRONG = "Zq8v3WkT1rYb6NcX0mLf5HsJ2dGa9PeUo4RiQy7"


def test_secret_carries_256_bits_of_urlsafe_randomness() -> None:
    secrets = {generate_secret() for _ in range(1000)}
    assert len(secrets) == 1000
    for secret in list(secrets)[:50]:
        assert len(secret) >= 43
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_key_ids_are_random_not_sequential() -> None:
    ids = [generate_key_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(r"[a-z2-7]{12}", key_id) for key_id in ids)
    # Sequential ids would share long prefixes; random ones spread over the alphabet.
    assert len({key_id[0] for key_id in ids}) > 20
    assert ids != sorted(ids)


def test_api_key_format_round_trips() -> None:
    key_id, secret, api_key = generate_api_key()
    assert re.fullmatch(r"hpa_[a-z2-7]{12}_[A-Za-z0-9_-]{43}", api_key)
    assert api_key == format_api_key(key_id, secret)
    assert parse_api_key(api_key) == (key_id, secret)


def test_a_secret_containing_underscores_still_parses() -> None:
    key_id = generate_key_id()
    secret = "_" * 10 + "a-b_c" * 7
    assert parse_api_key(format_api_key(key_id, secret)) == (key_id, secret)


def test_client_ids_have_a_prefix_and_80_random_bits() -> None:
    ids = {generate_client_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(re.fullmatch(r"cl_[a-z2-7]{16}", client_id) for client_id in ids)
    assert all(is_client_id(client_id) for client_id in ids)
    assert not is_client_id("cl_short")
    assert not is_client_id(None)


VALID = format_api_key("abcdefghijkl", "A" * 43)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        123,
        b"hpa_abcdefghijkl_" + b"A" * 43,
        "",
        "hpa_",
        "hpa__",
        "Bearer " + VALID,
        VALID + "\n",
        " " + VALID,
        VALID + " ",
        VALID.replace("hpa_", "hpb_"),
        VALID.replace("abcdefghijkl", "ABCDEFGHIJKL"),
        VALID.replace("abcdefghijkl", "abcdefghijk"),
        VALID.replace("abcdefghijkl", "abcdefghijk1"),  # 1 is not base32
        "hpa_abcdefghijkl_" + "A" * 42,  # too short a secret
        "hpa_abcdefghijkl_" + "A" * 42 + "=",
        "hpa_abcdefghijkl_" + "A" * 42 + "+",
        "hpa_abcdefghijkl_" + "A" * 500,  # oversized
        "x" * 10_000_000,
        "hpa_" + "".join(chr(0xFF41 + i) for i in range(12)) + "_" + "A" * 43,  # fullwidth
        "hpa_abcdefghijkl_" + "Ä" * 43,
        "hpa_abcdefghijkl_" + "\ud800" * 43,  # lone surrogates
        "hpa_abcdefghijkl_" + "A" * 42 + "\x00",
        "hpa_abcdefghijkl_" + "٣" * 43,  # Unicode digits that \d would accept
    ],
)
def test_parse_api_key_refuses_garbage_without_raising(garbage: Any) -> None:
    assert parse_api_key(garbage) is None


def test_parse_api_key_caps_the_length() -> None:
    long_secret = "A" * (MAX_API_KEY_LENGTH - len("hpa_abcdefghijkl_") + 1)
    assert parse_api_key(format_api_key("abcdefghijkl", long_secret)) is None


@given(st.text(max_size=300))
def test_parse_api_key_never_raises(text: str) -> None:
    result = parse_api_key(text)
    assert result is None or (isinstance(result, tuple) and len(result) == 2)


@given(st.text(alphabet=st.characters(), min_size=0, max_size=80))
def test_parse_api_key_never_raises_on_prefixed_text(tail: str) -> None:
    assert parse_api_key("hpa_abcdefghijkl_" + tail) in (None, ("abcdefghijkl", tail))


def test_hmac_is_keyed_by_the_pepper() -> None:
    digest = hmac_secret(PEPPER, "s3cret")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hmac_secret(PEPPER, "s3cret")
    assert digest != hmac_secret(PEPPER[::-1], "s3cret")
    assert "s3cret" not in digest


def test_verify_secret_accepts_only_the_right_secret() -> None:
    stored = hmac_secret(PEPPER, "right")
    assert verify_secret(PEPPER, "right", stored)
    assert not verify_secret(PEPPER, "wrong", stored)
    assert not verify_secret(PEPPER, "right", DUMMY_HMAC)
    assert not verify_secret(b"other" * 8, "right", stored)


@pytest.mark.parametrize("stored", ["", "zz", "é" * 64, "\ud800", DUMMY_HMAC.upper()])
def test_verify_secret_never_raises_on_bad_input(stored: str) -> None:
    assert not verify_secret(PEPPER, "\ud800 anything", stored)


def test_verify_secret_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert verify_secret(PEPPER, "right", hmac_secret(PEPPER, "right"))
    assert len(calls) == 1


# --- pepper ---------------------------------------------------------------------------


def test_development_generates_a_private_pepper_once(tmp_path: Path) -> None:
    var = tmp_path / "var"
    first = load_or_create_pepper(var, None, production=False)
    path = var / PEPPER_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_or_create_pepper(var, None, production=False) == first
    assert load_or_create_pepper(var, "", production=False) == first  # empty = unset
    assert [p.name for p in var.iterdir()] == [PEPPER_FILENAME]  # no temp files left


def test_pepper_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_pepper(tmp_path, None, production=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / PEPPER_FILENAME).stat().st_mode) == 0o600


def test_concurrent_workers_agree_on_one_pepper(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(load_or_create_pepper(tmp_path, None, production=False))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len(set(results)) == 1


def test_a_readable_pepper_file_is_refused(tmp_path: Path) -> None:
    load_or_create_pepper(tmp_path, None, production=False)
    (tmp_path / PEPPER_FILENAME).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_pepper(tmp_path, None, production=False)


def test_configured_pepper_wins(tmp_path: Path) -> None:
    assert load_or_create_pepper(tmp_path, STRONG, production=False) == STRONG.encode()
    assert load_or_create_pepper(tmp_path, STRONG, production=True) == STRONG.encode()
    assert not (tmp_path / PEPPER_FILENAME).exists()


@pytest.mark.parametrize("production", [False, True])
def test_a_short_configured_pepper_is_refused(tmp_path: Path, production: bool) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes") as caught:
        load_or_create_pepper(tmp_path, "short-but-set", production=production)
    assert "short-but-set" not in str(caught.value)  # the message never echoes the value


def test_production_refuses_a_missing_pepper(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_KEY_PEPPER is required in production"):
        load_or_create_pepper(tmp_path, None, production=True)
    assert not (tmp_path / PEPPER_FILENAME).exists()  # and generates nothing


@pytest.mark.parametrize(
    "weak",
    ["change-me-change-me-change-me-change-me", "a" * 64, "abababababababababababababababab"],
)
def test_production_refuses_a_placeholder_pepper(tmp_path: Path, weak: str) -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        load_or_create_pepper(tmp_path, weak, production=True)
