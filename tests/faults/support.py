"""Load, recorded answer by answer, for the fault suite; and the server's own log events.

A :class:`Load` runs callers in threads, each on its own keep-alive connection (httpx,
as a partner's SDK would), until stopped. Every exchange is recorded with when it was
sent, how long it took, its status and the headers a fault test looks at, or the
transport error that replaced them (a reset, a connection closed under a request):
that is how "zero resets" is measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from tests.support.app_server import log_events

Send = Callable[[httpx.Client, int], httpx.Response]


@dataclass(frozen=True)
class Exchange:
    caller: str
    at: float  # seconds since the load started, when it was sent
    seconds: float  # how long the answer took
    status: int | None  # None: a transport error instead of an answer
    error: str | None = None
    retry_after: str | None = None
    body: Any = None  # the JSON body of an error answer


@dataclass
class Load:
    base_url: str
    started: float = field(default_factory=time.monotonic)
    exchanges: list[Exchange] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpx_level: int = logging.NOTSET

    def __post_init__(self) -> None:
        # One INFO record per request from httpx would be thousands per test: quiet it.
        httpx_logger = logging.getLogger("httpx")
        self._httpx_level = httpx_logger.level
        httpx_logger.setLevel(logging.WARNING)

    def now(self) -> float:
        return time.monotonic() - self.started

    def caller(self, name: str, send: Send, *, pause: float = 0.0) -> None:
        """Start a caller: ``send(client, i)`` again and again, ``pause`` s apart."""

        def run() -> None:
            with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
                i = 0
                while not self._stop.is_set():
                    sent = self.now()
                    try:
                        answer = send(client, i)
                    except httpx.TransportError as exc:
                        self._record(Exchange(name, sent, self.now() - sent, None, repr(exc)))
                    else:
                        self._record(self._exchange(name, sent, answer))
                    i += 1
                    if pause:
                        self._stop.wait(pause)

        thread = threading.Thread(target=run, name=f"load-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _exchange(self, name: str, sent: float, answer: httpx.Response) -> Exchange:
        body = None
        if answer.status_code >= 400:
            try:
                body = answer.json()
            except ValueError:
                body = answer.text[:200]
        elif name == "readyz":
            body = answer.json()
        return Exchange(
            name,
            sent,
            self.now() - sent,
            answer.status_code,
            retry_after=answer.headers.get("Retry-After"),
            body=body,
        )

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def sleep(self, seconds: float) -> None:
        """Let the callers run for ``seconds``."""
        self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        logging.getLogger("httpx").setLevel(self._httpx_level)

    def of(self, caller: str, start: float = 0.0, end: float = float("inf")) -> list[Exchange]:
        """``caller``'s exchanges sent within [start, end)."""
        with self._lock:
            return [e for e in self.exchanges if e.caller == caller and start <= e.at < end]

    def wait_for(self, caller: str, predicate: Callable[[Exchange], bool], timeout: float) -> float:
        """Time (since the load started) of the first exchange of ``caller`` sent from now
        on that satisfies ``predicate``; fails after ``timeout`` seconds."""
        since = self.now()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for exchange in self.of(caller, since):
                if predicate(exchange):
                    return exchange.at
            time.sleep(0.05)
        raise AssertionError(f"{caller}: nothing matched within {timeout}s")

    def summary(self, start: float = 0.0, end: float = float("inf")) -> dict[str, Counter[str]]:
        """caller -> Counter of statuses (or error class) within [start, end)."""
        found: dict[str, Counter[str]] = {}
        for e in self.exchanges:
            if start <= e.at < end:
                key = str(e.status) if e.status is not None else (e.error or "?").split("(")[0]
                found.setdefault(e.caller, Counter())[key] += 1
        return found


def transport_errors(exchanges: Iterable[Exchange]) -> list[Exchange]:
    return [e for e in exchanges if e.status is None]


def messages(stderr: str, message: str) -> list[dict[str, Any]]:
    return [e for e in log_events(stderr) if e.get("message") == message]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Limits no load of the fault suite reaches, unless a test sets its own.
UNLIMITED = {
    "RATE_LIMIT_PREDICT": "1000000/minute",
    "RATE_LIMIT_TOKEN": "1000000/minute",
    "RATE_LIMIT_TOKEN_ISSUANCE": "1000000/minute",
    "RATE_LIMIT_AUTH_FAILURES": "1000000/minute",
    "MAX_INFLIGHT_PREDICTIONS": "1000",
}


def deployment_config(
    root: Path, model_dir: Path, database_url: str | None = None, **values: str
) -> tuple[dict[str, str], Settings]:
    """The environment of a ``serve`` under fault (limits off unless ``values`` set
    them), and the same settings in process, to make its credentials beforehand."""
    database_url = database_url or f"sqlite:///{root / 'var' / 'housing.db'}"
    env = {
        "APP_ENV": "development",
        "VAR_DIR": str(root / "var"),
        "DATABASE_URL": database_url,
        "MODEL_DIR": str(model_dir),
        "DRIFT_REFRESH_SECONDS": "0",
        **UNLIMITED,
        **values,
    }
    settings = Settings(
        _env_file=None, var_dir=root / "var", database_url=database_url, model_dir=model_dir
    )
    return env, settings
