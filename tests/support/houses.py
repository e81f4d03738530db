"""Valid request bodies, as a client sends them (counts as JSON integers); every suite's."""

from __future__ import annotations

from typing import Any

V1_HOUSE: dict[str, Any] = {
    "lotsize": 5850,
    "bedrooms": 3,
    "bathrms": 1,
    "stories": 2,
    "garagepl": 1,
}
V2_HOUSE: dict[str, Any] = V1_HOUSE | {
    "driveway": True,
    "recroom": False,
    "fullbase": True,
    "gashw": False,
    "airco": False,
    "prefarea": False,
}
HOUSES = {"v1": V1_HOUSE, "v2": V2_HOUSE}
