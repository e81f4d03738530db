"""The prediction log's table (SQLAlchemy 2 typed ORM); ``migrations/`` must match it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, MetaData, String, Table, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.types import NAMING_CONVENTION, UTCDateTime


class PredictionLogBase(DeclarativeBase):
    """The prediction log's own metadata (the credential store has ``auth.models.Base``)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PredictionLogRow(PredictionLogBase):
    """One request's predictions by one model: the answers, or a shadow model's.

    Inputs and answers are stored column-wise, one JSON array per feature, so that a
    1000-row batch costs one row to write rather than a thousand (see the module's
    benchmark, ``bench/prediction_log.py``); ``iter_predictions`` and the export give
    one record per prediction.
    """

    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_model_version_at", "model_version", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    principal: Mapped[str | None] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(16))
    model_sha256: Mapped[str] = mapped_column(String(64))
    # True for a shadow model's predictions, which the caller never saw.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # How many predictions: 1 for a single one, the batch's length for a batch.
    batch_size: Mapped[int] = mapped_column(Integer)
    # Feature name -> one value per prediction, as the model saw it (bools stay booleans).
    features: Mapped[dict[str, list[Any]]] = mapped_column(JSON)
    # One price per prediction, in request order.
    predictions: Mapped[list[float]] = mapped_column(JSON)
    # The width (high - low) of each prediction's 90 % range; null on rows logged before
    # ranges were served.
    interval_widths: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)


TABLE = cast(Table, PredictionLogRow.__table__)
