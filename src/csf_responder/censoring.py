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
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FLAGS", "parse_concentrations", "parse_numbers"]

#: Censoring flags, in the order used throughout the project.
FLAGS = ("observed", "below", "above", "missing", "extrapolated")
_CODES = (*FLAGS, "invalid")

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


_PLAIN_NUMBER = r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"


def _as_arrow(values: pd.Series, decimal_comma: bool) -> pa.Array | pa.ChunkedArray:
    """Text cells as an Arrow string array (zero-copy when already Arrow-backed)."""
    array = pa.array(values.astype("string[pyarrow]").array)
    if array.type != pa.string():
        array = pc.cast(array, pa.string())
    if decimal_comma:
        array = pc.replace_substring(array, ",", ".")
    return array


def parse_numbers(values: pd.Series, *, decimal_comma: bool = False) -> pd.Series:
    """Plain numbers in text cells as floats; anything else (blank, ``<5``, words) is NaN.

    Vectorised with Arrow compute: suitable for tens of millions of cells.
    """
    array = _as_arrow(values, decimal_comma)
    plain = pc.match_substring_regex(array, _PLAIN_NUMBER)
    kept = pc.if_else(pc.fill_null(plain, False), array, pa.scalar(None, pa.string()))
    numbers = pc.cast(pc.utf8_trim_whitespace(kept), pa.float64())
    return pd.Series(numbers.to_numpy(zero_copy_only=False), index=values.index,
                     dtype="float64")


def parse_concentrations(
    values: pd.Series,
    *,
    lloq: pd.Series | float | None = None,
    uloq: pd.Series | float | None = None,
    decimal_comma: bool = False,
) -> pd.DataFrame:
    """Parse concentration cells into value, censoring flag and limit.

    Parameters
    ----------
    values : Series of str
        Cells as exported by the lab.
    lloq, uloq : Series or float, optional
        Lower and upper limits of quantification, aligned with ``values``, used when a
        notation such as ``< LLOQ`` names a limit without giving it. A limit written in
        the cell itself (``<15.6``) wins. Text limits are parsed as numbers.
    decimal_comma : bool
        Read ``12,5`` as 12.5 (exports from European locales).

    Returns
    -------
    DataFrame
        Indexed like ``values``, with columns ``value`` (float; for censored cells the
        limit), ``flag`` (categorical: one of :data:`FLAGS`, or ``"invalid"`` for a cell
        that is no concentration) and ``limit`` (float, NaN for uncensored cells). A censored cell
        whose limit is known nowhere keeps ``value`` NaN; callers decide whether that is
        an error.
    """
    numbers = parse_numbers(values, decimal_comma=decimal_comma).to_numpy(copy=True)
    codes = np.zeros(len(values), dtype=np.int8)  # index into _CODES; 0 = observed
    other = np.isnan(numbers)
    if other.any():
        # the rest (censored notations, blanks, typos) has few distinct spellings
        texts = values[other].astype("string").fillna("")
        if decimal_comma:
            texts = texts.str.replace(",", ".", regex=False)
        spelled, uniques = pd.factorize(texts.str.strip())
        parsed = [_classify(text) for text in uniques]
        flag_codes = np.array([_CODES.index(f) for f, _ in parsed], dtype=np.int8)
        codes[other] = flag_codes[spelled]
        numbers[other] = np.array([n for _, n in parsed], dtype="float64")[spelled]

    def _aligned(limit: pd.Series | float | None) -> np.ndarray:
        if limit is None:
            return np.full(len(values), np.nan)
        if isinstance(limit, pd.Series):
            if pd.api.types.is_numeric_dtype(limit):
                return limit.to_numpy(dtype="float64")
            text = limit.astype("string").fillna("")
            return parse_numbers(text, decimal_comma=decimal_comma).to_numpy()
        return np.full(len(values), float(limit))

    below, above = codes == _CODES.index("below"), codes == _CODES.index("above")
    limit = np.full(len(values), np.nan)
    if below.any() or above.any():
        low, high = _aligned(lloq), _aligned(uloq)
        limit[below] = np.where(np.isnan(numbers[below]), low[below], numbers[below])
        limit[above] = np.where(np.isnan(numbers[above]), high[above], numbers[above])
    value = np.where(below | above, limit, numbers)
    flags = pd.Categorical.from_codes(codes, categories=list(_CODES))
    return pd.DataFrame({"value": value, "flag": flags, "limit": limit}, index=values.index)
