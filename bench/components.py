"""What each part of a guarded prediction costs on its own, in process, without a profiler.

Run: ``python -m bench.components --model-dir DIR [--redis-port P]`` (``bench.run``
calls :func:`measure` with its models and its redis-server). Each figure is the median
over repeats of the mean µs per call, one thread, nothing else running. These are the
evidence behind the levers in docs/benchmarks.md: the threadpool hop FastAPI makes for
every plain ``def`` dependency and endpoint, the JWT check, the model, the quota's hit
(in memory and in Redis) and its RateLimit fields, and body validation. A part that
fails to measure (the app moved on) is reported as an error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.predict_path import per_call_us

SINGLE = b'{"lotsize": 5850.0, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}'


def _threadpool_hop(repeats: int) -> dict[str, float]:
    """One ``await run_in_threadpool(f)`` (FastAPI's way to call a plain ``def``)."""
    import uvloop
    from starlette.concurrency import run_in_threadpool

    def noop() -> None:
        return None

    async def hops(n: int) -> float:
        await run_in_threadpool(noop)  # start the worker thread
        start = time.perf_counter()
        for _ in range(n):
            await run_in_threadpool(noop)
        return (time.perf_counter() - start) / n * 1e6

    async def inline(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            noop()
        return (time.perf_counter() - start) / n * 1e6

    samples = [uvloop.run(hops(2000)) for _ in range(repeats)]
    baseline = [uvloop.run(inline(2000)) for _ in range(repeats)]
    return {
        "run_in_threadpool_us": sorted(samples)[len(samples) // 2],
        "inline_call_us": sorted(baseline)[len(baseline) // 2],
    }


def _jwt(repeats: int) -> dict[str, float]:
    from auth.jwt_keys import signing_keys_from_secret
    from auth.tokens import decode_access_token, issue_access_token

    keys = signing_keys_from_secret(b"b" * 48)
    issued = issue_access_token(
        keys,
        subject="cl_bench",
        client_id="cl_bench",
        scopes=frozenset({"predict"}),
        kind="client",
        plan="default",
        issuer="housing-api",
        audience="housing-api",
        ttl_seconds=900,
    )
    return {
        "decode_access_token_us": per_call_us(
            lambda: decode_access_token(
                keys, issued.token, issuer="housing-api", audience="housing-api"
            ),
            repeats,
        )
    }


def _model(model_dir: Path, repeats: int) -> dict[str, Any]:
    """LoadedModel.predict (a plan when the artifacts have one) for 1 and 1000 rows, the
    estimator's own predict, and each part of an averaging model on its own."""
    from ml.artifacts import load_verified
    from ml.plan_compiler import compile_predictor, probe_rows

    model = load_verified(model_dir, "v1")
    X = np.array([[5850.0, 3, 1, 2, 1]], dtype=np.float64)
    probe = probe_rows("v1")
    X1000 = probe[np.arange(1000) % len(probe)]
    out: dict[str, Any] = {
        "estimator": model.manifest.get("estimator", {}).get("name"),
        "predict_path": model.predict_path,
        "plan": "plan" in model.manifest,
        "loaded_model_predict_1_row_us": per_call_us(lambda: model.predict(X), repeats),
        "loaded_model_predict_1000_rows_us": per_call_us(lambda: model.predict(X1000), repeats),
        "estimator_predict_1_row_us": per_call_us(lambda: model.estimator.predict(X), repeats),
        "estimator_predict_1000_rows_us": per_call_us(
            lambda: model.estimator.predict(X1000), repeats
        ),
        "parts": {},
    }
    for name, part in getattr(model.estimator, "named_estimators_", {}).items():
        compiled = compile_predictor(part)
        action = compiled if compiled is not None else part.predict
        out["parts"][name] = {
            "class": type(part).__name__,
            "inner": type(getattr(part, "regressor_", part)).__name__,
            "compiled": compiled is not None,
            "predict_1_row_us": per_call_us(partial(action, X), repeats),
            "predict_1000_rows_us": per_call_us(partial(action, X1000), repeats),
            "sklearn_predict_1_row_us": per_call_us(partial(part.predict, X), repeats),
            "sklearn_predict_1000_rows_us": per_call_us(partial(part.predict, X1000), repeats),
            # Boosted trees: 0 (bit for bit); linear parts: last bits (summation order).
            "max_relative_difference_on_probe_rows": float(
                np.max(np.abs(action(probe) / part.predict(probe) - 1))
            ),
        }
    return out


def _quota(repeats: int, redis_port: int | None) -> dict[str, Any]:
    """What the guard does for the quota on each request: one hit (in memory, or one
    EVALSHA in Redis awaited on uvloop), the RateLimit fields of the answer, and the
    failed-authentication throttle's check of a caller address known to be clear."""
    import uvloop

    from app.limits import FailureThrottle, build_limiter
    from app.quota import MemoryQuota, Quota, parse_limit
    from app.settings import Settings

    item = parse_limit("100000000/minute")
    counters = [("predict:bench", item)]  # one account, no cap of its own
    memory = MemoryQuota()
    answer = memory.hit(counters, 1, time.time())
    out: dict[str, Any] = {
        "memory_hit_us": per_call_us(lambda: memory.hit(counters, 1, time.time()), repeats),
        "headers_us": per_call_us(answer.headers, repeats),
    }
    throttle = FailureThrottle(build_limiter(Settings()), "30/minute", "auth-fail")
    throttle.refusal("127.0.0.1")  # read once: known clear for a second
    out["throttle_clear_us"] = per_call_us(lambda: throttle.refusal("127.0.0.1"), repeats)
    if redis_port is not None:
        quota = Quota(f"redis://127.0.0.1:{redis_port}/15")

        async def hits(n: int) -> float:
            await quota.hit(counters)  # connect, load the script
            start = time.perf_counter()
            for _ in range(n):
                await quota.hit(counters)
            return (time.perf_counter() - start) / n * 1e6

        async def measure() -> list[float]:
            try:
                return [await hits(2000) for _ in range(repeats)]
            finally:
                await quota.close()

        samples = uvloop.run(measure())
        out["redis_hit_us"] = sorted(samples)[len(samples) // 2]
    return out


def _validation(repeats: int) -> dict[str, float]:
    from app.schemas import HouseV1

    return {
        "house_model_validate_json_us": per_call_us(
            lambda: HouseV1.model_validate_json(SINGLE), repeats
        ),
        "json_loads_then_model_validate_us": per_call_us(
            lambda: HouseV1.model_validate(json.loads(SINGLE)), repeats
        ),
    }


def measure(model_dir: Path, redis_port: int | None, repeats: int = 5) -> dict[str, Any]:
    parts: dict[str, Callable[[], Any]] = {
        "threadpool": lambda: _threadpool_hop(repeats),
        "jwt": lambda: _jwt(repeats),
        "model": lambda: _model(model_dir, repeats),
        "quota": lambda: _quota(repeats, redis_port),
        "validation": lambda: _validation(repeats),
    }
    out: dict[str, Any] = {}
    for name, action in parts.items():
        try:
            out[name] = action()
        except Exception as exc:  # report and go on: one part must not sink the run
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model_dir, args.redis_port, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
