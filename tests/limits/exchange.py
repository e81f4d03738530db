"""One HTTP request driven by hand against the ASGI app, as a server would drive it:
headers at once, the body only when asked for (and counted), the answer recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI

from tests.limits.conftest import HOUSE, OUTSIDER

BODY = orjson.dumps(HOUSE)


class Exchange:
    """One HTTP request driven by hand: headers at once, the body only when asked for."""

    def __init__(
        self,
        headers: dict[str, str],
        *,
        body: bytes = BODY,
        path: str = "/v1/predict",
        chunks: int = 1,
        gap: float = 0.0,
        hold: asyncio.Event | None = None,
    ) -> None:
        self.headers = {"content-type": "application/json", "content-length": str(len(body))}
        self.headers.update({k.lower(): v for k, v in headers.items()})
        self.path = path
        step = max(1, len(body) // chunks)
        self.parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        self.gap = gap
        self.hold = hold  # set: the answer is taken only once it is set
        self.answering = asyncio.Event()
        self.body_reads = 0
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.body = b""

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in self.headers.items()],
            "client": (OUTSIDER, 50000),
            "server": ("testserver", 80),
        }

    async def receive(self) -> dict[str, Any]:
        if self.body_reads >= len(self.parts):
            await asyncio.sleep(3600)  # the client sends nothing more
        if self.body_reads and self.gap:
            await asyncio.sleep(self.gap)
        part = self.parts[self.body_reads]
        self.body_reads += 1
        more = self.body_reads < len(self.parts)
        return {"type": "http.request", "body": part, "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = {k.decode(): v.decode() for k, v in message["headers"]}
            self.answering.set()
            if self.hold is not None:
                await self.hold.wait()  # a client that is slow to take its answer
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def run(self, app: FastAPI) -> Exchange:
        await app(self.scope(), self.receive, self.send)
        return self

    def problem(self) -> dict[str, Any]:
        assert self.response_headers["content-type"] == "application/problem+json"
        document: dict[str, Any] = orjson.loads(self.body)
        assert document["status"] == self.status
        return document
