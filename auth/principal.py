"""The authenticated caller, whatever credential it presented."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PrincipalKind = Literal["client", "user", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    subject: str  # client_id, username or key_id
    scopes: frozenset[str]
    plan: str = "default"
    token_id: str | None = None  # the JWT's jti, when a token was presented

    @property
    def id(self) -> str:
        """Stable identity used for rate limits, usage and logs, e.g. ``client:abc``."""
        return f"{self.kind}:{self.subject}"
