"""What every answer through the edge looks like: redirects, headers, hidden paths."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.support import EDGE_CSP, HOUSE_V1, SECURITY_HEADERS, Edge, read_json_lines

pytestmark = pytest.mark.slow


def test_plain_http_answers_308_to_https_except_the_acme_challenge(edge: Edge) -> None:
    http = f"http://localhost:{edge.stack.http_port}"
    https = edge.base_url
    with httpx.Client(timeout=10.0) as client:
        for method, path in [("GET", "/v1/model?x=1&y=2"), ("POST", "/token"), ("GET", "/")]:
            answer = client.request(method, http + path)
            assert answer.status_code == 308, (method, path)
            assert answer.headers["location"] == https + path
            assert "strict-transport-security" not in answer.headers  # meaningless over HTTP

        # certbot --webroot puts its token here; it is served as is, not redirected.
        challenge = edge.stack.nginx_runtime / "acme" / ".well-known" / "acme-challenge"
        challenge.mkdir(parents=True, exist_ok=True)
        (challenge / "token-123").write_text("token-123.thumbprint")
        answer = client.get(f"{http}/.well-known/acme-challenge/token-123")
        assert (answer.status_code, answer.text) == (200, "token-123.thumbprint")
        assert answer.headers["content-type"].startswith("text/plain")
        assert client.get(f"{http}/.well-known/acme-challenge/missing").status_code == 404


def test_security_headers_on_every_kind_of_answer(edge: Edge) -> None:
    too_large = b"x" * (1024 * 1024 + 1)
    with edge.client() as client:
        answers = {
            "app 200": client.get("/healthz"),
            "app 401": client.post("/v1/predict", json=HOUSE_V1),
            "app 404": client.get("/no-such-path"),
            "edge 404": client.get("/metrics"),
            "edge 413": client.post(
                "/v1/predict", content=too_large, headers={"Content-Type": "application/json"}
            ),
        }
    assert [a.status_code for a in answers.values()] == [200, 401, 404, 404, 413]
    for kind, answer in answers.items():
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get_list(name) == [value], (kind, name)
        assert answer.headers.get_list("content-security-policy") == [EDGE_CSP], kind
        # Nginx without its version, and nothing of the app server behind it.
        assert answer.headers.get_list("server") == ["nginx"], kind
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"]), kind
        assert "x-powered-by" not in answer.headers


def test_docs_carries_the_apps_csp_with_no_inline_script_allowance(edge: Edge) -> None:
    with edge.client() as client:
        docs = client.get("/docs")
        asset = client.get("/docs/assets/swagger-ui-bundle.js")
        demo = client.get("/docs/assets/index.html")  # shipped by the package, not served
    assert docs.status_code == 200
    [csp] = docs.headers.get_list("content-security-policy")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"].startswith("'self' 'sha256-")
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert "cdn" not in docs.text
    assert "https://" not in docs.text
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert demo.status_code == 404


def test_metrics_is_not_reachable_through_the_edge(edge: Edge) -> None:
    headers = {"X-API-Key": edge.credentials.metrics_api_key}
    with edge.client() as client:
        for path in ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/metrics?x=1"):
            answer = client.get(httpx.URL(edge.base_url + path), headers=headers)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"] == "application/problem+json"
    # The replica itself serves it to the same key: it is the edge that hides it.
    direct = httpx.get(f"{edge.stack.replica_url(0)}/metrics", headers=headers, timeout=10.0)
    assert direct.status_code == 200
    assert "# TYPE" in direct.text


def test_request_id_is_set_by_nginx_and_reaches_the_app(edge: Edge) -> None:
    forged = "client-chosen-request-id-0001"
    with edge.client() as client:
        answer = client.get("/healthz", headers={"X-Request-ID": forged})
    request_id = answer.headers["x-request-id"]
    assert request_id != forged
    assert answer.headers.get_list("x-request-id") == [request_id]
    [entry] = edge.log_entries({request_id})
    upstream = entry["upstream"]
    replica = edge.replica_addresses.index(upstream)
    log_path = edge.stack.root / "logs" / f"replica-{replica + 1}.log"
    deadline = time.monotonic() + 5  # the app's log writer flushes every 20 ms
    while not any(line.get("request_id") == request_id for line in read_json_lines(log_path)):
        assert time.monotonic() < deadline, "the request's log event never reached the log"
        time.sleep(0.05)
    assert not any(line.get("request_id") == forged for line in read_json_lines(log_path))


def test_a_trailing_slash_is_a_404_through_the_edge_never_a_redirect(edge: Edge) -> None:
    """The app builds no redirect from the request's Host or X-Forwarded-Proto: a path
    with a trailing slash is an unknown path (issue 14), whatever the client claims."""
    with edge.client() as client:
        answer = client.get("/healthz/", headers={"X-Forwarded-Proto": "http"})
    assert answer.status_code == 404
    assert "location" not in answer.headers
