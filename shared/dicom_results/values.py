"""A zhiva ``metadata`` value as a measurement: a number and its UCUM unit, when it has one.

``{"dataType": "number", "value": 12}`` is 12 with no unit (UCUM ``1``); a ``percentage`` is in
``%``; a text such as ``"345.8 cm³"`` is 345.8 ``cm3`` when its unit is one this module knows.
Anything else (dates, free text, unknown units) is not a measurement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Quantity", "quantity_of"]

# The unit as a model writes it -> (UCUM code, meaning).
_UNITS: dict[str, tuple[str, str]] = {
    "mm": ("mm", "millimeter"),
    "cm": ("cm", "centimeter"),
    "m": ("m", "meter"),
    "mm2": ("mm2", "square millimeter"),
    "mm²": ("mm2", "square millimeter"),
    "cm2": ("cm2", "square centimeter"),
    "cm²": ("cm2", "square centimeter"),
    "mm3": ("mm3", "cubic millimeter"),
    "mm³": ("mm3", "cubic millimeter"),
    "cm3": ("cm3", "cubic centimeter"),
    "cm³": ("cm3", "cubic centimeter"),
    "ml": ("mL", "milliliter"),
    "mL": ("mL", "milliliter"),
    "l": ("L", "liter"),
    "L": ("L", "liter"),
    "%": ("%", "percent"),
    "HU": ("[hnsf'U]", "Hounsfield unit"),
    "s": ("s", "second"),
    "ms": ("ms", "millisecond"),
    "g": ("g", "gram"),
    "kg": ("kg", "kilogram"),
    "mg": ("mg", "milligram"),
    "deg": ("deg", "degree"),
    "°": ("deg", "degree"),
}
_NO_UNIT = ("1", "no units")
_NUMBER_AND_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Quantity:
    """A measured value and its UCUM unit code and meaning."""

    value: float
    unit: str
    unit_meaning: str


def quantity_of(entry: Mapping[str, Any]) -> Quantity | None:
    """The entry's value as a :class:`Quantity`, or ``None`` when it is not a measurement."""
    data_type = entry.get("dataType")
    value = entry.get("value")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        unit = _UNITS["%"] if data_type == "percentage" else _NO_UNIT
        return Quantity(float(value), *unit)
    if not isinstance(value, str) or data_type == "date":
        return None
    match = _NUMBER_AND_UNIT.match(value)
    if match is None or match[2] not in _UNITS:
        return None
    return Quantity(float(match[1]), *_UNITS[match[2]])
