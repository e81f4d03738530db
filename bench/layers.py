"""CPU per request of each layer of a guarded prediction, in process, without HTTP.

Run: ``python -m bench.layers --model-dir DIR`` (``bench.run`` runs it in a subprocess,
its stderr, where the app's JSON log goes, sent to a file). Prints one JSON object.

The apps are driven through ASGI directly, one request at a time on uvloop, with
nothing else in the process: no server, no sockets, no load generator. That removes the
noise a shared machine puts into wall-clock figures and leaves what each layer costs
in CPU (``time.process_time``, every thread of the process: the log writer's work is
counted, the queue drained before the clock stops). Entering the guarded app's
middleware chain at each layer in turn gives, by difference:

* ``request context``: the request id, ``Server-Timing``, the metrics and the JSON log
  event (``RequestContextMiddleware``, the writer thread included), with FastAPI's own
  outer middlewares; the log event alone by disabling the ``app.requests`` logger for
  one case (an ablation in this process only);
* ``guard``: the guard layer with the JWT check, the scope, the quota hit and the
  RateLimit fields (``PredictionGuard`` and what it calls); proxy headers are within;
* ``FastAPI route``: routing, the route's dependencies (``authenticate`` finding the
  principal in the scope, ``require_json``, the models), the body's parsing and
  validation, the model, the answer, the exception middlewares;

and, beside them, the same for the baselines (a) bare and (m) bare + the same model, and
each refusal of the guard. What the server adds over HTTP (uvicorn's parsing and
writing, the sockets) is the same for every app and missing here: the HTTP figures of
``bench.run`` include it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY = b'{"lotsize": 5850.0, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}'
MIB = 1024 * 1024


def scope_for(path: str, headers: list[tuple[bytes, bytes]], length: int) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(
    app: ASGIApp, base: Scope, body: bytes, state: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    """One request through ``app``: (status, body)."""
    scope = dict(base)
    scope["state"] = dict(state or {})
    sent = False
    status = 0
    answer = b""

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects here
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, answer
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer += message.get("body", b"")

    await app(scope, receive, send)
    return status, answer


def drained() -> None:
    """Until the JSON log's writer thread has taken every queued event."""
    for handler in logging.getLogger().handlers:
        queue = getattr(handler, "queue", None)
        if queue is None:
            continue
        deadline = time.monotonic() + 10
        while not queue.empty() and time.monotonic() < deadline:
            time.sleep(0.001)
    time.sleep(0.005)  # the last event being written


async def cpu_us(request: Callable[[], Awaitable[tuple[int, bytes]]], n: int) -> float:
    """Process CPU per request over ``n`` requests, the log's queue drained."""
    drained()
    start = time.process_time()
    for _ in range(n):
        await request()
    drained()
    return (time.process_time() - start) / n * 1e6


def chain(app: Any) -> list[Any]:
    """The middleware instances from the app's outermost layer inwards."""
    layers: list[Any] = []
    node = app.middleware_stack
    while node is not None and len(layers) < 30:
        layers.append(node)
        node = getattr(node, "app", None)
    return layers


async def measure(model_dir: Path, n: int, repeats: int) -> dict[str, Any]:
    from app.guard import PredictionGuard
    from app.main import create_app
    from app.request_context import RequestContextMiddleware
    from app.settings import Settings
    from bench.baselines import bare, bare_model
    from monitoring.logs import configure_logging

    configure_logging()
    out: dict[str, Any] = {"requests_per_sample": n, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,
            app_env="development",
            var_dir=Path(tmp),
            database_url=f"sqlite:///{Path(tmp) / 'housing.db'}",
            model_dir=model_dir,
            rate_limit_predict="100000000/minute",
            rate_limit_auth_failures="100000000/second",
            rate_limit_plans={"tiny": "1/hour"},
            max_inflight_predictions=10_000,
            max_concurrent_body_reads=10_000,
            prediction_log_enabled=False,
            drift_refresh_seconds=0,
        )
        ours = create_app(settings)
        os.environ["MODEL_DIR"] = str(model_dir)  # the baselines read Settings()
        baselines = {"a": bare.build(), "m": bare_model.build()}
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(ours.router.lifespan_context(ours))
            store = ours.state.services.store
            client_id, secret = store.clients.create("layers", "predict")
            api_key = store.api_keys.create("layers", "predict")[1]
            tiny_key = store.api_keys.create("layers-tiny", "predict", "tiny")[1]
            basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            form = b"grant_type=client_credentials&scope=predict"
            token_scope = scope_for(
                "/token",
                [(b"authorization", f"Basic {basic}".encode())],
                len(form),
            )
            token_scope["headers"] = [
                (k, b"application/x-www-form-urlencoded" if k == b"content-type" else v)
                for k, v in token_scope["headers"]
            ]
            status, raw = await call(ours, token_scope, form)
            if status != 200:
                raise RuntimeError(f"/token answered {status}: {raw[:300]!r}")
            token = json.loads(raw)["access_token"]
            head, _, signature = token.rpartition(".")
            forged = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"

            def bearer(value: str) -> list[tuple[bytes, bytes]]:
                return [(b"authorization", f"Bearer {value}".encode())]

            path = "/v1/predict"
            plain = scope_for(path, [], len(BODY))
            jwt = scope_for(path, bearer(token), len(BODY))
            # FastAPI's own entry sets this; entering the chain further in needs it set.
            jwt["app"] = ours
            key = scope_for(path, [(b"x-api-key", api_key.encode())], len(BODY))
            await call(ours, jwt, BODY)  # builds the middleware stack
            layers = chain(ours)
            out["chain"] = [type(layer).__name__ for layer in layers]
            context = next(x for x in layers if isinstance(x, RequestContextMiddleware))
            guard = next(x for x in layers if isinstance(x, PredictionGuard))
            _, preset = await guarded_state(guard, jwt)

            tiny = scope_for(path, [(b"x-api-key", tiny_key.encode())], len(BODY))
            while (await call(ours, tiny, BODY))[0] != 429:
                pass
            oversize = scope_for(path, [], MIB + 1)

            request_log = logging.getLogger("app.requests")

            async def without_request_log() -> tuple[int, bytes]:
                request_log.disabled = True
                try:
                    return await call(ours, jwt, BODY)
                finally:
                    request_log.disabled = False

            cases: dict[str, tuple[Callable[[], Awaitable[tuple[int, bytes]]], int]] = {
                "a": (lambda: call(baselines["a"], plain, BODY), 200),
                "m": (lambda: call(baselines["m"], plain, BODY), 200),
                "c": (lambda: call(ours, jwt, BODY), 200),
                "c without the request's JSON log event": (without_request_log, 200),
                "c below the request context": (lambda: call(context.app, jwt, BODY), 200),
                "c below the guard": (lambda: call(guard.app, jwt, BODY, preset), 200),
                "d": (lambda: call(ours, key, BODY), 200),
                "n401": (lambda: call(ours, plain, BODY), 401),
                "f401": (lambda: call(ours, scope_for(path, bearer(forged), len(BODY)), BODY), 401),
                "q429": (lambda: call(ours, tiny, BODY), 429),
                "s413": (lambda: call(ours, oversize, BODY), 413),
            }
            for name, (request, expect) in cases.items():
                status, answer = await request()  # warm, and the status checked
                if status != expect:
                    raise RuntimeError(f"{name}: {status}, expected {expect}: {answer[:300]!r}")
            samples: dict[str, list[float]] = {name: [] for name in cases}
            order = list(cases)
            for repeat in range(repeats):
                # A rotated order per repeat: the machine's drift falls on every case alike.
                k = repeat % len(order)
                for name in order[k:] + order[:k]:
                    samples[name].append(await cpu_us(cases[name][0], n))
            out["samples_us"] = samples
            out["cpu_us_per_request"] = {k: statistics.median(v) for k, v in samples.items()}

            def paired(top: str, bottom: str) -> float:
                return statistics.median(
                    t - b for t, b in zip(samples[top], samples[bottom], strict=True)
                )

            out["layers_us"] = {
                "request context: the JSON log event (built on the loop, written by a thread)": (
                    paired("c", "c without the request's JSON log event")
                ),
                "request context: the rest (request id, Server-Timing, metrics) and FastAPI's "
                "outer middlewares": paired(
                    "c without the request's JSON log event", "c below the request context"
                ),
                "guard (credentials, scope, quota, RateLimit fields, admission)": paired(
                    "c below the request context", "c below the guard"
                ),
                "FastAPI route (routing, dependencies, body, model, answer)": (
                    out["cpu_us_per_request"]["c below the guard"]
                ),
                "of which more than (m), the same model bare": paired("c below the guard", "m"),
            }
    return out


async def guarded_state(guard: Any, scope: Scope) -> tuple[int, dict[str, Any]]:
    """The scope state the guard leaves for the route (principal, quota), taken from one
    request through it, to enter the chain below it."""
    seen: dict[str, Any] = {}
    inner = guard.app

    async def spy(s: Scope, receive: Receive, send: Send) -> None:
        seen.update(s["state"])
        await inner(s, receive, send)

    guard.app = spy
    try:
        status, _ = await call(guard, scope, BODY)
    finally:
        guard.app = inner
    return status, {k: v for k, v in seen.items() if k in ("principal", "quota", "guarded_route")}


def main(argv: list[str] | None = None) -> int:
    import uvloop

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    result = uvloop.run(measure(args.model_dir, args.requests, args.repeats))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
