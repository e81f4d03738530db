"""A pytest plugin: no log record of the whole test run may carry a secret.

Every record any logger emits during the session (ours, uvicorn's, httpx's,
SlowAPI's...) is checked, before formatting or redaction, against the shapes of
our secrets: bearer tokens, JWTs, API keys, Basic credentials and
``secret=``/``password=`` pairs. The run fails if one is found.
"""

from __future__ import annotations

import json
import logging

import pytest

from monitoring.logs import SECRET_PATTERNS

_leaks: list[str] = []


class _SecretSniffer(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage() + " " + json.dumps(record.__dict__, default=str)
        except Exception:  # a record that cannot render cannot leak through us either
            return
        for pattern in SECRET_PATTERNS:
            match = pattern.search(text)
            if match:
                _leaks.append(
                    f"{record.name}: {match.group(0)[:16]}… in {record.getMessage()[:80]}"
                )


_sniffer = _SecretSniffer(level=logging.DEBUG)


def pytest_sessionstart(session: pytest.Session) -> None:
    root = logging.getLogger()
    root.addHandler(_sniffer)
    root.setLevel(min(root.level, logging.INFO))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_sniffer)
    if _leaks:
        print("\nSecrets found in log records:\n  " + "\n  ".join(_leaks[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
