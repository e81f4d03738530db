"""SIGTERM under load loses nothing: a short loop of ``python -m bench.sigterm``.

Each run starts ``housing-api serve``, sends predictions from eight keep-alive
connections and sends SIGTERM to the server mid-stream; every request must be answered
(with the status the server logged) or refused before it was sent (connection refused:
nothing listens any more). None may be reset or cut off after it was sent. The full
20-run loop is ``python -m bench.sigterm --runs 20 [--workers 2]`` (README, "Failure
modes"). Under gunicorn the same check runs on the two-worker server of
tests/faults/test_redis.py, at the end of its module, so as not to start another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sigterm import run_many

pytestmark = pytest.mark.slow


def test_sigterm_under_load_loses_nothing(trained_model_dir: Path) -> None:
    results = run_many(trained_model_dir, 2, workers=1, threads=8, before=100)
    report = "\n".join(result.line() for result in results)
    print(f"\n{report}")
    assert all(result.passed for result in results), report
    assert all(result.answered[200] >= 100 for result in results), report
