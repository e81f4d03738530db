"""Request and response bodies. Strict: the model only ever sees checked numbers.

Unknown fields are refused, strings and booleans are never coerced into numbers,
NaN and infinities are refused, and each number must lie within the bounds that
``ml.features`` derives from the training data (training range with a margin).
A count written ``3.0`` is the integer 3, as JSON and the published JSON Schema have
it (``"type": "integer"`` admits 3.0); ``2.5`` is refused.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema
from typing_extensions import TypedDict

from ml.features import FEATURES, Feature, ModelVersion

_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES["v2"]}


def _example(version: ModelVersion) -> dict[str, Any]:
    return {f.name: f.example for f in FEATURES[version]}


def _spec(name: str) -> FieldInfo:
    """Bounds, description and example of one feature, from the feature contract."""
    feature = _BY_NAME[name]
    if feature.kind == "bool":
        info: FieldInfo = Field(description=feature.description, examples=[feature.example])
        return info
    info = Field(
        ge=feature.lower,
        le=feature.upper,
        description=f"{feature.description} Accepted: {feature.lower} to {feature.upper}.",
        examples=[feature.example],
    )
    return info


def whole_number(value: object) -> object:
    """A float with no fractional part as the int it equals; anything else unchanged,
    for the strict int check to judge (2.5, "3", true, NaN are all refused there).

    Used as a ``mode="before"`` field validator on integer fields, so that they accept
    exactly what their OpenAPI type, ``"integer"``, admits. The prediction bodies use
    ``WholeNumber`` instead, the same rule without a Python call per value.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Beyond 2**53 a float no longer holds every integer, so it cannot stand for a count.
_EXACT_FLOAT_LIMIT = 2.0**53


class WholeNumber:
    """``Annotated[int, Field(ge=..., le=...), WholeNumber()]``: what ``whole_number``
    admits, decided inside pydantic-core (Rust) instead of a Python call per value.

    A 1000-row batch has 4000 counts; a Python validator on each cost about a third of
    the batch's validation. Here a value must first be a JSON number (a strict int, or
    a strict finite float of magnitude at most 2**53; anything else, strings and
    booleans included, is ``int_type`` as before), then the field's own int check,
    lax, turns 3.0 into 3, refuses 2.5 (``int_from_float``) and checks the bounds. The
    published JSON Schema is the int's: ``"type": "integer"`` with its bounds.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        bounded_int = handler(source)
        if bounded_int["type"] != "int":
            raise TypeError(f"WholeNumber applies to int fields, not {bounded_int['type']}")
        number = core_schema.union_schema(
            [
                core_schema.int_schema(strict=True),
                core_schema.float_schema(
                    strict=True,
                    allow_inf_nan=False,
                    ge=-_EXACT_FLOAT_LIMIT,
                    le=_EXACT_FLOAT_LIMIT,
                ),
            ],
            custom_error_type="int_type",
        )
        return core_schema.chain_schema([number, {**bounded_int, "strict": False}])

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        chain = cast(core_schema.ChainSchema, schema)
        return handler(chain["steps"][-1])


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class HouseV1(StrictModel):
    """The five numeric features of the v1 model."""

    model_config = ConfigDict(json_schema_extra={"examples": [_example("v1")]})

    lotsize: Annotated[float, _spec("lotsize")]
    bedrooms: Annotated[int, _spec("bedrooms"), WholeNumber()]
    bathrms: Annotated[int, _spec("bathrms"), WholeNumber()]
    stories: Annotated[int, _spec("stories"), WholeNumber()]
    garagepl: Annotated[int, _spec("garagepl"), WholeNumber()]


class HouseV2(HouseV1):
    """All eleven features: v1's plus six yes/no amenities as JSON booleans."""

    model_config = ConfigDict(json_schema_extra={"examples": [_example("v2")]})

    driveway: Annotated[bool, _spec("driveway")]
    recroom: Annotated[bool, _spec("recroom")]
    fullbase: Annotated[bool, _spec("fullbase")]
    gashw: Annotated[bool, _spec("gashw")]
    airco: Annotated[bool, _spec("airco")]
    prefarea: Annotated[bool, _spec("prefarea")]


class BatchV1(StrictModel):
    """Up to MAX_BATCH_SIZE houses, answered in order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [_example("v1")]}]})

    instances: Annotated[list[HouseV1], Field(min_length=1)]


class BatchV2(StrictModel):
    """Up to MAX_BATCH_SIZE houses, answered in order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [_example("v2")]}]})

    instances: Annotated[list[HouseV2], Field(min_length=1)]


class Interval(TypedDict):
    """The range the sale price falls in with probability ``level`` (conformal, checked
    on held-out sales: see ``/vN/model``'s ``interval``). Both ends are the predicted
    price times a constant of the model, so a dearer house gets a wider range.

    A ``TypedDict`` rather than a ``BaseModel``: the same JSON Schema, validated the
    same way, but a 1000-row batch builds its intervals as plain dicts (0.15 ms)
    instead of 1000 model instances (2.6 ms, more than the prediction itself).
    """

    low: Annotated[float, Field(description="Low end, 1987 Canadian dollars.")]
    high: Annotated[float, Field(description="High end, 1987 Canadian dollars.")]
    level: Annotated[float, Field(description="Coverage the range is calibrated for: 0.9.")]


class Prediction(BaseModel):
    predicted_price: float = Field(description="Predicted sale price, 1987 Canadian dollars.")
    interval: Interval = Field(description="90% range for the sale price.")
    model_version: str
    model_sha256: str = Field(description="sha256 of the model artifact that answered.")


class BatchPrediction(BaseModel):
    predictions: list[float] = Field(description="One price per instance, in request order.")
    intervals: list[Interval] = Field(
        description="One range per instance, in request order: each equals the single "
        "call's for that house."
    )
    model_version: str
    model_sha256: str


class FeatureInfo(BaseModel):
    name: str
    kind: str
    training_min: float | None = None
    training_max: float | None = None
    accepted_min: float | None = None
    accepted_max: float | None = None


class TercileCoverage(BaseModel):
    low: float
    middle: float
    high: float


class IntervalInfo(BaseModel):
    """How the price ranges are made, and how often they held on sales they never saw."""

    method: str
    level: float = Field(description="Coverage the ranges are calibrated for.")
    low_factor: float = Field(description="low = predicted_price * low_factor.")
    high_factor: float = Field(description="high = predicted_price * high_factor.")
    log_halfwidth: float = Field(description="ln(high_factor) = -ln(low_factor).")
    relative_width: float = Field(description="(high - low) / predicted_price.")
    protocol: str = Field(description="How the held-out figures below were measured.")
    coverage: float = Field(description="Share of held-out sales inside their range.")
    coverage_by_tercile: TercileCoverage = Field(
        description="The same, by tercile of the predicted price (edges: tercile_edges)."
    )
    coverage_by_sale_price_tercile: TercileCoverage = Field(
        description="The same, by tercile of the actual sale price."
    )
    tercile_edges: list[float] = Field(description="Predicted prices between the terciles.")
    mean_width: float = Field(description="Mean high - low on held-out sales, dollars.")
    median_width: float = Field(description="Median high - low on held-out sales, dollars.")
    mean_relative_width: float = Field(description="Mean (high - low) / predicted_price.")
    held_out_rows: int
    calibration_rows: int


class ModelInfo(BaseModel):
    version: str
    features: list[str]
    feature_details: list[FeatureInfo]
    estimator: str
    metrics: dict[str, Any]
    interval: IntervalInfo
    sha256: str
    trained_at: str
    training_data_sha256: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


class ReloadedModel(BaseModel):
    version: str
    sha256: str = Field(description="sha256 of the model artifact now in service.")
    previous_sha256: str | None = Field(description="sha256 of the one it replaced.")
    changed: bool
    estimator: str


class ModelReload(BaseModel):
    status: str = Field(description="Always 'reloaded': a failed reload answers 409.")
    models: list[ReloadedModel]
    other_workers_signalled: int = Field(
        description="Under gunicorn, the other workers sent SIGHUP: each reloads the same "
        "way within moments (this answer covers the worker that gave it). 0 otherwise."
    )
