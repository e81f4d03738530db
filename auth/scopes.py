"""The scopes a credential can carry, and their one parser."""

from __future__ import annotations

import re

PREDICT = "predict"
MODELS_READ = "models:read"
METRICS = "metrics"
KEYS_MANAGE = "keys:manage"
ADMIN = "admin"

ALL_SCOPES: frozenset[str] = frozenset({PREDICT, MODELS_READ, METRICS, KEYS_MANAGE, ADMIN})

SCOPE_DESCRIPTIONS: dict[str, str] = {
    PREDICT: "Request price predictions.",
    MODELS_READ: "Read model metadata.",
    METRICS: "Scrape Prometheus metrics.",
    KEYS_MANAGE: "Manage the caller's own API keys.",
    ADMIN: "Operate the service: any key, reloads.",
}


class UnknownScopeError(ValueError):
    def __init__(self, unknown: set[str]) -> None:
        super().__init__(f"unknown scope(s): {' '.join(sorted(unknown))}")
        self.unknown = unknown


def parse_scopes(text: str | None) -> frozenset[str]:
    """Split a space- or comma-separated scope list; refuse names we do not define."""
    names = {part for part in re.split(r"[\s,]+", text or "") if part}
    unknown = names - ALL_SCOPES
    if unknown:
        raise UnknownScopeError(unknown)
    return frozenset(names)


def format_scopes(scopes: frozenset[str] | set[str]) -> str:
    """RFC 6749 §3.3: a space-separated string, sorted for stable output."""
    return " ".join(sorted(scopes))
