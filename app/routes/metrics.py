"""``/metrics``: the Prometheus exposition of ``monitoring.metrics`` (scope ``metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import MetricsReader, ServicesDep
from app.openapi import problems

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (scope metrics)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **problems(401, 403, 429, 503),
    },
)
def metrics(_: MetricsReader, built: ServicesDep) -> Response:
    return Response(built.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
