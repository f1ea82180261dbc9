"""Mass-concentration units and conversion between them."""

from __future__ import annotations

import re

__all__ = ["conversion_factor", "normalise_unit"]

# power of ten of grams per litre of one unit (integers, so factors are exact)
_G_PER_L_EXPONENT = {
    "g/l": 0,
    "mg/l": -3,
    "mg/ml": 0,
    "ug/l": -6,
    "ug/ml": -3,
    "ng/l": -9,
    "ng/ml": -6,
    "ng/dl": -8,
    "pg/l": -12,
    "pg/ml": -9,
    "pg/dl": -11,
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
        if unit not in _G_PER_L_EXPONENT:
            raise KeyError(original)
    return 10.0 ** (_G_PER_L_EXPONENT[src] - _G_PER_L_EXPONENT[dst])
