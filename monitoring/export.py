"""``housing-api predictions export``: the prediction log as CSV or Parquet.

One row per logged prediction: when, which request (``request_id``, ``batch_index``),
who asked (``principal``), which model (``model_version``, ``model_sha256``,
``shadow``), the answer (``prediction``) and one column per feature. Features a row's
model does not take are empty (a v1 row has no amenities). Rows stream from the
database in chunks, so an export never holds the whole log in memory. (Imported by
the CLI only: pyarrow is slow to import.)
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
import pyarrow.parquet as pq  # type: ignore[import-untyped]  # the same
from sqlalchemy import Engine

from ml.features import FEATURES, MODEL_VERSIONS, ModelVersion
from monitoring.predictionlog import iter_predictions, query, stream

OnRows = Callable[[int], None]
FORMATS = ("csv", "parquet")
CHUNK_ROWS = 10_000  # predictions per Parquet batch; also table rows fetched at a time
META_COLUMNS = (
    "id",
    "at",
    "request_id",
    "batch_index",
    "principal",
    "model_version",
    "model_sha256",
    "shadow",
    "prediction",
    "interval_width",
)


def feature_columns(version: str | None) -> list[str]:
    """The features of ``version``, or of every version (v2's are a superset of v1's)."""
    versions: tuple[ModelVersion, ...] = MODEL_VERSIONS
    if version in MODEL_VERSIONS:
        versions = (version,)
    names: list[str] = []
    for v in versions:
        names += [f.name for f in FEATURES[v] if f.name not in names]
    return names


def _rows(
    engine: Engine, since: datetime | None, version: str | None, features: list[str]
) -> Iterator[dict[str, Any]]:
    """One flat record per prediction: META_COLUMNS, then ``features`` (None if absent)."""
    for row in stream(engine, query(since=since, version=version), CHUNK_ROWS):
        for prediction in iter_predictions(row):
            values = prediction["features"]
            flat = {column: prediction[column] for column in META_COLUMNS}
            flat.update({name: values.get(name) for name in features})
            yield flat


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return "" if value is None else value


def _write_csv(
    rows: Iterator[dict[str, Any]], columns: list[str], path: Path, on_rows: OnRows
) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[column]) for column in columns])
            count += 1
            if count % CHUNK_ROWS == 0:
                on_rows(count)
    on_rows(count)
    return count


def _arrow_schema(features: list[str]) -> Any:
    kinds = {f.name: f.kind for v in MODEL_VERSIONS for f in FEATURES[v]}
    types = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("request_id", pa.string()),
            pa.field("batch_index", pa.int64(), nullable=False),
            pa.field("principal", pa.string()),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("model_sha256", pa.string(), nullable=False),
            pa.field("shadow", pa.bool_(), nullable=False),
            pa.field("prediction", pa.float64(), nullable=False),
            pa.field("interval_width", pa.float64()),
            *[pa.field(name, types[kinds[name]]) for name in features],
        ]
    )


def _write_parquet(
    rows: Iterator[dict[str, Any]], features: list[str], path: Path, on_rows: OnRows
) -> int:
    schema = _arrow_schema(features)
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        while chunk := list(islice(rows, CHUNK_ROWS)):
            writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=schema))
            count += len(chunk)
            on_rows(count)
    on_rows(count)
    return count


def export_predictions(
    engine: Engine,
    path: Path,
    fmt: str,
    *,
    since: datetime | None = None,
    version: str | None = None,
    on_rows: OnRows | None = None,
) -> int:
    """Write the matching rows to ``path`` (replaced) as ``fmt``; returns how many.
    ``on_rows(written)`` hears the running count every CHUNK_ROWS (progress)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    features = feature_columns(version)
    rows = _rows(engine, since, version, features)
    heard = on_rows or _ignore
    if fmt == "parquet":
        return _write_parquet(rows, features, path, heard)
    return _write_csv(rows, [*META_COLUMNS, *features], path, heard)


def _ignore(_written: int) -> None:
    return None
