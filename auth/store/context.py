"""What every repository of the store shares, and the base they are built on.

One ``StoreContext`` is built by ``CredentialStore`` and handed to each repository, so
they all use the same sessions, pepper, password hasher and clock: nothing is global,
and a test that fixes the clock or the hasher fixes it for every aggregate at once.

The sessions run under the store's health (``auth.store.health``): an unreachable
database raises ``StoreUnavailable`` from any repository, and while it is known down
no session even tries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from auth.models import Client, User
from auth.passwords import PasswordHasher
from auth.secrets import MIN_PEPPER_BYTES
from auth.store.health import StoreHealth

if TYPE_CHECKING:
    from auth.store.audit import AuditLog


class GuardedSessions:
    """A ``sessionmaker`` whose every session and transaction runs under ``health``."""

    def __init__(self, factory: sessionmaker[Session], health: StoreHealth) -> None:
        self.factory = factory
        self.health = health

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        with self.health.guard(), self.factory() as session:
            yield session

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with self.health.guard(), self.factory.begin() as session:
            yield session


@dataclass(frozen=True, slots=True)
class StoreContext:
    """``pepper`` is the HMAC key from ``auth.secrets.load_or_create_pepper``."""

    sessions: GuardedSessions
    pepper: bytes
    hasher: PasswordHasher
    clock: Callable[[], datetime]

    def __post_init__(self) -> None:
        if len(self.pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"the pepper must have at least {MIN_PEPPER_BYTES} bytes")


class Repository:
    """One aggregate's reads and writes; each change is audited in its own transaction.

    Write transactions start with their write (INSERT/UPDATE), never with a read, so
    SQLite's busy timeout applies to them; slow work (argon2) runs outside transactions.
    """

    def __init__(self, context: StoreContext, audit: AuditLog) -> None:
        self._context = context
        self._sessions = context.sessions
        self._clock = context.clock
        self._audit = audit

    def _disable(
        self,
        model: type[Client] | type[User],
        key_column: Any,
        key: str,
        event: str,
        actor: str | None,
    ) -> bool:
        with self._sessions.begin() as session:
            found = session.execute(
                update(model).where(key_column == key).values(disabled=True).returning(key_column)
            ).first()
            if found is None:
                return False
            self._audit.add(session, event, actor, key, {})
        return True
