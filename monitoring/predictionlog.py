"""The prediction log: what the model was asked and answered, kept for audit and drift.

Off the request path. A request hands its predictions to
:meth:`PredictionLogWriter.submit`: a lock, a list append and a counter; no I/O, no
serialisation. A background thread wakes every ``flush_interval`` (or at once when
``flush_rows`` predictions wait), turns what waits into table rows (scoring shadow
models, see ``app.lifespan``) and inserts them, one transaction per chunk.
The queue is bounded in predictions: a request that would overflow it is never
blocked; its predictions are dropped and counted in
``prediction_log_dropped_total{reason="queue_full"}``. Closing the writer (the app's
shutdown) writes everything submitted before it returns.

One table row holds one request's predictions by one model, inputs and answers as
JSON arrays: a 1000-row batch is one INSERT row, not a thousand, which is what keeps
the log's cost within budget (``python -m bench.prediction_log``).
:func:`iter_predictions` and ``housing-api predictions export`` give one record per
prediction.

The table lives in the service's database (``DATABASE_URL``, SQLite or PostgreSQL);
its table is ``monitoring.models``, migrated with the rest of that database by
``migrations/``. Rows older than
the retention are purged by the same thread, at start and then hourly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    Engine,
    Select,
    delete,
    event,
    insert,
    select,
)

from db.engine import make_engine
from db.errors import describe, is_unreachable
from ml.features import FEATURES
from monitoring.models import TABLE

if TYPE_CHECKING:
    from ml.artifacts import LoadedModel
    from monitoring.metrics import Metrics

logger = logging.getLogger("monitoring.predictionlog")

INSERT_CHUNK_ROWS = 500  # table rows (requests) per INSERT transaction
PURGE_INTERVAL_S = 3600.0
WRITE_RETRY_DELAY_S = 0.2
DROP_WARNING_INTERVAL_S = 60.0


def feature_columns(houses: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """Feature name -> one value per house, from objects with those attributes.

    ``attrgetter`` and ``zip`` run in C: about a microsecond for a 100-row batch.
    """
    if len(names) == 1:
        return {names[0]: [getattr(house, names[0]) for house in houses]}
    values = zip(*map(attrgetter(*names), houses), strict=True)
    return dict(zip(names, map(list, values), strict=True))


# int, float or bool: how the prediction log writes each feature's values.
FEATURE_KINDS: dict[str, str] = {f.name: f.kind for fs in FEATURES.values() for f in fs}


def shadow_models(models: Mapping[str, LoadedModel], model: LoadedModel) -> tuple[LoadedModel, ...]:
    """The other models in service that can score what ``model`` was given."""
    given = set(model.feature_names)
    return tuple(
        other
        for version, other in models.items()
        if version != model.version and set(other.feature_names) <= given
    )


def matrix_columns(X: Any, names: Sequence[str], kinds: Mapping[str, str]) -> dict[str, list[Any]]:
    """Feature name -> one value per row, from the float64 matrix the model was given.

    The same values and types as ``feature_columns`` on the validated houses (counts
    as ints, amenities as booleans, lot sizes as floats: the matrix holds them
    exactly), one numpy conversion per column instead of an attribute read per value:
    a fifth of the cost for a 1000-row batch.
    """
    columns: dict[str, list[Any]] = {}
    for j, name in enumerate(names):
        column = X[:, j]
        kind = kinds[name]
        if kind == "int":
            column = column.astype("int64")
        elif kind == "bool":
            column = column.astype("bool")
        columns[name] = column.tolist()
    return columns


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """One request's predictions, as the request path hands them over.

    The inputs are kept column-wise (a few lists of numbers), not as the request's
    objects: a queue of thousands of small objects would make every garbage
    collection of the serving process slower, which costs more than the copy.
    """

    at: float  # time.time() when answered
    request_id: str | None
    principal: str | None
    model: LoadedModel
    features: dict[str, list[Any]]  # name -> one value per prediction (feature_columns)
    prices: list[float]
    # Other models to score the same inputs with, logged as shadow rows.
    shadows: tuple[LoadedModel, ...] = ()
    # The width of each answer's range (high - low), as served.
    widths: list[float] | None = None

    @property
    def rows(self) -> int:
        """Predictions to log: the answers and each shadow model's."""
        return len(self.prices) * (1 + len(self.shadows))


def _widths(model: LoadedModel, prices: list[float]) -> list[float]:
    import numpy as np

    low, high = model.interval_bounds(np.asarray(prices, dtype=np.float64))
    widths: list[float] = (high - low).tolist()
    return widths


def _shadow_prices(shadow: LoadedModel, columns: dict[str, list[Any]]) -> list[float]:
    import numpy as np  # here: the migrations import this module for its table only

    X = np.array([columns[name] for name in shadow.feature_names], dtype=np.float64).T
    return [float(price) for price in shadow.predict(np.ascontiguousarray(X))]


def json_dumps(value: Any) -> str:
    """The engine's JSON serialiser: orjson, several times faster than ``json.dumps``."""
    return orjson.dumps(value).decode()


def make_log_engine(url: str) -> Engine:
    """An engine on the service's database for the prediction log (its own pool).

    On SQLite its connections commit with ``synchronous=NORMAL``: in WAL mode the
    database stays consistent, and a commit no longer waits for an fsync; only a power
    cut (not a crash of the process) can lose the last commits, as it would lose the
    rows still queued in memory anyway. The credential store's engine keeps FULL.
    """
    engine = make_engine(url, json_serializer=json_dumps, json_deserializer=orjson.loads)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_synchronous_normal)
    return engine


def _sqlite_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def to_rows(batch: PredictionBatch) -> list[dict[str, Any]]:
    """The table rows of one request: its answers, then each shadow model's."""
    at = datetime.fromtimestamp(batch.at, UTC)
    model = batch.model
    columns = batch.features
    common = {
        "at": at,
        "request_id": batch.request_id,
        "principal": batch.principal,
        "batch_size": len(batch.prices),
    }
    rows = [
        {
            **common,
            "model_version": model.version,
            "model_sha256": model.sha256,
            "shadow": False,
            "features": columns,
            "predictions": batch.prices,
            "interval_widths": batch.widths,
        }
    ]
    for shadow in batch.shadows:
        try:
            prices = _shadow_prices(shadow, columns)
        except ValueError:  # an input outside the shadow's range: skip it, keep the answers
            logger.warning("shadow model %s could not score a logged request", shadow.version)
            continue
        rows.append(
            {
                **common,
                "model_version": shadow.version,
                "model_sha256": shadow.sha256,
                "shadow": True,
                "features": {name: columns[name] for name in shadow.feature_names},
                "predictions": prices,
                "interval_widths": _widths(shadow, prices),
            }
        )
    return rows


def iter_predictions(row: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One record per prediction of a stored row, with its ``batch_index`` and the width
    of its range (None for rows logged before ranges were served)."""
    features: dict[str, list[Any]] = row["features"]
    widths: list[float] | None = row.get("interval_widths")
    columns = ("features", "predictions", "interval_widths")
    meta = {key: value for key, value in row.items() if key not in columns}
    for index, price in enumerate(row["predictions"]):
        yield {
            **meta,
            "batch_index": index,
            "prediction": price,
            "interval_width": widths[index] if widths else None,
            "features": {name: values[index] for name, values in features.items()},
        }


def purge_older_than(engine: Engine, cutoff: datetime) -> int:
    """Delete rows logged before ``cutoff``; returns how many."""
    with engine.begin() as connection:
        result = connection.execute(delete(TABLE).where(TABLE.c.at < cutoff))
    return int(result.rowcount or 0)


def query(
    *,
    since: datetime | None = None,
    version: str | None = None,
    shadow: bool | None = None,
) -> Select[Any]:
    """Logged rows in the order written, optionally since a time, of a version, (not) shadow."""
    statement = select(TABLE)
    if since is not None:
        statement = statement.where(TABLE.c.at >= since)
    if version is not None:
        statement = statement.where(TABLE.c.model_version == version)
    if shadow is not None:
        statement = statement.where(TABLE.c.shadow == shadow)
    return statement.order_by(TABLE.c.id)


def stream(engine: Engine, statement: Select[Any], chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Rows of ``statement`` as dicts, fetched ``chunk`` at a time (server-side cursor)."""
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=chunk).execute(
            statement
        )
        for row in result.mappings():
            yield dict(row)


class PredictionLogWriter:
    """A bounded in-process queue and the thread that writes it to the database.

    ``capacity`` bounds the rows waiting (the batch being written comes on top);
    ``flush_rows`` and ``flush_interval`` decide when the thread writes; rows older
    than ``retention`` are purged at start and every ``purge_interval`` seconds.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        capacity: int = 100_000,
        flush_rows: int = 5000,
        flush_interval: float = 1.0,
        retention: timedelta = timedelta(days=30),
        purge_interval: float = PURGE_INTERVAL_S,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._capacity = capacity
        self._flush_rows = flush_rows
        self._flush_interval = flush_interval
        self._retention = retention
        self._purge_interval = purge_interval
        self._cond = threading.Condition()
        self._buffer: list[PredictionBatch] = []
        self._pending = 0  # rows in _buffer
        self._submitted = 0  # rows accepted so far
        self._processed = 0  # rows of those written or given up on
        self._urgent = False
        self._closing = False
        self._last_drop_warning = 0.0
        self._unreachable = False  # the last write failed for want of the database
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    # -- the request side ----------------------------------------------------------

    def submit(self, batch: PredictionBatch) -> bool:
        """Queue a request's rows; never blocks on I/O. False (and counted) if dropped."""
        rows = batch.rows
        with self._cond:
            if self._closing:
                reason = "closed"
            elif self._pending + rows > self._capacity:
                reason = "queue_full"
            else:
                self._buffer.append(batch)
                self._pending += rows
                self._submitted += rows
                if self._pending >= self._flush_rows:
                    self._cond.notify_all()
                return True
        self._metrics.prediction_log_dropped.labels(reason).inc(rows)
        now = time.monotonic()
        if now - self._last_drop_warning > DROP_WARNING_INTERVAL_S:
            self._last_drop_warning = now
            logger.warning(
                "prediction log: dropped rows",
                extra={"reason": reason, "rows": rows, "capacity": self._capacity},
            )
        return False

    @property
    def queued(self) -> int:
        return self._pending

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything submitted so far now; True once it is written (or given up)."""
        with self._cond:
            target = self._submitted
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._processed >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new rows, write every queued one, stop the thread (the app's shutdown)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "prediction log: writer still busy at shutdown", extra={"rows": self._pending}
            )

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        next_purge = 0.0  # purge once at start
        while True:
            with self._cond:
                if not (self._closing or self._urgent or self._pending >= self._flush_rows):
                    self._cond.wait(self._flush_interval)
                batches, self._buffer = self._buffer, []
                rows, self._pending = self._pending, 0
                self._urgent = False
                closing = self._closing
            if batches:
                self._write(batches, rows)
            self._metrics.prediction_log_queued.set(self._pending)
            if time.monotonic() >= next_purge and not closing:
                self._purge()
                next_purge = time.monotonic() + self._purge_interval
            if closing:
                return  # nothing can have been queued since ``closing`` was seen

    def _write(self, batches: list[PredictionBatch], rows: int) -> None:
        """Write queued batches; ``rows`` predictions are accounted for, whatever happens."""
        try:
            records = [record for batch in batches for record in to_rows(batch)]
        except Exception:  # the thread must survive anything; the rows are counted
            logger.exception("prediction log: could not prepare rows", extra={"rows": rows})
            records = []
        built = sum(record["batch_size"] for record in records)
        written = self._insert(records)
        if written:
            self._metrics.prediction_log_written.inc(written)
        if built < rows:  # shadow predictions that could not be made, or a bug above
            self._metrics.prediction_log_dropped.labels("shadow_error").inc(rows - built)
        if written < built:
            self._metrics.prediction_log_dropped.labels("write_error").inc(built - written)
        with self._cond:
            self._processed += rows
            self._cond.notify_all()

    def _insert(self, records: list[dict[str, Any]]) -> int:
        """Insert in chunks, one transaction each, retrying a failed chunk once;
        returns how many predictions were written."""
        written = 0
        for start in range(0, len(records), INSERT_CHUNK_ROWS):
            chunk = records[start : start + INSERT_CHUNK_ROWS]
            for attempt in (1, 2):
                try:
                    with self._engine.begin() as connection:
                        connection.execute(insert(TABLE), chunk)
                except Exception as exc:
                    if attempt == 2:
                        self._insert_failed(exc, len(chunk))
                        break
                    time.sleep(WRITE_RETRY_DELAY_S)
                else:
                    written += sum(record["batch_size"] for record in chunk)
                    if self._unreachable:
                        self._unreachable = False
                        logger.warning("prediction log: the database answers again")
                    break
        return written

    def _insert_failed(self, exc: Exception, records: int) -> None:
        """A traceback for an error; for an outage one event (no traceback, not one a
        flush), since the rows it drops are counted (``write_error``) anyway."""
        if not is_unreachable(exc):
            logger.error(
                "prediction log: insert failed twice", exc_info=exc, extra={"records": records}
            )
        elif not self._unreachable:
            self._unreachable = True
            logger.error(
                "prediction log: database unreachable; predictions are dropped and counted "
                "until it answers",
                extra={"records": records, "error": describe(exc)},
            )

    def _purge(self) -> None:
        cutoff = datetime.now(UTC) - self._retention
        try:
            purged = purge_older_than(self._engine, cutoff)
        except Exception as exc:
            if is_unreachable(exc):  # tried again within the hour; no traceback
                logger.warning("prediction log: purge skipped", extra={"error": describe(exc)})
            else:
                logger.exception("prediction log: purge failed")
            return
        if purged:
            logger.info("prediction log: purged old rows", extra={"rows": purged})
