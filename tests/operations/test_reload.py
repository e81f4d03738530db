"""Reloading the models without a restart: verified first, all or nothing, in place."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.operations.conftest import api_key, http
from tests.operations.support import (
    claim_other_libraries,
    corrupt_model,
    remove_manifest,
    republish,
)
from tests.support.houses import V1_HOUSE, V2_HOUSE

pytestmark = pytest.mark.anyio

RELOAD = "/admin/models/reload"


def gauge(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_reloading_needs_the_admin_scope(running: FastAPI) -> None:
    async with http(running) as anonymous:
        answer = await anonymous.post(RELOAD)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
    async with http(running, **api_key(running, "predict models:read metrics")) as client:
        answer = await client.post(RELOAD)
        assert answer.status_code == 403
        assert 'scope="admin"' in answer.headers["WWW-Authenticate"]


async def test_a_reload_swaps_in_new_verified_artifacts(running: FastAPI, model_dir: Path) -> None:
    old = {version: model.sha256 for version, model in running.state.services.models.items()}
    new_v1 = republish(model_dir, "v1", "release-2")
    async with http(running, **api_key(running, "admin predict metrics")) as client:
        answer = await client.post(RELOAD)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "reloaded"
        assert body["other_workers_signalled"] == 0  # one process: nobody else to tell
        by_version = {m["version"]: m for m in body["models"]}
        assert by_version["v1"]["sha256"] == new_v1
        assert by_version["v1"]["previous_sha256"] == old["v1"]
        assert by_version["v1"]["changed"] is True
        assert by_version["v2"]["changed"] is False
        assert by_version["v2"]["sha256"] == old["v2"]

        predicted = await client.post("/v1/predict", json=V1_HOUSE)
        assert predicted.json()["model_sha256"] == new_v1
        metrics = (await client.get("/metrics")).text
    info = {dict(labels)["sha256"]: value for labels, value in gauge(metrics, "model_info").items()}
    assert info == {old["v1"]: 0.0, new_v1: 1.0, old["v2"]: 1.0}
    assert gauge(metrics, "model_reloads_total") == {(("outcome", "ok"),): 1.0}

    async with http(running, **api_key(running, "admin")) as client:  # again: nothing new
        again = (await client.post(RELOAD)).json()
    assert [m["changed"] for m in again["models"]] == [False, False]


@pytest.mark.parametrize(
    "damage", [corrupt_model, claim_other_libraries, remove_manifest], ids=lambda f: f.__name__
)
async def test_a_failed_verification_keeps_every_model_in_service(
    running: FastAPI, model_dir: Path, damage: Callable[[Path, str], None]
) -> None:
    serving = dict(running.state.services.models)
    republish(model_dir, "v1", "release-2")  # v1 is fine...
    damage(model_dir, "v2")  # ...but v2 is not: nothing changes
    async with http(running, **api_key(running, "admin predict metrics")) as client:
        answer = await client.post(RELOAD)
        assert answer.status_code == 409
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"].endswith("model-reload-refused")
        assert "v2" in problem["detail"]
        assert "kept" in problem["detail"]
        # No hash, no path, no traceback reaches the caller.
        assert not re.search(r"[0-9a-f]{32}", answer.text)
        assert str(model_dir) not in answer.text
        assert "Traceback" not in answer.text

        assert running.state.services.models == serving
        for version, house in (("v1", V1_HOUSE), ("v2", V2_HOUSE)):
            predicted = await client.post(f"/{version}/predict", json=house)
            assert predicted.status_code == 200
            assert predicted.json()["model_sha256"] == serving[version].sha256
        metrics = (await client.get("/metrics")).text
    assert gauge(metrics, "model_reloads_total") == {(("outcome", "failed"),): 1.0}


async def test_requests_during_reloads_all_succeed_on_one_model_or_the_other(
    running: FastAPI, model_dir: Path
) -> None:
    """Requests resolve the models once, at their start, and finish on them: while the
    models are swapped back and forth, every answer is a 200 from the old or the new."""
    shas = [running.state.services.models["v1"].sha256]
    async with http(running, **api_key(running, "admin predict")) as client:
        reloading = True

        async def predictions() -> list[tuple[int, str]]:
            out = []
            while reloading or len(out) < 10:  # keep asking until the last swap is done
                answer = await client.post("/v1/predict/batch", json={"instances": [V1_HOUSE] * 50})
                out.append((answer.status_code, answer.json().get("model_sha256", "")))
            return out

        async def reloads() -> None:
            nonlocal reloading
            for n in range(4):
                shas.append(republish(model_dir, "v1", f"release-{n}"))
                assert (await client.post(RELOAD)).status_code == 200
                await asyncio.sleep(0.01)
            reloading = False

        answers, _ = await asyncio.gather(
            asyncio.gather(*(predictions() for _ in range(4))), reloads()
        )
    statuses = [status for part in answers for status, _ in part]
    seen = [sha for part in answers for status, sha in part if status == 200]
    assert statuses == [200] * len(statuses)  # every request answered
    assert set(seen) <= set(shas)
    assert len(set(seen)) > 1  # the swaps happened while requests ran
    assert running.state.services.models["v1"].sha256 == shas[-1]


async def test_old_model_references_stay_usable_after_a_swap(
    running: FastAPI, model_dir: Path
) -> None:
    before = running.state.services.models
    republish(model_dir, "v1", "release-2")
    await running.state.services.reloader.reload(source="test")
    assert running.state.services.models is not before
    assert before["v1"].sha256 != running.state.services.models["v1"].sha256
    # A request holding the old LoadedModel finishes on it.
    X = np.array([[float(V1_HOUSE[n]) for n in before["v1"].feature_names]])
    assert before["v1"].predict(X).shape == (1,)
