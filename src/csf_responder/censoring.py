"""Parse concentrations as labs write them: numbers, censored notations and blanks.

A CSF assay reports a value only inside its quantification range. Outside it, lab
exports write notations such as ``<15.6``, ``< LLOQ``, ``OOR <``, ``BLQ``, ``ND`` or
``>ULOQ``; an extrapolated value is often starred (``*12.3``). This module turns each
cell into a number, a censoring flag and the limit that applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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

#: Rows sampled to judge whether a column has few distinct spellings (counting them
#: in a whole chunk of 100,000 cells cost as much as casting it).
_SAMPLE = 1 << 14
#: Columns shorter than this are parsed cell by cell (hashing would not pay off).
_MIN_ENCODE = 1 << 14


def _as_arrow(values: pd.Series, decimal_comma: bool) -> pa.Array | pa.ChunkedArray:
    """Text cells as an Arrow string array (zero-copy when already Arrow-backed)."""
    array = getattr(values.array, "_pa_array", None)
    if array is None or not (pa.types.is_string(array.type)
                             or pa.types.is_large_string(array.type)):
        array = pa.array(values.astype("string[pyarrow]").array)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    if decimal_comma:
        array = pc.replace_substring(array, ",", ".")
    return array


#: Rows looked at, and at most how many distinct values in them, before a column is
#: encoded by lookup in the distinct values of its first rows (see dictionary_codes).
_PROBE = 1 << 16
_PROBE_DISTINCT = 256
#: Mean run length of equal values from which a column is encoded run by run.
_MIN_RUN = 4


def _changes(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Whether each value but the first differs from the one before it."""
    n = len(array)
    return np.asarray(pc.not_equal(array.slice(0, n - 1), array.slice(1))
                      .to_numpy(zero_copy_only=False), dtype=bool)


def _runs(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """(whether each row starts a run, length of each run) of the runs of equal values
    of null-free text, when the runs are long (judged on the first rows first); None
    otherwise."""
    if np.count_nonzero(_changes(array.slice(0, _PROBE))) * _MIN_RUN >= _PROBE:
        return None
    first = np.empty(len(array), dtype=bool)
    first[0] = True
    first[1:] = _changes(array)
    if np.count_nonzero(first) * _MIN_RUN > len(array):
        return None
    return first, np.diff(np.flatnonzero(first), append=len(array))


def dictionary_codes(array: pa.Array | pa.ChunkedArray
                     ) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode Arrow text: (int32 index of each row, distinct values).

    Distinct values are in order of first appearance; a null is a value of its own.
    A long column whose first rows hold few distinct values is first looked up in those
    (``index_in`` is cheaper than building the encoding); if every row is found there,
    that is the encoding, else the column is encoded in full.
    """
    if len(array) >= 4 * _PROBE and array.null_count == 0:
        runs = _runs(array)
        if runs is not None:  # equal values in runs (a long panel's subject ids): encode
            first, lengths = runs  # one value per run, spread to the rows by run length
            values = array.filter(pa.array(first))
            if pc.all(pc.less(values.slice(0, len(values) - 1), values.slice(1))).as_py():
                # each run's value greater than the last (sorted ids): all distinct
                codes = np.arange(len(values), dtype=np.int32)
                dictionary = (values.combine_chunks() if isinstance(values, pa.ChunkedArray)
                              else values)
            else:
                codes, dictionary = dictionary_codes(values)
            return np.repeat(codes, lengths), dictionary
        head = pc.unique(array.slice(0, _PROBE))  # in order of first appearance
        if len(head) <= _PROBE_DISTINCT:
            found = pc.index_in(array, value_set=head)
            if found.null_count == 0:
                return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int32), head
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    if isinstance(encoded, pa.Array):
        return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary
    if encoded.num_chunks == 0:
        return np.zeros(0, dtype=np.int32), pa.array([], array.type)
    dictionary = encoded.chunk(encoded.num_chunks - 1).dictionary
    if any(len(chunk.dictionary) != len(dictionary) for chunk in encoded.chunks):
        return dictionary_codes(array.combine_chunks())  # not one shared dictionary
    indices = [chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks]
    return np.concatenate(indices) if len(indices) > 1 else indices[0], dictionary


def _few_distinct(array: pa.Array | pa.ChunkedArray) -> bool:
    """Whether hashing the column first pays off: few distinct values in a sample."""
    if len(array) < _MIN_ENCODE:
        return False
    sample = array.slice(0, _SAMPLE)
    return len(pc.unique(sample)) <= len(sample) // 4  # a null counts, as one value


def _cast_numbers(array: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """Every cell as a number by Arrow's cast alone, when every cell casts (no spaces,
    no blanks: nulls are NaN) and none to an infinity; else None.

    Arrow's cast reads the plain numbers of :data:`_PLAIN_NUMBER` (sign, digits,
    point, exponent) and, beyond them, only spellings of infinity and NaN: a column it
    casts without an infinity gives what the pattern would (``nan`` is NaN either way),
    without matching the pattern against every cell, nor copying the column's text."""
    try:
        numbers = pc.cast(array, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a cell is no number
        return None
    values = np.array(numbers.to_numpy(zero_copy_only=False), dtype="float64")
    return None if np.isinf(values).any() else values


def _plain_numbers(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Plain numbers of Arrow text as float64 (NaN otherwise)."""
    cast = _cast_numbers(array)  # the usual column: numbers and blanks only
    return _matched_numbers(array) if cast is None else cast


def _matched_numbers(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """:func:`_plain_numbers` of any column: the cells :data:`_PLAIN_NUMBER` matches."""
    plain = pc.match_substring_regex(array, _PLAIN_NUMBER)
    kept = pc.if_else(pc.fill_null(plain, False), array, pa.scalar(None, array.type))
    numbers = pc.cast(pc.utf8_trim_whitespace(kept), pa.float64())
    return np.array(numbers.to_numpy(zero_copy_only=False), dtype="float64")


def _numbers(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Plain numbers of Arrow text as float64 (NaN otherwise); per distinct value when
    the column repeats its spellings."""
    if _few_distinct(array):
        codes, distinct = dictionary_codes(array)
        return _plain_numbers(distinct)[codes]
    return _plain_numbers(array)


def parse_numbers(values: pd.Series, *, decimal_comma: bool = False) -> pd.Series:
    """Plain numbers in text cells as floats; anything else (blank, ``<5``, words) is NaN.

    Vectorised with Arrow compute: suitable for tens of millions of cells.
    """
    numbers = _numbers(_as_arrow(values, decimal_comma))
    return pd.Series(numbers, index=values.index, dtype="float64")


def _classify_texts(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(number, index into ``_CODES``) of every cell of Arrow text (commas replaced)."""
    numbers = _plain_numbers(array)
    codes = np.zeros(len(numbers), dtype=np.int8)  # index into _CODES; 0 = observed
    other = np.flatnonzero(np.isnan(numbers))
    if len(other):
        # the rest (censored notations, blanks, typos) has few distinct spellings
        texts = pc.utf8_trim_whitespace(pc.fill_null(pc.take(array, pa.array(other)), ""))
        spelled, uniques = dictionary_codes(texts)
        parsed = [_classify(text) for text in uniques.to_pylist()]
        flag_codes = np.array([_CODES.index(f) for f, _ in parsed], dtype=np.int8)
        codes[other] = flag_codes[spelled]
        numbers[other] = np.array([n for _, n in parsed], dtype="float64")[spelled]
    return numbers, codes


def _censored(numbers: np.ndarray, codes: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(number, code, limit written in the cell, censored without a limit) of parsed
    cells: a censored cell's limit is the number it writes (``<15.6``)."""
    censored = (codes == _CODES.index("below")) | (codes == _CODES.index("above"))
    limit = np.where(censored, numbers, np.nan)
    return numbers, codes, limit, censored & np.isnan(numbers)


def concentration_arrays(
    values: pd.Series,
    *,
    lloq: pd.Series | np.ndarray | Callable[[np.ndarray], np.ndarray] | float | None = None,
    uloq: pd.Series | np.ndarray | Callable[[np.ndarray], np.ndarray] | float | None = None,
    decimal_comma: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_concentrations` as arrays: (value, flag code into ``FLAGS`` +
    ``"invalid"``, limit). Columns with few distinct spellings are parsed once per
    spelling. A limit may also be a function from row positions to those rows' limits:
    it is then only asked for the censored cells that write no limit themselves."""
    array = _as_arrow(values, decimal_comma)
    if _few_distinct(array):  # censoring worked out per spelling, spread by code
        indices, distinct = dictionary_codes(array)
        numbers, codes, limit, unwritten = _censored(*_classify_texts(distinct))
        rows = (np.flatnonzero(unwritten[indices]) if unwritten.any()
                else np.zeros(0, dtype=np.intp))
        numbers, codes, limit = numbers[indices], codes[indices], limit[indices]
        del indices
    else:
        numbers, codes, limit, unwritten = _censored(*_classify_texts(array))
        rows = np.flatnonzero(unwritten)
    del array, unwritten

    def _aligned(limit, rows: np.ndarray) -> np.ndarray:
        """The limit of the rows ``rows`` (only the rows a censored cell needs)."""
        if limit is None:
            return np.full(len(rows), np.nan)
        if callable(limit):
            return np.asarray(limit(rows), dtype="float64")
        if isinstance(limit, np.ndarray):
            return limit[rows].astype("float64", copy=False)
        if isinstance(limit, pd.Series):
            if pd.api.types.is_numeric_dtype(limit):
                return limit.to_numpy(dtype="float64")[rows]
            text = limit.iloc[rows].astype("string").fillna("")
            return parse_numbers(text, decimal_comma=decimal_comma).to_numpy()
        return np.full(len(rows), float(limit))

    # censored cells that write no limit (``< LLOQ``) take the file's or panel's limit
    for code, bound in (("below", lloq), ("above", uloq)):
        chosen = rows[codes[rows] == _CODES.index(code)]
        if len(chosen):
            limit[chosen] = numbers[chosen] = _aligned(bound, chosen)
    return numbers, codes, limit


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
    value, codes, limit = concentration_arrays(values, lloq=lloq, uloq=uloq,
                                               decimal_comma=decimal_comma)
    flags = pd.Categorical.from_codes(codes, categories=list(_CODES))
    return pd.DataFrame({"value": value, "flag": flags, "limit": limit}, index=values.index)
