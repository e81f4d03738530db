"""Property: a house in range gets a finite price; anything else gets 422, never a 500."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.settings import Settings
from ml.features import FEATURES, Feature

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class PortalClient:
    """Drive the async app from a sync hypothesis test through a blocking portal."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def post(self, path: str, content: str) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return self.portal.call(lambda: self.client.post(path, content=content, headers=headers))


@pytest.fixture
def portal_client(settings: Settings) -> Iterator[PortalClient]:
    app = create_app(settings)
    with start_blocking_portal() as portal:
        lifespan = portal.wrap_async_context_manager(app.router.lifespan_context(app))
        with lifespan:
            transport = httpx.ASGITransport(app=app)
            _, api_key = app.state.services.store.api_keys.create("property-tests", "predict")
            client = httpx.AsyncClient(
                transport=transport, base_url="http://testserver", headers={"X-API-Key": api_key}
            )
            try:
                yield PortalClient(portal, client)
            finally:
                portal.call(client.aclose)


def valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.kind == "bool":
        return st.booleans()
    if feature.kind == "int":
        return st.integers(feature.lower, feature.upper)
    return st.floats(feature.lower, feature.upper, allow_nan=False, allow_infinity=False)


def valid_house(version: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: valid_value(f) for f in FEATURES[version]})  # type: ignore[index]


def invalid_value(feature: Feature) -> st.SearchStrategy[Any]:
    wrong_type = st.one_of(
        st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2), st.just({})
    )
    if feature.kind == "bool":
        return st.one_of(wrong_type, st.integers(), st.floats())
    out_of_range = st.one_of(
        st.integers(max_value=feature.lower - 1),
        st.integers(min_value=feature.upper + 1),
        st.floats(max_value=feature.lower - 0.001, allow_nan=False),
        st.floats(min_value=feature.upper + 0.001, allow_nan=False),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    )
    fractional = st.floats(feature.lower + 0.01, feature.upper - 0.01).filter(lambda x: x % 1 != 0)
    strategies = [wrong_type, st.booleans(), out_of_range]
    if feature.kind == "int":
        strategies.append(fractional)
    return st.one_of(*strategies)


@st.composite
def invalid_house(draw: st.DrawFn, version: str) -> dict[str, Any]:
    house = draw(valid_house(version))
    features = FEATURES[version]  # type: ignore[index]
    feature = draw(st.sampled_from(features))
    mutation = draw(st.sampled_from(["bad_value", "missing", "extra"]))
    if mutation == "bad_value":
        house[feature.name] = draw(invalid_value(feature))
    elif mutation == "missing":
        del house[feature.name]
    else:
        name = draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in house))
        house[name] = draw(st.integers())
    return house


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_valid_houses_get_finite_prices(portal_client: PortalClient, version: str) -> None:
    @SETTINGS
    @given(house=valid_house(version))
    def check(house: dict[str, Any]) -> None:
        response = portal_client.post(f"/{version}/predict", json.dumps(house))
        assert response.status_code == 200, response.text
        assert math.isfinite(response.json()["predicted_price"])

    check()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_invalid_houses_get_422_never_500(portal_client: PortalClient, version: str) -> None:
    @SETTINGS
    @given(house=invalid_house(version))
    def check(house: dict[str, Any]) -> None:
        response = portal_client.post(f"/{version}/predict", json.dumps(house, allow_nan=True))
        assert response.status_code == 422, (house, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")

    check()
