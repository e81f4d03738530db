"""/docs: Swagger UI from the app's own assets, under a CSP that allows exactly its
inline script (the browser run through the TLS edge is in tests/e2e/)."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_docs_page_allows_its_inline_script_by_hash_only(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")  # public
    for path in ("/docs", "/docs/oauth2-redirect"):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        [csp] = answer.headers.get_list("content-security-policy")
        script_src = next(d for d in csp.split("; ") if d.startswith("script-src "))
        scripts = re.findall(r"<script>(.*?)</script>", answer.text, re.DOTALL)
        assert scripts, path
        hashes = {
            f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
            for s in scripts
        }
        assert set(script_src.split()[1:]) == {"'self'", *hashes}, path
        assert "unsafe" not in csp
        assert "default-src 'none'" in csp


async def test_docs_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert urls
    assert all(url.startswith("/docs/assets/") for url in urls), urls
    assert "validatorUrl" in page  # the outside validator badge is switched off
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content


@pytest.mark.parametrize(
    "path", ["/docs/assets/index.html", "/docs/assets/swagger-initializer.js", "/docs/assets/"]
)
async def test_only_the_pages_assets_are_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


async def test_no_cdn_pages_remain(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404
    schema = (await client.get("/openapi.json")).json()
    assert not any(path.startswith("/docs") for path in schema["paths"])
