"""Parse concentrations as labs write them: numbers, censored notations and blanks.

A CSF assay reports a value only inside its quantification range. Outside it, lab
exports write notations such as ``<15.6``, ``< LLOQ``, ``OOR <``, ``BLQ``, ``ND`` or
``>ULOQ``; an extrapolated value is often starred (``*12.3``). This module turns each
cell into a number, a censoring flag and the limit that applies.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["FLAGS", "parse_concentrations"]

#: Censoring flags, in the order used throughout the project.
FLAGS = ("observed", "below", "above", "missing", "extrapolated")

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BELOW_WORDS = {"<lloq", "<lod", "blq", "bloq", "nd", "oor<", "belowlloq", "<lld", "<dl"}
_ABOVE_WORDS = {">uloq", "aloq", "oor>", "aboveuloq", ">uld"}
_MISSING_WORDS = {"", "na", "nan", "n/a", "none", "null", "-", "--", "nr", "qns"}


def _classify(text: str) -> tuple[str, float]:
    """Return (flag, number) of one stripped cell; number is NaN when the cell gives none."""
    squeezed = re.sub(r"\s+", "", text).lower()
    if squeezed in _MISSING_WORDS:
        return "missing", np.nan
    if squeezed in _BELOW_WORDS:
        return "below", np.nan
    if squeezed in _ABOVE_WORDS:
        return "above", np.nan
    match = re.fullmatch(rf"(<=?|>=?|\*)?({_NUMBER})", squeezed)
    if match is None:
        return "invalid", np.nan
    sign, number = match.groups()
    value = float(number)
    if sign is None:
        return "observed", value
    if sign.startswith("<"):
        return "below", value
    if sign.startswith(">"):
        return "above", value
    return "extrapolated", value


def parse_concentrations(
    values: pd.Series,
    *,
    lloq: pd.Series | float | None = None,
    uloq: pd.Series | float | None = None,
) -> pd.DataFrame:
    """Parse concentration cells into value, censoring flag and limit.

    Parameters
    ----------
    values : Series of str
        Cells as exported by the lab.
    lloq, uloq : Series or float, optional
        Lower and upper limits of quantification, aligned with ``values``, used when a
        notation such as ``< LLOQ`` names a limit without giving it. A limit written in
        the cell itself (``<15.6``) wins.

    Returns
    -------
    DataFrame
        Indexed like ``values``, with columns ``value`` (float; for censored cells the
        limit), ``flag`` (one of :data:`FLAGS`, or ``"invalid"`` for a cell that is no
        concentration) and ``limit`` (float, NaN for uncensored cells). A censored cell
        whose limit is known nowhere keeps ``value`` NaN; callers decide whether that is
        an error.
    """
    texts = values.astype("string").fillna("").str.strip()
    parsed = [_classify(text) for text in texts]
    flags = pd.Series([flag for flag, _ in parsed], index=values.index, dtype="object")
    numbers = pd.Series([num for _, num in parsed], index=values.index, dtype="float64")

    def _aligned(limit: pd.Series | float | None) -> pd.Series:
        if limit is None:
            return pd.Series(np.nan, index=values.index, dtype="float64")
        if isinstance(limit, pd.Series):
            return pd.to_numeric(limit, errors="coerce").astype("float64")
        return pd.Series(float(limit), index=values.index, dtype="float64")

    low, high = _aligned(lloq), _aligned(uloq)
    limit = pd.Series(np.nan, index=values.index, dtype="float64")
    below, above = flags.eq("below"), flags.eq("above")
    limit[below] = numbers[below].fillna(low[below])
    limit[above] = numbers[above].fillna(high[above])
    value = numbers.where(~(below | above), limit)
    return pd.DataFrame({"value": value, "flag": flags, "limit": limit})
