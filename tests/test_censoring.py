"""Tests of :func:`csf_responder.censoring.parse_concentrations`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from csf_responder.censoring import FLAGS, parse_concentrations


def parse_one(cell, **limits) -> pd.Series:
    """Parse a single cell and return its row (value, flag, limit)."""
    return parse_concentrations(pd.Series([cell]), **limits).iloc[0]


def test_output_columns_and_index_follow_input():
    values = pd.Series(["1.5", "2"], index=["r7", "r9"])
    parsed = parse_concentrations(values)
    assert list(parsed.columns) == ["value", "flag", "limit"]
    assert list(parsed.index) == ["r7", "r9"]
    assert parsed["value"].dtype == np.float64
    assert parsed["limit"].dtype == np.float64


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("12", 12.0), ("0.5", 0.5), (" 3.25 ", 3.25), (".75", 0.75), ("1e3", 1000.0), ("0", 0.0)],
)
def test_plain_numbers_are_observed(cell, expected):
    row = parse_one(cell)
    assert row["flag"] == "observed"
    assert row["value"] == expected
    assert math.isnan(row["limit"])


@pytest.mark.parametrize("cell", ["<15.6", "< 15.6", "<=15.6"])
def test_below_with_written_limit(cell):
    row = parse_one(cell)
    assert row["flag"] == "below"
    assert row["value"] == 15.6
    assert row["limit"] == 15.6


def test_written_limit_wins_over_lloq_column():
    row = parse_one("<15.6", lloq=3.9)
    assert (row["value"], row["limit"]) == (15.6, 15.6)


@pytest.mark.parametrize("cell", ["< LLOQ", "<LLOQ", "BLQ", "blq", "ND", "OOR <", "OOR<", "<LOD"])
def test_below_notations_take_the_lloq_float(cell):
    row = parse_one(cell, lloq=3.9)
    assert row["flag"] == "below"
    assert row["value"] == 3.9
    assert row["limit"] == 3.9


def test_below_notations_take_the_aligned_lloq_series():
    values = pd.Series(["ND", "< LLOQ", "BLQ"], index=[10, 11, 12])
    lloq = pd.Series(["2.5", "7", "1.25"], index=[10, 11, 12])
    parsed = parse_concentrations(values, lloq=lloq)
    assert parsed["value"].tolist() == [2.5, 7.0, 1.25]
    assert parsed["limit"].tolist() == [2.5, 7.0, 1.25]
    assert parsed["flag"].tolist() == ["below"] * 3


@pytest.mark.parametrize("cell", [">ULOQ", "> ULOQ", "OOR >", "OOR>"])
def test_above_notations_take_the_uloq(cell):
    row = parse_one(cell, lloq=3.9, uloq=2500.0)
    assert row["flag"] == "above"
    assert row["value"] == 2500.0
    assert row["limit"] == 2500.0


def test_above_with_written_limit():
    row = parse_one(">1000", uloq=2500.0)
    assert row["flag"] == "above"
    assert (row["value"], row["limit"]) == (1000.0, 1000.0)


def test_starred_value_is_extrapolated_without_limit():
    row = parse_one("*12.3", lloq=15.6)
    assert row["flag"] == "extrapolated"
    assert row["value"] == 12.3
    assert math.isnan(row["limit"])


@pytest.mark.parametrize("cell", ["", "   ", "NA", "na", "N/A", "NaN", None, np.nan, "-"])
def test_blank_and_na_are_missing(cell):
    row = parse_one(cell, lloq=1.0, uloq=100.0)
    assert row["flag"] == "missing"
    assert math.isnan(row["value"])
    assert math.isnan(row["limit"])


@pytest.mark.parametrize("cell", ["abc", "12 pg/mL", "1,5", "<<3", "15.6<", "approx 4"])
def test_invalid_text_is_flagged_invalid(cell):
    row = parse_one(cell)
    assert row["flag"] == "invalid"
    assert math.isnan(row["value"])


@pytest.mark.parametrize("cell", ["< LLOQ", "BLQ", "ND", ">ULOQ", "OOR >"])
def test_censored_without_any_limit_keeps_value_nan(cell):
    row = parse_one(cell)
    assert row["flag"] in {"below", "above"}
    assert math.isnan(row["value"])
    assert math.isnan(row["limit"])


def test_blank_lloq_cell_leaves_censored_value_nan():
    parsed = parse_concentrations(pd.Series(["ND", "ND"]), lloq=pd.Series(["", "4"]))
    assert math.isnan(parsed["value"].iloc[0])
    assert parsed["value"].iloc[1] == 4.0


def test_every_flag_is_known():
    cells = pd.Series(["1", "<2", ">3", "", "*4", "what"])
    parsed = parse_concentrations(cells)
    assert parsed["flag"].tolist() == [*FLAGS, "invalid"]


def test_input_series_is_not_mutated():
    values = pd.Series([" <15.6", "ND", "12"], index=[3, 1, 2])
    lloq = pd.Series(["5", "5", "5"], index=[3, 1, 2])
    before_values, before_lloq = values.copy(), lloq.copy()
    parse_concentrations(values, lloq=lloq, uloq=100.0)
    pd.testing.assert_series_equal(values, before_values)
    pd.testing.assert_series_equal(lloq, before_lloq)


@pytest.mark.parametrize("cells", [
    ["12.5", "7", "1e3", "-.5", "+4", "5.", "00012", "-0", "1e-400", None],  # one cast
    ["12.5", " 7", "3\t", "", "  ", "8"],  # spaces and blanks: the pattern
    ["12.5", "nan", "NaN", "7"],  # NaN spelled: NaN either way
    ["12.5", "inf", "7"], ["1e500", "2"], ["Infinity", "2"],  # infinities: the pattern
    ["12.5", "<15.6", "ND", "7"],  # censored and words: the pattern
    ["12.5", "1\u00a0", "\u00a02", "\v3"],  # spaces the pattern does not allow
    ["0x1A", "1_000", "1,5", "1 000", "1e", "e5", ".", "-", "1.2.3", "\u0661"],
])
def test_a_column_cast_at_once_reads_as_the_plain_number_pattern_reads_it(cells):
    """Columns of plain numbers are parsed by one Arrow cast; the numbers are those of
    the pattern, cell by cell, whatever else the column holds."""
    import pyarrow as pa

    from csf_responder.censoring import _matched_numbers, _plain_numbers

    for kind in (pa.string(), pa.large_string()):
        column = pa.array(cells, kind)
        np.testing.assert_array_equal(_plain_numbers(column), _matched_numbers(column))
        chunked = pa.chunked_array([column.slice(0, 2), column.slice(2)])
        np.testing.assert_array_equal(_plain_numbers(chunked), _matched_numbers(chunked))
