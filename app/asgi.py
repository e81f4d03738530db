"""The servers' entry point: the one place that reads settings from the environment.

``uvicorn --factory app.asgi:build`` and ``gunicorn 'app.asgi:build()'`` call it
once per worker process.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from monitoring.logs import configure_logging


def build() -> FastAPI:
    configure_logging()
    return create_app(Settings())
