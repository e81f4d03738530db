"""Password hashing with argon2id, and a bound on how much CPU logins may take.

Passwords are chosen by people, so they get a deliberately slow, memory-hard hash
(unlike machine secrets, see ``auth.secrets``). Because each check costs tens of
milliseconds of CPU and ~19 MiB of memory, a login flood could starve predictions: a
``VerifyGuard`` lets at most N checks run at once per process (N = CPUs by default) and
makes the rest fail fast with ``PasswordCheckBusy`` instead of queueing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from passlib.context import CryptContext

from auth.errors import PasswordCheckBusy, PasswordPolicyError

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "Argon2Params",
    "PasswordCheckBusy",
    "PasswordHasher",
    "PasswordPolicyError",
    "VerifyGuard",
    "check_password_policy",
    "hash_password",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 12  # NIST SP 800-63B allows 8; we ask for more
MAX_PASSWORD_LENGTH = 1024  # refuse to hash megabytes sent as a "password"
# Hashed instead of an over-long input, so refusing it costs the same as a real check.
_STAND_IN_PASSWORD = "x" * MIN_PASSWORD_LENGTH


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost; the default is OWASP's first recommendation (m=19 MiB, t=2, p=1)."""

    memory_cost: int = 19_456  # KiB
    time_cost: int = 2
    parallelism: int = 1


DEFAULT_PARAMS = Argon2Params()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may actually use
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class VerifyGuard:
    """At most ``size`` concurrent hash computations; others wait ``timeout`` s, then give up."""

    def __init__(self, size: int | None = None, timeout: float = 0.5) -> None:
        self.size = size if size is not None else _cpu_count()
        if self.size < 1:
            raise ValueError("VerifyGuard size must be at least 1")
        self.timeout = timeout
        self._semaphore = threading.BoundedSemaphore(self.size)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.timeout):
            raise PasswordCheckBusy("too many concurrent password checks; retry later")
        try:
            yield
        finally:
            self._semaphore.release()


def check_password_policy(password: str) -> None:
    """Refuse a new password outside [MIN, MAX] characters or not encodable as UTF-8."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at most {MAX_PASSWORD_LENGTH} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordPolicyError("password must be valid Unicode text") from None


class PasswordHasher:
    """argon2id via passlib, with rehash-on-verify and a concurrency guard.

    Build one per process (the guard bounds that process); ``hash_password`` and
    ``verify_password`` below use a default instance.
    """

    def __init__(self, params: Argon2Params = DEFAULT_PARAMS, guard: VerifyGuard | None = None):
        self.params = params
        self.guard = guard if guard is not None else VerifyGuard()
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=params.memory_cost,
            argon2__time_cost=params.time_cost,
            argon2__parallelism=params.parallelism,
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        """Hash a new password after checking the length policy."""
        check_password_policy(password)
        with self.guard.slot():
            hashed: str = self._context.hash(password)
        return hashed

    def verify(self, stored_hash: str | None, password: str) -> tuple[bool, str | None]:
        """``(ok, new_hash)``; ``new_hash`` is set when the stored hash used older parameters.

        With ``stored_hash=None`` (no such user) or an over-long password, a dummy hash is
        checked so the answer takes as long as a real miss.
        """
        if stored_hash is None or len(password) > MAX_PASSWORD_LENGTH:
            self._verify_dummy(password if len(password) <= MAX_PASSWORD_LENGTH else None)
            return False, None
        with self.guard.slot():
            try:
                ok, new_hash = self._context.verify_and_update(password, stored_hash)
            except ValueError:  # malformed stored hash or a password passlib refuses
                return False, None
        return bool(ok), new_hash if ok and isinstance(new_hash, str) else None

    def needs_update(self, stored_hash: str) -> bool:
        return bool(self._context.needs_update(stored_hash))

    def dummy_hash(self) -> str:
        """A hash of a fixed string with this hasher's parameters, made once."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hash(_STAND_IN_PASSWORD)
            return self._dummy_hash

    def _verify_dummy(self, password: str | None) -> None:
        dummy = self.dummy_hash()
        with self.guard.slot(), suppress(ValueError):  # the answer is "no" either way
            self._context.verify(_STAND_IN_PASSWORD if password is None else password, dummy)


_default_hasher: PasswordHasher | None = None
_default_lock = threading.Lock()


def default_hasher() -> PasswordHasher:
    """The process-wide hasher (built on first use, so importing costs nothing)."""
    global _default_hasher
    with _default_lock:
        if _default_hasher is None:
            _default_hasher = PasswordHasher()
        return _default_hasher


def hash_password(password: str) -> str:
    return default_hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    return default_hasher().verify(stored_hash, password)
