"""The gunicorn worker ``housing-api serve --workers N`` runs: uvicorn's, quieter.

uvicorn-worker builds its uvicorn ``Config`` from gunicorn's settings plus
``CONFIG_KWARGS``, and gunicorn has no setting for uvicorn's ``Server`` header, so
every answer said ``Server: uvicorn``. The software a service runs is nobody's
business (the edge answers ``Server: nginx`` without a version); the single-process
``serve`` passes ``server_header=False`` to uvicorn itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]


class Worker(UvicornWorker):  # type: ignore[misc]  # untyped library
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "server_header": False,
    }
