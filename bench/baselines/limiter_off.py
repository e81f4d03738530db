"""Our app with rate limiting off: issue 6's "limits off" twin.

The real app (``app.asgi.build``) with the SlowAPI limiter disabled (``enabled = False``: no
quota check, no quota headers) and the failed-authentication throttle replaced by one
that never refuses and counts nothing, since it too reads the limiter's storage on
every authenticated request. Authentication, guards and the predict path are unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.asgi import build as build_ours


class NoThrottle:
    def refusal(self, name: str) -> dict[str, str] | None:
        return None

    def failed(self, name: str) -> None:
        return None

    async def refusal_async(self, name: str) -> dict[str, str] | None:
        return None

    async def failed_async(self, name: str) -> None:
        return None


def build() -> FastAPI:
    app = build_ours()
    app.state.services.limiter.enabled = False
    app.state.services.auth_throttle = NoThrottle()
    return app
