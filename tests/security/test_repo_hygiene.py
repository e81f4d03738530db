"""Secrets hygiene of the repository itself.

Every file git tracks or would add (``git ls-files --cached --others
--exclude-standard``: committed, staged, or new and not ignored) is searched for
private keys and for strings shaped like our credentials or common cloud tokens.
Tests may hold throwaway, obviously fake fixtures (a JWT whose signature is the word
"signature", a constant named STRONG_SECRET); nothing else may, and no file anywhere
may hold a PEM private key that actually loads. ``.env.example`` may hold only
placeholders for anything secret.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from app.settings import Settings
from auth.errors import ConfigError
from auth.jwt_keys import load_signing_keys
from auth.secrets import load_or_create_pepper

ROOT = Path(__file__).resolve().parents[2]
MAX_SCANNED_BYTES = 2 * 1024 * 1024

PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)
SECRET_SHAPES: dict[str, re.Pattern[str]] = {
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "API key": re.compile(r"\bhpa_[a-z2-7]{12}_[A-Za-z0-9_-]{43,}"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "private key in a string": re.compile(r"PRIVATE KEY-----\\n[A-Za-z0-9+/]{40,}"),
    "credentials in a URL": re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:(?!CHANGE_ME@|\$\{)[^\s:/@'\"]{6,}@"
    ),
    "secret assigned a literal": re.compile(
        r"(?i)\b[a-z_]*(?:secret|passw(?:or)?d|pepper|api_?key)[a-z_]*\s*[:=]\s*[\"']"
        r"[A-Za-z0-9+/_=-]{20,}[\"']"
    ),
}
# Files that must never be in the repository at all, whatever their contents.
FORBIDDEN_NAMES = re.compile(
    r"(^|/)(\.env|id_rsa|id_ecdsa|id_ed25519|jwt_secret|api_key_pepper)$"
    r"|\.(pem|key|p12|pfx|jks|keystore)$"
)
PLACEHOLDER = re.compile(r"(?i)^$|change[-_]?me|placeholder|example|replace[-_]?me|^<.*>$")


def repository_files() -> list[str]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.fail("the hygiene check needs git and a git checkout", pytrace=False)
    listed = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted(name for name in listed.split("\0") if name and (ROOT / name).is_file())


def read_text(name: str) -> str | None:
    data = (ROOT / name).read_bytes()[:MAX_SCANNED_BYTES]
    if b"\0" in data:
        return None  # binary
    return data.decode("utf-8", "replace")


def test_no_file_that_is_secret_by_nature_is_tracked() -> None:
    found = [name for name in repository_files() if FORBIDDEN_NAMES.search(name)]
    assert found == [], f"keys, certificates or env files in the repository: {found}"


def test_no_loadable_private_key_anywhere() -> None:
    """Tests generate their keys at run time; a PEM key in a file is a leaked key."""
    leaked = []
    for name in repository_files():
        for match in PEM_PRIVATE_KEY.finditer((ROOT / name).read_bytes()):
            try:
                serialization.load_pem_private_key(match.group(0), password=None)
            except (ValueError, TypeError):
                continue  # a truncated or fake block, e.g. a parser test's "AAAA"
            except Exception:  # noqa: S112 - an unsupported key type is still not loadable
                continue
            leaked.append(name)
    assert leaked == [], f"files holding a working private key: {leaked}"


def test_nothing_secret_looking_outside_the_tests_fixtures() -> None:
    findings = []
    for name in repository_files():
        if name.startswith("tests/"):
            continue  # throwaway fixtures; see test_fixtures_are_obviously_fake
        text = read_text(name)
        if text is None:
            continue
        for kind, pattern in SECRET_SHAPES.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                findings.append(f"{name}:{line}: {kind}")
    assert findings == [], "secret-looking strings:\n" + "\n".join(findings)


def test_fixtures_are_obviously_fake() -> None:
    """The shapes the tests do hold are known throwaways, not pasted credentials."""
    allowed = {
        # Its signature segment is base64url("signature"): a log-redaction fixture.
        ("tests/observability/test_requests.py", "JWT"),
        # A random-looking constant that only ever signs test tokens.
        ("tests/auth/test_jwt_keys.py", "secret assigned a literal"),
    }
    found = set()
    for name in repository_files():
        text = read_text(name) if name.startswith("tests/") else None
        for kind, pattern in SECRET_SHAPES.items():
            if text is not None and pattern.search(text):
                found.add((name, kind))
    assert found <= allowed, f"new secret-shaped fixtures, review them: {found - allowed}"


def env_example() -> dict[str, str]:
    """Every ``NAME=value`` line, commented out or not (compose's are commented)."""
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PEPPER|SECRET_KEY|PRIVATE_KEY|CREDENTIALS?)$")


def test_env_example_holds_placeholders_only() -> None:
    values = env_example()
    secret_settings = {
        name.upper()
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation)
    }
    secret_names = secret_settings | {name for name in values if SECRET_NAME.search(name)}
    assert {"JWT_SECRET_KEY", "API_KEY_PEPPER", "POSTGRES_PASSWORD"} <= secret_names
    not_placeholders = {
        name: values[name] for name in secret_names if not PLACEHOLDER.search(values[name])
    }
    assert not_placeholders == {}, f"secret settings with a real-looking value: {not_placeholders}"


def test_env_example_urls_carry_no_password() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for userinfo in re.findall(r"://([^/@\s]+)@", text):
        _, _, password = userinfo.partition(":")
        assert PLACEHOLDER.search(password), f"a URL in .env.example carries {userinfo!r}"


def test_env_example_secrets_would_be_refused_in_production(tmp_path: Path) -> None:
    """Copied to production unchanged, .env.example cannot start the service."""
    values = env_example()
    with pytest.raises(ConfigError):
        load_signing_keys(
            algorithm=values["JWT_ALGORITHM"],
            secret_key=values["JWT_SECRET_KEY"] or None,
            private_key_file=None,
            previous_public_key_file=None,
            var_dir=tmp_path,
            production=True,
        )
    with pytest.raises(ConfigError):
        load_or_create_pepper(tmp_path, values["API_KEY_PEPPER"] or None, production=True)


def test_security_md_cites_only_tests_that_exist() -> None:
    """Every ``file::test`` in SECURITY.md names a real test (``::name`` alone means the
    file cited just before it), so the threat model cannot drift from the suite."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    missing = []
    current: Path | None = None
    for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)`", text):
        if path:
            current = ROOT / path
        assert current is not None, f"::{name} cited before any file"
        if not re.search(rf"^(async )?def {name}\(", current.read_text(), re.MULTILINE):
            missing.append(f"{current.relative_to(ROOT)}::{name}")
    for path in re.findall(r"`(tests/[\w/]+\.py|fuzz/\w+\.py|tools/\w+\.py)", text):
        if not (ROOT / path).is_file():
            missing.append(path)
    assert missing == [], f"SECURITY.md cites what does not exist: {missing}"
