"""The bare endpoint (a) plus a fixed CPU cost per request: a diagnostic, not a scenario.

It separates what our p99 owes to our code from what any saturated event loop does with
requests of our cost. ``BENCH_BUSY_US`` (default 800) microseconds of CPU per request,
spent in a loop that holds the GIL, as our guarded prediction does:

    .venv/bin/uvicorn --factory bench.baselines.busy:build --port 18777 \\
        --loop uvloop --http httptools --no-access-log
    echo '{"lotsize": 5850.0, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}' \\
        > /tmp/house.json
    BENCH_BODY_FILE=/tmp/house.json wrk -t2 -c32 -d5s --latency \\
        -s bench/wrk/post_json.lua http://127.0.0.1:18777/v1/predict
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI

from app.schemas import HouseV1
from bench.baselines.bare import ANSWER


def build() -> FastAPI:
    busy_s = int(os.environ.get("BENCH_BUSY_US", "800")) / 1e6
    app = FastAPI(title="busy")

    @app.post("/v1/predict")
    async def predict(house: HouseV1) -> Any:
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        return ANSWER

    return app
