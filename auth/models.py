"""The credential store's tables (SQLAlchemy 2 typed ORM).

These classes stay inside ``auth.store``: callers get frozen records, never ORM rows
or hashes. ``migrations/`` must match this file; a test compares them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    MetaData,
    String,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.types import NAMING_CONVENTION, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """The customer (organisation, tenant) every client, user and API key belongs to.

    It owns the prediction budget (``plan``), the key cap and the key lifetime; disabling
    it stops every credential of it. Accounts are never deleted, only disabled.
    """

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    plan: Mapped[str] = mapped_column(String(32), default="default")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


def _account_column() -> Mapped[str]:
    return mapped_column(String(200), ForeignKey("accounts.name"), index=True)


class Client(Base):
    """An OAuth client (client_credentials grant)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(100), unique=True)
    account: Mapped[str] = _account_column()
    # Loaded with the row (one joined SELECT): every read needs the account's state.
    account_row: Mapped[Account] = relationship(lazy="joined", innerjoin=True)
    secret_hmac: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(255), default="")
    plan: Mapped[str] = mapped_column(String(32), default="default")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    """A person with a password (password grant, for first-party use)."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(150), primary_key=True)
    account: Mapped[str] = _account_column()
    account_row: Mapped[Account] = relationship(lazy="joined", innerjoin=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(String(255), default="")
    plan: Mapped[str] = mapped_column(String(32), default="default")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """A partner's API key; the secret part is kept only as an HMAC."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account: Mapped[str] = _account_column()
    account_row: Mapped[Account] = relationship(lazy="joined", innerjoin=True)
    secret_hmac: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(255), default="")
    plan: Mapped[str] = mapped_column(String(32), default="default")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(200))
    rotated_from: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_keys.key_id", ondelete="SET NULL")
    )
    # After a rotation the old key keeps working until then.
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RevokedToken(Base):
    """A JWT refused before its expiry (RFC 7009); purged once it would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AuditEvent(Base):
    """Who did what to which credential. ``detail`` never holds a secret or a hash."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(45))
