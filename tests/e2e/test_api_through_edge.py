"""The API through the edge: tokens, predictions, and the client address the app sees."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from limits import parse

from app.settings import Settings
from tests.e2e.support import HOUSE_V1, HOUSE_V2, Edge, next_source_address

pytestmark = pytest.mark.slow

# The replicas run with the defaults (tests.support.app_server.app_env strips the rest).
TOKEN_LIMIT = parse(Settings.model_fields["rate_limit_token"].default).amount
# The contract: a revoked token is refused by every worker within 5 seconds.
REVOCATION_DELAY_S = 5.5


def test_token_then_predictions_with_the_token_and_with_an_api_key(edge: Edge) -> None:
    creds = edge.credentials
    with edge.client() as client:
        issued = client.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": "predict"},
            auth=(creds.client_id, creds.client_secret),
        )
        assert issued.status_code == 200, issued.text
        assert issued.headers["cache-control"] == "no-store"
        body = issued.json()
        assert (body["token_type"], body["scope"]) == ("bearer", "predict")
        bearer = {"Authorization": f"Bearer {body['access_token']}"}

        v1 = client.post("/v1/predict", json=HOUSE_V1, headers=bearer)
        assert v1.status_code == 200, v1.text
        assert v1.json()["model_version"] == "v1"
        assert v1.json()["predicted_price"] > 0

        v2 = client.post("/v2/predict", json=HOUSE_V2, headers={"X-API-Key": creds.api_key})
        assert v2.status_code == 200, v2.text
        assert v2.json()["model_version"] == "v2"

        batch = client.post(
            "/v1/predict/batch",
            json={"instances": [HOUSE_V1, HOUSE_V1]},
            headers={"X-API-Key": creds.api_key},
        )
        assert batch.status_code == 200
        assert batch.json()["predictions"] == [v1.json()["predicted_price"]] * 2

        # Revoked at one replica; every worker of every replica refuses it within 5 s.
        revoked = client.post(
            "/revoke",
            data={"token": body["access_token"]},
            auth=(creds.client_id, creds.client_secret),
        )
        assert revoked.status_code == 200
        time.sleep(REVOCATION_DELAY_S)
        for _ in range(4):  # round-robin: each replica's workers get some of them
            refused = client.post("/v1/predict", json=HOUSE_V1, headers=bearer)
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"


def _spoofed_token_attempts(client: httpx.Client, url: str, count: int) -> list[int]:
    """``count`` failed /token attempts, each for a different unknown client (so only
    the per-address limit can apply) and each claiming a different client address."""
    statuses = []
    for i in range(count):
        fake = f"203.0.113.{i + 1}"
        headers = {
            "X-Forwarded-For": fake,
            "X-Real-IP": fake,
            "Forwarded": f"for={fake}",
            "X-Forwarded-Host": f"h{i}.example",
        }
        answer = client.post(
            url,
            data={"grant_type": "client_credentials"},
            auth=(f"cl_unknown_{secrets.token_hex(6)}", "wrong"),
            headers=headers,
        )
        statuses.append(answer.status_code)
    return statuses


def test_a_spoofed_forwarded_for_does_not_change_the_client_address(edge: Edge) -> None:
    """Every attempt counts against the one real address, whatever the client claims:
    the per-address /token limit throttles the attempt after the limit, and only that
    address."""
    source = next_source_address()
    with edge.client(source) as client:
        statuses = _spoofed_token_attempts(client, "/token", TOKEN_LIMIT + 2)
        throttled = client.post("/token", data={"grant_type": "client_credentials"})
    assert statuses == [401] * TOKEN_LIMIT + [429, 429]
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "slow_down"
    assert "retry-after" in throttled.headers

    # Another address is not throttled: the limit is keyed on the real address.
    with edge.client() as other:
        assert _spoofed_token_attempts(other, "/token", 1) == [401]

    # Control: the replicas do believe X-Forwarded-For from a trusted peer (Nginx's
    # address), so forwarding the client's header would have let it pick a fresh
    # address for every attempt. Straight to a replica from 127.0.0.1, none is throttled.
    with httpx.Client(timeout=10.0) as direct:
        url = f"{edge.stack.replica_url(0)}/token"
        assert _spoofed_token_attempts(direct, url, TOKEN_LIMIT + 2) == [401] * (TOKEN_LIMIT + 2)
