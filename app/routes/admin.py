"""Operating the service (scope ``admin``): reload the models without a restart."""

from __future__ import annotations

from functools import partial

from anyio import from_thread
from fastapi import APIRouter, Request, Response

from app.deps import Admin, ReloaderDep
from app.errors import ApiError
from app.limits import QuotaLimiter, caller_key, predict_limit
from app.openapi import problems
from app.reload import ReloadFailed
from app.schemas import ModelReload, ReloadedModel
from app.settings import Settings


class ModelReloadRefused(ApiError):
    status, slug, title = 409, "model-reload-refused", "Model reload refused"


def build_router(limiter: QuotaLimiter, settings: Settings) -> APIRouter:
    router = APIRouter(
        tags=["operations"],
        responses=problems(401, 403, 409, 429, 503),
    )
    quota = limiter.shared_limit(predict_limit(settings), scope="admin", key_func=caller_key)

    @router.post(
        "/admin/models/reload",
        summary="Reload the models from MODEL_DIR (scope admin)",
        description=(
            "Loads and verifies every version (manifest, artifact sha256, library "
            "versions) before swapping them in; requests already running finish on the "
            "models they started with. If any version fails, the models in service are "
            "kept and the answer is 409."
        ),
    )
    @quota
    def reload_models(
        request: Request, response: Response, _: Admin, reloader: ReloaderDep
    ) -> ModelReload:
        # Sync: SlowAPI's limit check runs in the threadpool, off the event loop.
        try:
            outcome = from_thread.run(partial(reloader.reload, source="admin endpoint"))
        except ReloadFailed as exc:
            raise ModelReloadRefused(
                f"Model {exc.version} failed verification (manifest, artifact hash or "
                "library versions); the models in service were kept. The server log "
                "has the reason."
            ) from None
        # Under gunicorn the other workers reload too (each verifies on its own).
        signalled = reloader.signal_other_workers()
        return ModelReload(
            status="reloaded",
            models=[
                ReloadedModel(
                    version=model.version,
                    sha256=model.sha256,
                    previous_sha256=model.previous_sha256,
                    changed=model.changed,
                    estimator=model.estimator,
                )
                for model in outcome
            ],
            other_workers_signalled=signalled,
        )

    return router
