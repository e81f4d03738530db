"""Whether the credential store answers: one circuit breaker per process, shared by the
verifier, the OAuth rules, every other reader of the store, and ``/readyz``.

Every session the store opens runs under :meth:`StoreHealth.guard`:

* **up** (closed): calls go to the database. A call that fails because the database
  cannot be reached (connection refused or lost, a timeout: ``db.errors.is_unreachable``) marks
  the store down, logged once as an error, without a traceback.
* **down** (open): calls fail at once with ``StoreUnavailable``, without touching the
  database, so an outage costs callers nothing and a hung server cannot collect
  threads and pool connections. Once every ``retry_seconds`` one call is let through
  as a trial; when a watcher probes in the background (``watched``, the app's
  lifespan), only the watcher's probes try. A success marks the store up again, logged
  once, with how long it was down and how many calls were refused meanwhile.

Errors for which the database did answer (a constraint, a bug in a query) pass through
unchanged and count as "reachable". Only calls that started after the last change of
state can change it again, so a read that began before an outage was noticed, and
finishes late, cannot flip the state back and forth (one event down, one event up).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from auth.errors import StoreUnavailable
from db.errors import describe
from db.errors import is_unreachable as is_outage

logger = logging.getLogger("auth.store.health")

DEFAULT_RETRY_SECONDS = 1.0


class StoreHealth:
    """The breaker. Cheap when up: one attribute read per call, no lock."""

    def __init__(
        self,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_seconds = retry_seconds
        self.clock = clock
        # True once a background watcher probes while down: callers then never wait
        # on a trial (a hung database would hold each trial for its timeout).
        self.watched = False
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._refused = 0
        self._generation = 0  # bumped at every change of state

    @property
    def up(self) -> bool:
        return self._down_since is None

    @property
    def retry_after(self) -> int:
        """``Retry-After`` for callers refused meanwhile, in whole seconds."""
        return max(1, math.ceil(self.retry_seconds))

    def refusing(self) -> bool:
        """Whether a call made now would be refused without trying the database."""
        if self._down_since is None:
            return False
        return self.watched or self.clock() < self._retry_at

    @contextmanager
    def guard(self, *, probe: bool = False) -> Iterator[None]:
        """Run one store transaction; ``probe`` tries even while down (the watcher)."""
        generation = self._generation if probe else self._admit()
        try:
            yield
        except Exception as exc:
            if not is_outage(exc):
                self._reachable(generation)
                raise
            self._unreachable(generation, exc)
            raise StoreUnavailable(self.retry_after) from None
        self._reachable(generation)

    def _admit(self) -> int:
        generation = self._generation
        if self._down_since is None:
            return generation
        with self._lock:
            generation = self._generation
            if self._down_since is None:
                return generation
            now = self.clock()
            if not self.watched and now >= self._retry_at:
                self._retry_at = now + self.retry_seconds  # this call is the trial
                return generation
            self._refused += 1
        raise StoreUnavailable(self.retry_after)

    def _unreachable(self, generation: int, exc: BaseException) -> None:
        with self._lock:
            now = self.clock()
            if self._down_since is not None:
                self._retry_at = now + self.retry_seconds
                return
            if generation != self._generation:
                return  # began before the store came back: old news
            self._down_since, self._retry_at, self._refused = now, now + self.retry_seconds, 0
            self._generation += 1
        logger.error(
            "credential store unreachable",
            extra={"error": describe(exc), "retry_seconds": self.retry_seconds},
        )

    def _reachable(self, generation: int) -> None:
        if self._down_since is None:
            return
        with self._lock:
            down_since = self._down_since
            if down_since is None or generation != self._generation:
                return  # already up, or began before the outage was noticed
            refused, self._refused = self._refused, 0
            self._down_since = None
            self._generation += 1
        logger.warning(
            "credential store reachable again",
            extra={
                "down_seconds": round(self.clock() - down_since, 3),
                "refused_calls": refused,
            },
        )
