"""``housing-api``: the operator's command line."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from typing import Annotated

import typer

from app.settings import Settings
from cli.accounts import accounts
from cli.credentials import clients, keys, users
from cli.operations import drift, predictions

app = typer.Typer(
    name="housing-api",
    help="Housing-price inference API: train models, serve, manage credentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(accounts, name="accounts")
app.add_typer(clients, name="clients")
app.add_typer(users, name="users")
app.add_typer(keys, name="keys")
app.add_typer(predictions, name="predictions")
app.command()(drift)


def fail(message: str) -> typer.Exit:
    """Print a clear one-line error on stderr (no traceback) and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@app.command()
def train(
    seed: Annotated[int, typer.Option(help="Seed for cross-validation folds and estimators.")] = 0,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 10,
) -> None:
    """Train v1 and v2 from DATA_PATH into MODEL_DIR (model.joblib, plan.json, manifest.json).

    Each candidate's cross-validated score is printed (stderr) as soon as it is known.
    """
    from cli.progress import progress
    from ml.candidates import CANDIDATES
    from ml.features import MODEL_VERSIONS
    from ml.training import CVScore, train_all

    settings = Settings()
    with progress() as bar:
        task = bar.add_task("training", total=len(CANDIDATES) * len(MODEL_VERSIONS))

        def scored(version: str, score: CVScore) -> None:
            bar.console.print(
                f"{version} {score.name:<28} CV MAE {score.mae:>9,.0f}  R² {score.r2:.3f}"
            )
            bar.update(task, advance=1, description=f"training {version}")

        manifests = train_all(
            settings.data_path, settings.model_dir, seed=seed, folds=folds, on_score=scored
        )
    for version, manifest in manifests.items():
        chosen = manifest["metrics"]["chosen"]
        baseline = manifest["metrics"]["baseline"]
        typer.echo(
            f"{version}: {manifest['estimator']['name']} "
            f"CV MAE {chosen['mae']:,.0f} (baseline {baseline['mae']:,.0f}), "
            f"R² {chosen['r2']:.3f}; sha256 {manifest['sha256'][:12]}…"
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="N>1 runs gunicorn with uvicorn workers.")
    ] = 1,
) -> None:
    """Serve the API. Artifacts are verified first, so a bad model never starts."""
    from auth.errors import ConfigError
    from auth.wiring import pepper, signing_keys
    from db.engine import UnsupportedDatabaseError
    from migrations import SchemaError
    from ml.artifacts import ArtifactError, load_all
    from monitoring.logs import configure_logging, flush_logs

    settings = Settings()
    try:
        load_all(settings.model_dir)
        signing_keys(settings)
        pepper(settings)
        # Once, before any worker starts: an empty database gets its schema, and an
        # outdated one stops a production start here, naming `housing-api migrate`.
        _prepare_database(settings)
    except (ArtifactError, ConfigError, UnsupportedDatabaseError, SchemaError) as exc:
        raise fail(str(exc)) from None
    if not settings.is_production:
        _first_run_demo(settings, host, port)

    if workers > 1 and not settings.shared_limits:
        if settings.is_production:
            raise fail(
                f"APP_ENV=production with {workers} workers needs REDIS_URL (redis://...): "
                "with the in-memory limiter each worker would keep its own rate limits and "
                "a limit of N would allow N per worker. Set REDIS_URL, or serve one worker."
            )
        # A JSON log line, like everything the server writes on stderr from here on.
        configure_logging()
        logging.getLogger("housing_api.serve").warning(
            f"REDIS_URL is unset, so each of the {workers} workers keeps its own "
            "in-memory rate limits (a limit of N allows up to N per worker). Set REDIS_URL. "
            "(README: 'Redis and PostgreSQL locally'.)"
        )
        flush_logs()  # written now, before gunicorn forks and takes over logging
    if workers == 1:
        import uvicorn

        uvicorn.run(
            "app.asgi:build",
            factory=True,
            host=host,
            port=port,
            # The app applies X-Forwarded-* itself, from FORWARDED_ALLOW_IPS only.
            proxy_headers=False,
            server_header=False,
            log_config=None,  # app.asgi.build configures JSON logging
            access_log=False,  # one richer event per request comes from the app
            # SIGTERM: stop accepting, let in-flight requests finish (at most this long,
            # as gunicorn's --graceful-timeout), then the lifespan flushes the prediction log.
            timeout_graceful_shutdown=20,
            # ...and answer a request already on its way on an idle keep-alive
            # connection, with Connection: close, instead of resetting it (app.serving).
            http="app.serving:DrainingHttpToolsProtocol",
        )
        return
    # Every worker writes its metrics here; /metrics merges them (prometheus-client's
    # multiprocess mode). The variable must be set before any worker imports it.
    metrics_dir = (settings.var_dir / f"prometheus-{port}").resolve()  # one per server
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    argv = [
        gunicorn,
        "app.asgi:build()",
        "--worker-class",
        "app.serving.DrainingUvicornWorker",  # uvicorn's, draining, no Server header
        "--workers",
        str(workers),
        "--bind",
        f"{host}:{port}",
        # uvicorn-worker applies proxy headers too: give it the same trust list.
        "--forwarded-allow-ips",
        settings.forwarded_allow_ips,
        "--config",
        "python:app.gunicorn_conf",
        # Unused, and by default one per user: replicas on one host would share it.
        "--no-control-socket",
        "--graceful-timeout",
        "20",
        "--timeout",
        "60",
    ]
    # Replaces this process with gunicorn; a fixed argv, no shell.
    os.execv(gunicorn, argv)  # noqa: S606  # nosec B606


def _prepare_database(settings: Settings) -> None:
    from db.engine import make_engine
    from migrations import prepare_schema

    engine = make_engine(settings.database_url)
    try:
        prepare_schema(engine, production=settings.is_production)
    finally:
        engine.dispose()


@app.command()
def migrate() -> None:
    """Apply the database schema migrations: idempotent, safe from several replicas at once.

    Run it once per release before the new version starts (the Kubernetes Job
    deploy/k8s/migrate-job.yaml, compose's `migrate` service). Production commands and
    servers refuse a schema older than their code; development migrates by itself.
    """
    from sqlalchemy.exc import OperationalError

    from db.engine import UnsupportedDatabaseError, make_engine
    from migrations import schema_revisions, upgrade_schema

    settings = Settings()
    try:
        engine = make_engine(settings.database_url)
    except UnsupportedDatabaseError as exc:
        raise fail(str(exc)) from None
    try:
        before, head = schema_revisions(engine)
        upgrade_schema(engine)  # serialised: an advisory lock, or BEGIN IMMEDIATE
        after, _ = schema_revisions(engine)
    except OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise fail(f"cannot migrate the database: {reason}") from None
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"schema already at {after} (head {head}): nothing to do")
    else:
        typer.echo(f"schema migrated from {before or 'empty'} to {after}")


def _first_run_demo(settings: Settings, host: str, port: int) -> None:
    """A newcomer's first minute: on the very first development start, a demo client.

    Never in production; never again once the marker exists. The secret is random and
    stored only as an HMAC; it is printed here, once.
    """
    from auth.errors import DuplicateError
    from auth.scopes import PREDICT
    from auth.wiring import open_store
    from migrations import schema_preparer

    marker = settings.var_dir / "demo_client_created"
    if marker.exists():
        return
    with open_store(settings, schema_preparer(settings.is_production)) as store:
        if store.clients.list():
            marker.touch()
            return
        try:
            client_id, secret = store.clients.create("demo", {PREDICT}, actor="first-run")
        except DuplicateError:  # another replica starting at the same moment made it
            marker.touch()
            return
    marker.touch()
    base = f"http://{host}:{port}"
    body = '{"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1}'
    typer.echo(
        f"""
First start: created a demo client with scope 'predict' (shown once, stored hashed).
  client_id:     {client_id}
  client_secret: {secret}

  TOKEN=$(curl -s -u '{client_id}:{secret}' -d grant_type=client_credentials \\
      {base}/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
      -d '{body}' {base}/v1/predict
"""
    )


def main() -> None:
    app()
