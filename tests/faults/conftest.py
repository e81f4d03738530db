"""The fault suite's own dependencies: real servers that its tests stop, restart and
freeze, so no other test ever sees a dependency taken away under it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres
from tests.support.redis import RedisServer, running_redis


@pytest.fixture(scope="module")
def fault_postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def fault_redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server
