"""Mass-concentration units and conversion between them."""

from __future__ import annotations

import re

__all__ = ["conversion_factor", "normalise_unit"]

# grams per litre of one unit
_G_PER_L = {
    "g/l": 1.0,
    "mg/l": 1e-3,
    "mg/ml": 1.0,
    "ug/l": 1e-6,
    "ug/ml": 1e-3,
    "ng/l": 1e-9,
    "ng/ml": 1e-6,
    "ng/dl": 1e-8,
    "pg/l": 1e-12,
    "pg/ml": 1e-9,
    "pg/dl": 1e-11,
}


def normalise_unit(unit: str) -> str:
    """Lower-case a unit and spell micro as ``u``: ``"µg/L"`` -> ``"ug/l"``."""
    text = re.sub(r"\s+", "", str(unit)).lower()
    return text.replace("µ", "u").replace("μ", "u").replace("mcg", "ug")


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor that converts a concentration in ``from_unit`` to ``to_unit``.

    Raises
    ------
    KeyError
        If either unit is not a known mass concentration.
    """
    src, dst = normalise_unit(from_unit), normalise_unit(to_unit)
    for unit, original in ((src, from_unit), (dst, to_unit)):
        if unit not in _G_PER_L:
            raise KeyError(original)
    return _G_PER_L[src] / _G_PER_L[dst]
