"""Tests of the wide cohort table, :func:`csf_responder.cohort.cohort_table`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from csf_responder.cohort import (
    BRIDGE_SUFFIX,
    FLAG_SUFFIX,
    VISIT_COLUMNS,
    _join_lead_in,
    cohort_table,
    csf_columns,
)
from csf_responder.config import AnalyteSpec

PANEL = [
    AnalyteSpec(name="TGF-beta1", unit="pg/mL", required=True, key="tgf_beta1"),
    AnalyteSpec(name="MCP-1", unit="pg/mL", required=True),            # key derived: mcp_1
]
COVARIATES = ("age", "sex", "onset_site", "onset_months")
TIMEPOINTS = ["baseline", "week4"]


@pytest.fixture
def patients() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["P01", "P02", "P03"],
        "arm": ["MSC", "MSC", "control"],
        "age": [54.0, 61.0, 47.0],
        "sex": ["male", "female", "male"],
        "onset_site": ["bulbar", "spinal", "spinal"],
        "onset_months": [14.0, 20.5, 9.0],
    })


@pytest.fixture
def lead_in() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["P03", "P01", "P02"],        # order differs from patients on purpose
        "baseline_day": [0.0, 0.0, -7.0],
        "score_baseline": [41.0, 37.0, 30.0],
        "n_lead_in": [4, 4, 3],
        "leadin_slope": [-0.5, -1.0, -2.0],
    })


@pytest.fixture
def csf() -> pd.DataFrame:
    # P03 is a control patient without CSF
    return pd.DataFrame({
        "subject_id": ["P01", "P01", "P01", "P02", "P02"],
        "timepoint": ["baseline", "week4", "baseline", "baseline", "week4"],
        "analyte": ["TGF-beta1", "TGF-beta1", "MCP-1", "TGF-beta1", "MCP-1"],
        "value": [1200.0, 900.0, 15.6, 800.0, 2000.0],
        "flag": ["observed", "observed", "below", "extrapolated", "above"],
        "limit": [np.nan, np.nan, 15.6, np.nan, 2000.0],
    })


def build(patients, lead_in, csf) -> pd.DataFrame:
    return cohort_table(patients, lead_in, csf, covariates=COVARIATES, analytes=PANEL,
                        timepoints=TIMEPOINTS)


def test_one_row_per_patient_in_patient_order(patients, lead_in, csf):
    table = build(patients, lead_in, csf)
    assert table["subject_id"].tolist() == ["P01", "P02", "P03"]
    assert table["arm"].tolist() == ["MSC", "MSC", "control"]


def test_columns_and_their_order(patients, lead_in, csf):
    table = build(patients, lead_in, csf)
    csf_part = []
    for key in ("tgf_beta1", "mcp_1"):
        for tp in TIMEPOINTS:
            csf_part += [f"{key}_{tp}", f"{key}_{tp}{FLAG_SUFFIX}"]
    plates = [f"plate_{tp}" for tp in TIMEPOINTS]
    bridges = [f"{key}_{tp}{BRIDGE_SUFFIX}" for key in ("tgf_beta1", "mcp_1") for tp in TIMEPOINTS]
    assert list(table.columns) == ["subject_id", "arm", *COVARIATES, *VISIT_COLUMNS,
                                   *csf_part, *plates, *bridges]


def test_bridging_value_of_each_sample_plate(patients, lead_in):
    csf = pd.DataFrame({
        "subject_id": ["P01", "P02", "P01"], "timepoint": ["baseline", "baseline", "week4"],
        "analyte": ["MCP-1", "MCP-1", "MCP-1"], "value": [10.0, 20.0, 30.0],
        "flag": ["observed"] * 3, "limit": [np.nan] * 3, "plate": ["A", "B", "C"]})
    bridges = pd.DataFrame({"plate": ["A", "B"], "analyte": ["MCP-1", "MCP-1"],
                            "value": [100.0, 200.0], "n_wells": [2, 2]})
    table = cohort_table(patients, lead_in, csf, covariates=COVARIATES, analytes=PANEL,
                         timepoints=TIMEPOINTS, bridges=bridges).set_index("subject_id")
    assert table.loc["P01", "mcp_1_baseline_bridge"] == 100.0
    assert table.loc["P02", "mcp_1_baseline_bridge"] == 200.0
    assert np.isnan(table.loc["P01", "mcp_1_week4_bridge"])     # plate C has no bridge
    assert np.isnan(table.loc["P03", "mcp_1_baseline_bridge"])   # no sample at all
    assert table["tgf_beta1_baseline_bridge"].isna().all()


def test_lead_in_summary_is_joined_by_subject(patients, lead_in, csf):
    table = build(patients, lead_in, csf)
    assert table["score_baseline"].tolist() == [37.0, 30.0, 41.0]
    assert table["leadin_slope"].tolist() == [-1.0, -2.0, -0.5]
    assert "baseline_day" not in table.columns


def test_values_and_flags_land_in_their_columns(patients, lead_in, csf):
    table = build(patients, lead_in, csf).set_index("subject_id")
    assert table.loc["P01", "tgf_beta1_baseline"] == 1200.0
    assert table.loc["P01", "tgf_beta1_week4"] == 900.0
    assert table.loc["P01", "mcp_1_baseline"] == 15.6
    assert table.loc["P01", "mcp_1_baseline_flag"] == "below"
    assert table.loc["P02", "tgf_beta1_baseline_flag"] == "extrapolated"
    assert table.loc["P02", "mcp_1_week4"] == 2000.0
    assert table.loc["P02", "mcp_1_week4_flag"] == "above"
    assert table["tgf_beta1_baseline"].dtype == np.float64


def test_absent_sample_is_nan_with_missing_flag(patients, lead_in, csf):
    table = build(patients, lead_in, csf).set_index("subject_id")
    # P01 has no week-4 MCP-1; P02 no week-4 TGF-beta1
    assert np.isnan(table.loc["P01", "mcp_1_week4"])
    assert table.loc["P01", "mcp_1_week4_flag"] == "missing"
    assert np.isnan(table.loc["P02", "tgf_beta1_week4"])
    assert table.loc["P02", "tgf_beta1_week4_flag"] == "missing"


def test_control_patient_without_csf_has_all_missing(patients, lead_in, csf):
    table = build(patients, lead_in, csf).set_index("subject_id")
    values = table.loc["P03", csf_columns(["tgf_beta1", "mcp_1"], TIMEPOINTS)]
    flags = table.loc["P03", [f"{c}{FLAG_SUFFIX}" for c in values.index]]
    assert values.isna().all()
    assert set(flags) == {"missing"}


def test_analyte_without_any_row_still_gets_columns(patients, lead_in, csf):
    only_tgf = csf[csf["analyte"] == "TGF-beta1"]
    table = build(patients, lead_in, only_tgf)
    assert table[["mcp_1_baseline", "mcp_1_week4"]].isna().all().all()
    assert set(table["mcp_1_baseline_flag"]) == {"missing"}
    # its flag columns are made once and shared: writing one changes no other
    table.loc[0, "mcp_1_week4_flag"] = "below"
    assert set(table["mcp_1_baseline_flag"]) == {"missing"}
    assert table["mcp_1_week4_flag"].tolist()[:2] == ["below", "missing"]


def test_csf_of_unknown_subject_adds_no_row(patients, lead_in, csf):
    extra = pd.concat([csf, pd.DataFrame({
        "subject_id": ["P99"], "timepoint": ["baseline"], "analyte": ["MCP-1"],
        "value": [5.0], "flag": ["observed"], "limit": [np.nan]})], ignore_index=True)
    table = build(patients, lead_in, extra)
    assert table["subject_id"].tolist() == ["P01", "P02", "P03"]


def test_inputs_are_not_mutated(patients, lead_in, csf):
    before = patients.copy(), lead_in.copy(), csf.copy()
    build(patients, lead_in, csf)
    for after, original in zip((patients, lead_in, csf), before, strict=True):
        pd.testing.assert_frame_equal(after, original)


def test_csf_columns_orders_by_analyte_then_timepoint():
    assert csf_columns(["a", "b"], ["t0", "t1"]) == ["a_t0", "a_t1", "b_t0", "b_t1"]


# ------------------------------------------------------------------------ internals
def test_categorical_csf_gives_the_same_table(patients, lead_in, csf):
    categorical = csf.astype({c: "category" for c in ("subject_id", "timepoint", "analyte")})
    pd.testing.assert_frame_equal(build(patients, lead_in, categorical),
                                  build(patients, lead_in, csf))


def test_lead_in_join_is_the_one_to_one_left_merge(patients, lead_in):
    joined = _join_lead_in(patients, lead_in.iloc[:2])  # P02 has no lead-in row
    expected = patients.merge(lead_in.iloc[:2][["subject_id", *VISIT_COLUMNS]],
                              on="subject_id", how="left", validate="one_to_one")
    pd.testing.assert_frame_equal(joined, expected)
    with pytest.raises(pd.errors.MergeError):  # duplicates: the merge says so
        _join_lead_in(patients, pd.concat([lead_in, lead_in.iloc[:1]]))


def test_two_rows_of_one_sample_are_refused(patients, lead_in, csf):
    with pytest.raises(ValueError, match="duplicate entries"):
        build(patients, lead_in, pd.concat([csf, csf.iloc[:1]], ignore_index=True))


def test_a_blank_flag_reads_missing(patients, lead_in, csf):
    table = build(patients, lead_in, csf.assign(flag=[None, *csf["flag"][1:]]))
    assert table.loc[0, "tgf_beta1_baseline_flag"] == "missing"
    assert table.loc[0, "tgf_beta1_baseline"] == 1200.0


def test_plate_is_the_first_row_of_each_sample(patients, lead_in, csf):
    plates = csf.assign(plate=["A", "B", "C", None, "E"])
    table = build(patients, lead_in, plates).set_index("subject_id")
    assert table.loc["P01", "plate_baseline"] == "A"      # rows 0 and 2: the first
    assert table.loc["P01", "plate_week4"] == "B"
    assert table.loc["P02", "plate_baseline"] == ""       # no plate given
    assert table.loc["P03", "plate_week4"] == ""          # no sample
    assert table["plate_baseline"].dtype == build(patients, lead_in, csf)["plate_baseline"].dtype
