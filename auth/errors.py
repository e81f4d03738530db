"""Domain errors of the identity layer.

They carry no HTTP status: ``app/`` maps them to answers, the CLI to exit codes.
Messages never contain a secret, a hash or a password.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or unsafe; raised at start-up so the process refuses to run."""


class InvalidValueError(ValueError):
    """A name, label or plan the store refuses to keep (empty, too long, control chars)."""


class DuplicateError(Exception):
    """A client, user or key with that name already exists."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"a {kind} named {name!r} already exists")
        self.kind = kind
        self.name = name


class NotFoundError(Exception):
    """No such client, user or key (or it belongs to someone else)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} {name!r}")
        self.kind = kind
        self.name = name


class PasswordPolicyError(ValueError):
    """A new password is too short or too long; the message says which bound."""


class PasswordCheckBusy(Exception):
    """Every password-verification slot is taken: shed the load (503/429) instead of queueing."""


class KeyLimitError(Exception):
    """An account already holds as many active API keys as it may (MAX_KEYS_PER_ACCOUNT)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the account already holds {limit} active API keys, the most allowed")
        self.limit = limit


class StoreUnavailable(Exception):
    """The credential store cannot be reached now (refused, lost, or too slow to answer).

    Not a verdict on any credential: the caller should answer "try again" (503 with
    ``Retry-After``, or OAuth's ``temporarily_unavailable``), never "invalid".
    ``retry_after`` is in whole seconds, at least 1.
    """

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("the credential store is unavailable")
        self.retry_after = max(1, retry_after)
