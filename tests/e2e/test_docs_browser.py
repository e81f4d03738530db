"""/docs in a real browser, through the edge: Debian's Chromium driven by Playwright.

The page must render under the CSP with every asset from the app itself, and a
"Try it out" prediction must succeed after Authorize, with an API key and with an
OAuth2 client-credentials token that Swagger UI fetches from /token. A screenshot is
kept in var/test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import HOUSE_V1, HOUSE_V2, Edge

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest keep it off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Collects CSP violations from the page itself (init scripts are not subject to CSP).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""
UNSUPPORTED_UI = (
    "Swagger UI could not render the OpenAPI 3.1 document: the installed swagger-ui-bundle "
    "ships Swagger UI 4 (OpenAPI 3.0 only). Pin swagger-ui-bundle-v2==5.31.0 (Swagger UI "
    "5.31) instead of swagger-ui-bundle==1.1.0."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(str(CHROMIUM)) is None:
        pytest.fail("Debian's chromium is not installed: run `make system-deps`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def try_it_out(
    page: Any, path: str, body: dict[str, Any], screenshot: Path
) -> tuple[str, dict[str, Any], str]:
    """Expand POST ``path``, Try it out with ``body``, Execute: (status, JSON, curl);
    the answer as shown goes to ``screenshot``."""
    operation = page.locator(".opblock-post", has=page.locator(f'[data-path="{path}"]'))
    if not operation.locator(".try-out__btn").is_visible():
        operation.locator(".opblock-summary").click()
    if operation.locator("textarea.body-param__text").count() == 0:
        operation.locator(".try-out__btn").click()
    operation.locator("textarea.body-param__text").fill(json.dumps(body))
    operation.locator(".execute").click()
    status_cell = operation.locator(".live-responses-table tbody .response-col_status").first
    status_cell.wait_for(timeout=30_000)
    status = status_cell.inner_text().strip()
    text = operation.locator(".live-responses-table tbody .microlight").first.inner_text()
    curl = operation.locator(".curl-command").inner_text()
    operation.locator(".live-responses-table").first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot))
    operation.locator(".btn-clear").click()
    return status, json.loads(text), curl


def test_docs_render_under_the_csp_and_try_it_out_works(
    edge: Edge, browser: Any, artifacts_dir: Path
) -> None:
    creds = edge.credentials
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script(RECORD_VIOLATIONS)
    requested: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        response = page.goto(f"{edge.base_url}/docs")
        assert response is not None
        assert response.status == 200
        title = page.locator(".information-container .title")
        title.or_(page.get_by_text("Unable to render this definition")).first.wait_for()
        assert title.is_visible(), UNSUPPORTED_UI
        assert "Housing price API" in title.inner_text()
        page.screenshot(path=str(artifacts_dir / "docs.png"), full_page=True)

        # Authorize with the API key, then a prediction.
        page.locator("button.authorize").first.click()
        modal = page.locator(".modal-ux")
        api_key = modal.locator(".auth-container").filter(has_text="X-API-Key")
        api_key.locator("input").fill(creds.api_key)
        api_key.locator("button.authorize").click()
        assert "Authorized" in api_key.inner_text()
        modal.locator("button.btn-done").first.click()
        status, body, curl = try_it_out(
            page, "/v1/predict", HOUSE_V1, artifacts_dir / "docs-try-it-out-api-key.png"
        )
        assert status == "200", body
        assert body["model_version"] == "v1"
        assert body["predicted_price"] > 0
        assert "X-API-Key" in curl

        # Authorize with OAuth2 client credentials: Swagger UI calls /token itself.
        page.locator("button.authorize").first.click()
        api_key.locator("button", has_text="Logout").click()
        flow = modal.locator(".auth-container").filter(has_text="clientCredentials")
        flow.locator("input[data-name=clientId]").fill(creds.client_id)
        flow.locator("input[data-name=clientSecret]").fill(creds.client_secret)
        flow.locator('label[for="predict-clientCredentials-checkbox-OAuth2"]').click()
        flow.locator("button.authorize").click()
        flow.locator("button", has_text="Logout").wait_for()
        modal.locator("button.btn-done").first.click()
        status, body, curl = try_it_out(
            page, "/v2/predict", HOUSE_V2, artifacts_dir / "docs-try-it-out-oauth2.png"
        )
        assert status == "200", body
        assert body["model_version"] == "v2"
        assert "Authorization: Bearer" in curl

        violations = page.evaluate("window.__cspViolations")
    finally:
        context.close()

    assert violations == []
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    # Every request went to the edge itself: no CDN, no validator badge, nothing else.
    assert requested
    assert all(url.startswith(edge.base_url + "/") for url in requested), requested
    assert {f"{edge.base_url}/docs/assets/swagger-ui-bundle.js", f"{edge.base_url}/token"} <= set(
        requested
    )
