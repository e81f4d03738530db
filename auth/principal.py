"""The authenticated caller, whatever credential it presented."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

PrincipalKind = Literal["client", "user", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential (``kind``, ``subject``), what it may do, and the
    account it belongs to, whose plan is the budget every credential of it shares.

    ``plan`` is the credential's own plan: a cap inside the account's budget when it is
    lower than ``account_plan`` (``auth.quota`` decides). ``expires_at`` is when the
    credential itself stops working (an API key's expiry or rotation grace; None for a
    token's subject, which outlives its tokens): nothing it mints may outlive it.
    """

    kind: PrincipalKind
    subject: str  # client_id, username or key_id
    scopes: frozenset[str]
    plan: str = "default"
    token_id: str | None = None  # the JWT's jti, when a token was presented
    account: str | None = None  # None only for principals made outside the store
    account_plan: str | None = None  # None: the credential's own plan
    expires_at: datetime | None = None

    @property
    def id(self) -> str:
        """Stable identity used for usage, logs and per-credential caps, e.g. ``client:abc``."""
        return f"{self.kind}:{self.subject}"

    @property
    def budget_plan(self) -> str:
        """The plan whose budget this caller spends: its account's."""
        return self.account_plan or self.plan
