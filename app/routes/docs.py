"""Swagger UI at /docs, served entirely by the app: no CDN, and a CSP that allows it.

FastAPI's built-in /docs loads Swagger UI from a CDN and runs an inline script,
which a strict Content-Security-Policy (and a closed network) breaks. Here the
assets come from the pinned ``swagger-ui-bundle`` package through a StaticFiles
mount limited to the files the page needs, and each HTML page carries its own CSP
that allows exactly its inline script by hash (no ``'unsafe-inline'`` for scripts).
The Nginx edge passes that policy through and adds its strict default everywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# Only what the page loads; the package also ships a demo index.html and source maps.
ASSET_FILES = frozenset(
    {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"}
)

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


class SwaggerAssets(StaticFiles):
    """StaticFiles over the vendored Swagger UI, answering 404 for anything not listed."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ASSET_FILES:
            raise HTTPException(404, "No such asset.")
        return await super().get_response(path, scope)


def content_security_policy(html: str) -> str:
    """A policy for one of our HTML pages: its inline scripts allowed by sha256 only."""
    digests = (hashlib.sha256(s.encode()).digest() for s in _INLINE_SCRIPT.findall(html))
    hashes = " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}".rstrip(),
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


class _Page:
    """A fixed HTML page with its own CSP, answered afresh on each request."""

    def __init__(self, response: HTMLResponse) -> None:
        self.html = bytes(response.body).decode()
        self.headers = {
            "Content-Security-Policy": content_security_policy(self.html),
            "Cache-Control": "no-cache",
        }

    def response(self) -> HTMLResponse:
        return HTMLResponse(self.html, headers=self.headers)


def install(app: FastAPI) -> None:
    """Add /docs, its OAuth2 redirect page and the asset mount. Build the app with
    ``docs_url=None`` (and ``redoc_url=None``) so FastAPI's CDN pages are not added."""
    openapi_url = app.openapi_url or "/openapi.json"
    parameters: dict[str, Any] = {
        **(app.swagger_ui_parameters or {}),
        # Swagger UI would otherwise fetch a validator badge from an outside host.
        "validatorUrl": None,
    }
    docs_page = _Page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )
    )
    redirect_page = _Page(get_swagger_ui_oauth2_redirect_html())

    async def docs() -> HTMLResponse:
        return docs_page.response()

    async def oauth2_redirect() -> HTMLResponse:
        return redirect_page.response()

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        OAUTH2_REDIRECT_PATH, oauth2_redirect, methods=["GET"], include_in_schema=False
    )
    app.mount(ASSETS_PATH, SwaggerAssets(directory=Path(swagger_ui_path)), name="swagger-ui")
