"""Telling "the database could not be reached" from "the database said no".

Shared by the credential store's health (``auth.store.health``) and the prediction
log's writer (``monitoring.predictionlog``), which both answer an outage differently
from an error: no traceback, one event, and a retry later.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or did not answer in time
    (refused, lost, a timeout of ours or of the pool), as opposed to answering with an
    error (a constraint, a bug in a query)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def describe(exc: BaseException) -> str:
    """The driver's first line, bounded: never SQLAlchemy's text, which carries the
    statement and its parameters (an HMAC, a username)."""
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    return f"{type(original).__name__}: {first_line[:200]}"
