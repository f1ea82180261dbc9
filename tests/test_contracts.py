"""Tests of the input contract, :func:`csf_responder.contracts.check_cohort`.

Each test writes a tiny cohort directory (a few rows) and reads it back with
:func:`csf_responder.io.read_cohort`, so line numbers are real file lines.

A row that breaks a rule becomes a row of ``rejects`` (file, line, subject_id, column,
value, rule, action) and the run goes on; only a file that cannot be used at all stops
the run with a :class:`CohortError`.
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csf_responder.config import AnalyteSpec, IndicationSpec, PanelSpec, load_yaml
from csf_responder.contracts import REJECT_COLUMNS, check_cohort
from csf_responder.errors import CohortError
from csf_responder.io import read_cohort
from tests.conftest import CONFIGS

PANEL = [
    AnalyteSpec(name="TGF-beta1", unit="pg/mL", required=True, key="tgf_beta1"),
    AnalyteSpec(name="MCP-1", unit="pg/mL", required=True, key="mcp1"),
]
TIMEPOINTS = ["baseline", "week4"]
ALS = IndicationSpec.model_validate(load_yaml(CONFIGS / "indications" / "als.yaml"))
PANEL_SPEC = PanelSpec(name="test", analytes=PANEL, timepoints=TIMEPOINTS, decimal_comma=False,
                       replicate_cv_max_percent=20)

PATIENTS = """\
subject_id,arm,age,sex,onset_site,onset_months
P01,MSC,54,male,bulbar,14
P02,control,61,female,spinal,20.5
"""
ALSFRS = """\
subject_id,day,alsfrs_r
P01,-84,40
P01,0,37
P02,0,41
"""
CSF = """\
subject_id,timepoint,analyte,value,unit,lloq
P01,baseline,TGF-beta1,1200,pg/mL,
P01,baseline,MCP-1,<15.6,pg/mL,
P01,week4,MCP-1,ND,pg/mL,3.9
"""


def write(directory: Path, *, patients=PATIENTS, alsfrs=ALSFRS, csf=CSF) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "patients.csv").write_text(patients)
    (directory / "alsfrs.csv").write_text(alsfrs)
    (directory / "csf.csv").write_text(csf)
    return directory


def check(directory: Path, **files):
    raw = read_cohort(write(directory, **files), visits_file="alsfrs.csv")
    return check_cohort(raw, panel=PANEL_SPEC, indication=ALS)


def csf_row(checked, subject, timepoint, analyte) -> pd.Series:
    csf = checked.csf
    chosen = csf[(csf["subject_id"] == subject) & (csf["timepoint"] == timepoint)
                 & (csf["analyte"] == analyte)]
    assert len(chosen) == 1
    return chosen.iloc[0]


def n_rows(text: str) -> int:
    return len(text.strip().splitlines()) - 1


def reject_rows(checked) -> list[tuple]:
    """Rejects as (file, line, subject_id, column, value, rule, action), by file and line."""
    rows = checked.rejects[list(REJECT_COLUMNS)].itertuples(index=False, name=None)
    return sorted((file, int(line), *rest) for file, line, *rest in rows)


def accounted(checked, file: Path) -> tuple[int, int, int]:
    """(rows read, used, rejected) of one file; read = used + rejected always holds."""
    row = checked.accounting.set_index("file").loc[str(file)]
    read, used, rejected = (int(row[c]) for c in ("rows_read", "rows_used", "rows_rejected"))
    assert read == used + rejected
    return read, used, rejected


# ----------------------------------------------------------------------- positive
def test_valid_cohort_gets_types(tmp_path):
    raw = read_cohort(write(tmp_path), visits_file="alsfrs.csv")
    checked = check_cohort(raw, panel=PANEL_SPEC, indication=ALS)
    patients = checked.patients
    assert patients["subject_id"].tolist() == ["P01", "P02"]
    assert patients["arm"].tolist() == ["MSC", "control"]
    assert patients["age"].tolist() == [54.0, 61.0]
    assert patients["onset_months"].tolist() == [14.0, 20.5]
    assert patients["age"].dtype == np.float64
    assert checked.visits["day"].dtype == np.int64
    assert checked.visits["score"].dtype == np.int64
    assert checked.visits["day"].tolist() == [-84, 0, 0]
    assert checked.csf["value"].dtype == np.float64
    assert checked.rejects.empty
    assert list(checked.rejects.columns) == list(REJECT_COLUMNS)
    # the reader's notes are passed on; a clean cohort adds none of its own
    assert "patients.csv: read as CSV (delimiter ','), 2 rows" in checked.notes
    assert "alsfrs.csv: read as CSV (delimiter ','), 3 rows" in checked.notes
    assert [note for note in checked.notes if note not in raw.notes] == []


def test_valid_cohort_uses_every_row(tmp_path):
    checked = check(tmp_path)
    assert accounted(checked, tmp_path / "patients.csv") == (n_rows(PATIENTS), 2, 0)
    assert accounted(checked, tmp_path / "alsfrs.csv") == (n_rows(ALSFRS), 3, 0)
    assert accounted(checked, tmp_path / "csf.csv") == (n_rows(CSF), 3, 0)


def test_csf_values_flags_and_limits(tmp_path):
    checked = check(tmp_path)
    tgf = csf_row(checked, "P01", "baseline", "TGF-beta1")
    assert (tgf["value"], tgf["flag"]) == (1200.0, "observed")
    below = csf_row(checked, "P01", "baseline", "MCP-1")
    assert (below["value"], below["flag"], below["limit"]) == (15.6, "below", 15.6)
    nd = csf_row(checked, "P01", "week4", "MCP-1")
    assert (nd["value"], nd["flag"], nd["limit"]) == (3.9, "below", 3.9)


def test_columns_in_any_order(tmp_path):
    reference = check(tmp_path / "a")
    shuffled = check(
        tmp_path / "b",
        patients="onset_months,sex,subject_id,onset_site,age,arm\n"
                 "14,male,P01,bulbar,54,MSC\n20.5,female,P02,spinal,61,control\n",
        alsfrs="alsfrs_r,subject_id,day\n40,P01,-84\n37,P01,0\n41,P02,0\n",
        csf="lloq,unit,value,analyte,timepoint,subject_id\n"
            ",pg/mL,1200,TGF-beta1,baseline,P01\n"
            ",pg/mL,<15.6,MCP-1,baseline,P01\n"
            "3.9,pg/mL,ND,MCP-1,week4,P01\n",
    )
    pd.testing.assert_frame_equal(shuffled.patients, reference.patients)
    pd.testing.assert_frame_equal(shuffled.visits, reference.visits)
    pd.testing.assert_frame_equal(shuffled.csf, reference.csf)


def test_extra_column_is_ignored_with_a_note(tmp_path):
    patients = "subject_id,arm,age,sex,onset_site,onset_months,site\n" \
               "P01,MSC,54,male,bulbar,14,Seoul\nP02,control,61,female,spinal,20.5,Busan\n"
    checked = check(tmp_path, patients=patients)
    assert "site" not in checked.patients.columns
    dropped = [note for note in checked.notes if "dropped column" in note]
    assert len(dropped) == 1
    assert dropped[0].startswith(str(tmp_path / "patients.csv"))
    assert "site" in dropped[0]
    assert not any("Seoul" in note or "Busan" in note for note in checked.notes)


def test_alsfrs_item_columns_are_known_not_extra(tmp_path):
    alsfrs = "subject_id,day,alsfrs_r,q1,q12\nP01,-84,40,4,3\nP01,0,37,4,3\nP02,0,41,4,4\n"
    checked = check(tmp_path, alsfrs=alsfrs)
    assert "alsfrs.csv: read as CSV (delimiter ','), 3 rows" in checked.notes
    assert not any("q1" in note for note in checked.notes)
    assert checked.rejects.empty
    assert len(checked.visits) == 3


def test_arm_sex_and_onset_site_case_is_normalised(tmp_path):
    patients = "subject_id,arm,age,sex,onset_site,onset_months\n" \
               "P01,msc,54,M,Bulbar,14\nP02, CONTROL ,61,Female,limb,20\n"
    checked = check(tmp_path, patients=patients)
    assert checked.patients["arm"].tolist() == ["MSC", "control"]
    assert checked.patients["sex"].tolist() == ["male", "female"]
    assert checked.patients["onset_site"].tolist() == ["bulbar", "spinal"]


def test_blank_age_and_onset_are_allowed_as_nan(tmp_path):
    patients = "subject_id,arm,age,sex,onset_site,onset_months\nP01,MSC,,male,bulbar,\n" \
               "P02,control,61,female,spinal,20\n"
    checked = check(tmp_path, patients=patients)
    assert np.isnan(checked.patients["age"].iloc[0])
    assert np.isnan(checked.patients["onset_months"].iloc[0])


def test_ng_per_ml_is_converted_to_pg_per_ml_for_value_and_limit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,TGF-beta1,1.2,ng/mL\n" \
          "P01,baseline,MCP-1,<0.0156,ng/mL\n"
    checked = check(tmp_path, csf=csf)
    tgf = csf_row(checked, "P01", "baseline", "TGF-beta1")
    assert tgf["value"] == pytest.approx(1200.0)
    mcp = csf_row(checked, "P01", "baseline", "MCP-1")
    assert mcp["flag"] == "below"
    assert mcp["value"] == pytest.approx(15.6)
    assert mcp["limit"] == pytest.approx(15.6)


def test_lloq_column_is_converted_with_the_row_unit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,lloq\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,\n" \
          "P01,baseline,MCP-1,BLQ,ng/mL,0.02\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert row["flag"] == "below"
    assert row["limit"] == pytest.approx(20.0)
    assert row["value"] == pytest.approx(20.0)


def test_analyte_names_match_ignoring_case_and_separators(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,tgf beta1,10,pg/mL\nP01,baseline,mcp_1,20,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    assert sorted(checked.csf["analyte"]) == ["MCP-1", "TGF-beta1"]
    assert checked.rejects.empty


def test_analyte_name_without_hyphen_matches(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL\nP01,baseline,MCP1,20,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    assert checked.rejects.empty
    assert csf_row(checked, "P01", "baseline", "MCP-1")["value"] == 20.0


def test_replicates_are_averaged_with_a_note(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,1\n" \
          "P01,baseline,MCP-1,100,pg/mL,1\n" \
          "P01,baseline,MCP-1,140,pg/mL,2\n" \
          "P01,week4,MCP-1,50,pg/mL,1\n"
    checked = check(tmp_path, csf=csf)
    assert len(checked.csf) == 3
    assert checked.rejects.empty
    mcp = csf_row(checked, "P01", "baseline", "MCP-1")
    assert (mcp["value"], mcp["n_replicates"]) == (120.0, 2)
    assert csf_row(checked, "P01", "week4", "MCP-1")["value"] == 50.0
    combined = [note for note in checked.notes if "replicate rows" in note]
    assert len(combined) == 1
    assert combined[0].startswith(str(tmp_path / "csf.csv"))
    assert "4 replicate rows into 3 sample values" in combined[0]


def test_replicate_cv_above_the_panel_limit_is_flagged_in_qc(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,1\n" \
          "P01,baseline,MCP-1,100,pg/mL,1\n" \
          "P01,baseline,MCP-1,140,pg/mL,2\n"
    qc = check(tmp_path, csf=csf).qc
    assert len(qc) == 1
    cv = 100 * statistics.stdev([100, 140]) / statistics.mean([100, 140])  # 23.6 % > 20 %
    assert (qc["analyte"].iloc[0], qc["n_replicates"].iloc[0]) == ("MCP-1", 2)
    assert qc["cv_percent"].iloc[0] == pytest.approx(cv)
    assert bool(qc["flagged"].iloc[0]) is True


def test_quantified_replicate_wins_over_censored_one(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,1\n" \
          "P01,baseline,MCP-1,<15.6,pg/mL,1\n" \
          "P01,baseline,MCP-1,18,pg/mL,2\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert (row["value"], row["flag"]) == (18.0, "observed")


def test_replicates_censored_above_get_no_cv_and_the_highest_limit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,1\n" \
          "P01,baseline,MCP-1,>5000,pg/mL,1\n" \
          "P01,baseline,MCP-1,>4000,pg/mL,2\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert row["flag"] == "above"
    assert np.isnan(row["cv_percent"])
    # above 5000 and above 4000: the sample is above 5000
    assert (row["value"], row["limit"]) == (5000.0, 5000.0)


def test_replicates_censored_below_take_the_lowest_limit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL,1\n" \
          "P01,baseline,MCP-1,<15.6,pg/mL,1\n" \
          "P01,baseline,MCP-1,<7.8,pg/mL,2\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert (row["flag"], row["value"], row["limit"]) == ("below", 7.8, 7.8)
    assert np.isnan(row["cv_percent"])


# ------------------------------------------------------------------------ rejects
def test_unusable_rows_are_rejected_with_file_line_and_rule(tmp_path):
    alsfrs = (
        "subject_id,day,alsfrs_r\n"
        "P01,-84,40\n"     # line 2: used
        "P99,-84,40\n"     # line 3: unknown subject
        "P01,-56,\n"       # line 4: blank score
        "P01,0,37\n"       # line 5: used
        "P02,0,41\n"       # line 6: used
    )
    csf = (
        "subject_id,timepoint,analyte,value,unit\n"
        "P01,baseline,MCP-1,20,pg/mL\n"      # line 2: used
        "P99,baseline,MCP-1,20,pg/mL\n"      # line 3: unknown subject
        "P01,baseline,IL-6,5,pg/mL\n"        # line 4: analyte not in panel
        "P01,month3,MCP-1,25,pg/mL\n"        # line 5: unknown timepoint
        "P02,week4,TGF-beta1,900,pg/mL\n"    # line 6: used
    )
    checked = check(tmp_path, alsfrs=alsfrs, csf=csf)
    alsfrs_file, csf_file = str(tmp_path / "alsfrs.csv"), str(tmp_path / "csf.csv")
    assert reject_rows(checked) == [
        (alsfrs_file, 3, "P99", "subject_id", "P99", "subject_unknown", "row dropped"),
        (alsfrs_file, 4, "P01", "alsfrs_r", "", "score_missing", "row dropped"),
        (csf_file, 3, "P99", "subject_id", "P99", "subject_unknown", "row dropped"),
        (csf_file, 4, "P01", "analyte", "IL-6", "analyte_unknown", "row dropped"),
        (csf_file, 5, "P01", "timepoint", "month3", "timepoint_unknown", "row dropped"),
    ]
    assert checked.visits[["subject_id", "day"]].values.tolist() == [
        ["P01", -84], ["P01", 0], ["P02", 0]]
    assert sorted(zip(checked.csf["subject_id"], checked.csf["analyte"], strict=True)) == [
        ("P01", "MCP-1"), ("P02", "TGF-beta1")]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (n_rows(alsfrs), 3, 2)
    assert accounted(checked, tmp_path / "csf.csv") == (n_rows(csf), 2, 3)


def test_visit_after_a_blank_score_for_the_same_day_is_kept(tmp_path):
    alsfrs = "subject_id,day,alsfrs_r\nP01,0,\nP01,0,37\nP02,0,41\n"
    checked = check(tmp_path, alsfrs=alsfrs)
    assert checked.visits.query("subject_id == 'P01'")["score"].tolist() == [37]
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 2, "P01", "alsfrs_r", "", "score_missing", "row dropped")]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_reject_lines_count_blank_lines_in_the_file(tmp_path):
    alsfrs = "subject_id,day,alsfrs_r\n\nP01,-84,40\n\nP01,0,x\nP02,0,41\n"
    checked = check(tmp_path, alsfrs=alsfrs)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 5, "P01", "alsfrs_r", "x", "score_invalid", "row dropped")]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_visits_on_one_day_with_different_scores_are_all_dropped(tmp_path):
    alsfrs = ALSFRS + "P01,0,36\n"  # line 5 contradicts line 3
    checked = check(tmp_path, alsfrs=alsfrs)
    file = str(tmp_path / "alsfrs.csv")
    assert reject_rows(checked) == [
        (file, 3, "P01", "subject_id", "P01", "visit_conflict", "all such visits dropped"),
        (file, 5, "P01", "subject_id", "P01", "visit_conflict", "all such visits dropped"),
    ]
    assert checked.visits[["subject_id", "day"]].values.tolist() == [["P01", -84], ["P02", 0]]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (4, 2, 2)


def test_exact_copy_of_a_visit_is_dropped_and_the_original_kept(tmp_path):
    alsfrs = ALSFRS + "P01,0,37\n"  # line 5 repeats line 3
    checked = check(tmp_path, alsfrs=alsfrs)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 5, "P01", "subject_id", "P01", "exact_duplicate",
         "copy dropped")]
    assert checked.visits.query("subject_id == 'P01' and day == 0")["score"].tolist() == [37]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (4, 3, 1)


def test_unknown_arm(tmp_path):
    patients = PATIENTS.replace("P02,control", "P02,placebo")
    checked = check(tmp_path, patients=patients)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 4, "P02", "subject_id", "P02", "subject_rejected",
         "row dropped"),
        (str(tmp_path / "patients.csv"), 3, "P02", "arm", "placebo", "arm_unknown",
         "patient dropped"),
    ]
    assert checked.patients["subject_id"].tolist() == ["P01"]
    assert checked.visits["subject_id"].tolist() == ["P01", "P01"]
    assert len(checked.csf) == 3
    assert accounted(checked, tmp_path / "patients.csv") == (2, 1, 1)
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_duplicate_subject_id(tmp_path):
    patients = PATIENTS + "P02,MSC,70,female,spinal,9\n"  # line 4: P02 again, other data
    checked = check(tmp_path, patients=patients)
    file = str(tmp_path / "patients.csv")
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 4, "P02", "subject_id", "P02", "subject_rejected",
         "row dropped"),
        (file, 3, "P02", "subject_id", "P02", "subject_id_duplicate", "patient dropped"),
        (file, 4, "P02", "subject_id", "P02", "subject_id_duplicate", "patient dropped"),
    ]
    assert checked.patients["subject_id"].tolist() == ["P01"]
    assert checked.visits["subject_id"].tolist() == ["P01", "P01"]
    assert accounted(checked, tmp_path / "patients.csv") == (3, 1, 2)
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_non_integer_alsfrs_r(tmp_path):
    alsfrs = ALSFRS.replace("P01,0,37", "P01,0,37.5")
    checked = check(tmp_path, alsfrs=alsfrs)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 3, "P01", "alsfrs_r", "37.5", "score_invalid",
         "row dropped")]
    assert checked.visits[["subject_id", "day"]].values.tolist() == [["P01", -84], ["P02", 0]]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_non_numeric_alsfrs_r(tmp_path):
    alsfrs = ALSFRS.replace("P02,0,41", "P02,0,forty")
    checked = check(tmp_path, alsfrs=alsfrs)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 4, "P02", "alsfrs_r", "forty", "score_invalid",
         "row dropped")]
    assert checked.visits[["subject_id", "day"]].values.tolist() == [["P01", -84], ["P01", 0]]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


@pytest.mark.parametrize("score", ["49", "-1"])
def test_alsfrs_r_out_of_range(tmp_path, score):
    alsfrs = ALSFRS.replace("P01,-84,40", f"P01,-84,{score}")
    checked = check(tmp_path, alsfrs=alsfrs)
    assert reject_rows(checked) == [
        (str(tmp_path / "alsfrs.csv"), 2, "P01", "alsfrs_r", score, "score_invalid",
         "row dropped")]
    assert checked.visits[["subject_id", "day"]].values.tolist() == [["P01", 0], ["P02", 0]]
    assert accounted(checked, tmp_path / "alsfrs.csv") == (3, 2, 1)


def test_alsfrs_r_range_bounds_are_valid(tmp_path):
    alsfrs = ALSFRS.replace("P01,-84,40", "P01,-84,48").replace("P01,0,37", "P01,0,0")
    checked = check(tmp_path, alsfrs=alsfrs)
    assert checked.rejects.empty
    assert checked.visits["score"].tolist() == [48, 0, 41]


def test_unparseable_csf_value(tmp_path):
    csf = CSF.replace("1200", "12OO") + "P01,week4,TGF-beta1,1100,pg/mL,\n"
    checked = check(tmp_path, csf=csf)
    assert reject_rows(checked) == [
        (str(tmp_path / "csf.csv"), 2, "P01", "value", "12OO", "value_invalid", "row dropped")]
    assert csf_row(checked, "P01", "week4", "TGF-beta1")["value"] == 1100.0
    assert len(checked.csf) == 3
    assert accounted(checked, tmp_path / "csf.csv") == (4, 3, 1)


def test_censored_value_without_a_limit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL\n" \
          "P01,baseline,MCP-1,20,pg/mL\n" \
          "P01,week4,MCP-1,< LLOQ,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    assert reject_rows(checked) == [
        (str(tmp_path / "csf.csv"), 4, "P01", "value", "< LLOQ", "limit_missing", "row dropped")]
    assert csf_row(checked, "P01", "baseline", "MCP-1")["value"] == 20.0
    assert len(checked.csf) == 2
    assert accounted(checked, tmp_path / "csf.csv") == (3, 2, 1)


def test_same_sample_twice_without_replicate_is_a_measurement_conflict(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,TGF-beta1,1200,pg/mL\n" \
          "P01,baseline,MCP-1,20,pg/mL\n" \
          "P01,baseline,MCP-1,25,pg/mL\n" \
          "P01,week4,MCP-1,30,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    file = str(tmp_path / "csf.csv")
    assert reject_rows(checked) == [
        (file, 3, "P01", "subject_id", "P01", "measurement_conflict", "all such rows dropped"),
        (file, 4, "P01", "subject_id", "P01", "measurement_conflict", "all such rows dropped"),
    ]
    assert csf_row(checked, "P01", "week4", "MCP-1")["value"] == 30.0
    assert len(checked.csf) == 2
    assert accounted(checked, tmp_path / "csf.csv") == (4, 2, 2)


# ------------------------------------------------------------------------- errors
def assert_points_at(exc: CohortError, file: Path, line: int | None, column: str) -> None:
    message = str(exc)
    assert exc.file == str(file)
    assert exc.column == column
    assert str(file) in message
    assert f"column '{column}'" in message
    assert exc.row == line
    if line is not None:
        assert f"line {line}" in message


@pytest.mark.parametrize(
    ("name", "column"),
    [("patients.csv", "arm"), ("patients.csv", "onset_months"), ("alsfrs.csv", "day"),
     ("alsfrs.csv", "alsfrs_r"), ("csf.csv", "unit"), ("csf.csv", "timepoint")],
)
def test_missing_required_column(tmp_path, name, column):
    texts = {"patients.csv": PATIENTS, "alsfrs.csv": ALSFRS, "csf.csv": CSF}
    table = pd.read_csv(io.StringIO(texts[name]), dtype=str, keep_default_na=False)
    texts[name] = table.drop(columns=column).to_csv(index=False)
    with pytest.raises(CohortError, match="required column is missing") as info:
        check(tmp_path, patients=texts["patients.csv"], alsfrs=texts["alsfrs.csv"],
              csf=texts["csf.csv"])
    assert_points_at(info.value, tmp_path / name, None, column)


def test_unconvertible_unit(tmp_path):
    csf = CSF.replace("P01,baseline,MCP-1,<15.6,pg/mL", "P01,baseline,MCP-1,<15.6,IU/mL")
    with pytest.raises(CohortError, match="'IU/mL' cannot be converted to pg/mL") as info:
        check(tmp_path, csf=csf)
    assert_points_at(info.value, tmp_path / "csf.csv", 3, "unit")


def test_identifier_like_column_is_refused(tmp_path):
    patients = PATIENTS.replace("onset_months\n", "onset_months,initials\n") \
        .replace(",14\n", ",14,AB\n").replace(",20.5\n", ",20.5,CD\n")
    with pytest.raises(CohortError, match="direct identifier") as info:
        check(tmp_path, patients=patients)
    assert_points_at(info.value, tmp_path / "patients.csv", None, "initials")
    assert "AB" not in str(info.value)


def test_identifier_like_column_listed_in_drop_columns_is_dropped(tmp_path):
    patients = PATIENTS.replace("onset_months\n", "onset_months,initials\n") \
        .replace(",14\n", ",14,AB\n").replace(",20.5\n", ",20.5,CD\n")
    raw = read_cohort(write(tmp_path, patients=patients), visits_file="alsfrs.csv")
    checked = check_cohort(raw, panel=PANEL_SPEC, indication=ALS, drop_columns=["initials"])
    assert "initials" not in checked.patients.columns
    assert checked.patients["subject_id"].tolist() == ["P01", "P02"]
    assert any(note.startswith(str(tmp_path / "patients.csv")) and "initials" in note
               for note in checked.notes)


@pytest.mark.parametrize("tgf_rows", [
    "",                                     # no TGF-beta1 row at all
    "P01,baseline,TGF-beta1,12OO,pg/mL\n",  # TGF-beta1 rows, all rejected
])
def test_required_analyte_without_a_usable_value(tmp_path, tgf_rows):
    csf = "subject_id,timepoint,analyte,value,unit\nP01,baseline,MCP-1,20,pg/mL\n" + tgf_rows
    with pytest.raises(CohortError, match="required analyte TGF-beta1 has no usable value") \
            as info:
        check(tmp_path, csf=csf)
    assert info.value.file == str(tmp_path / "csf.csv")
    assert str(info.value).startswith(f"{tmp_path / 'csf.csv'}: ")


# ------------------------------------------------------------------ bridging samples
BRIDGED = """\
subject_id,timepoint,analyte,value,unit,plate,sample_type
P01,baseline,TGF-beta1,1200,pg/mL,A,
P01,baseline,MCP-1,30,pg/mL,A,sample
P02,baseline,MCP-1,60,pg/mL,B,
POOL,,MCP-1,100,pg/mL,A,bridge
POOL,,MCP-1,110,pg/mL,A,Bridge
POOL,,MCP-1,200,pg/mL,B,bridging
POOL,,MCP-1,<15.6,pg/mL,B,bridge
"""


def test_bridging_samples_become_a_plate_table_not_patients(tmp_path):
    checked = check(tmp_path, csf=BRIDGED)
    assert checked.rejects.empty
    bridges = checked.bridges.set_index(["plate", "analyte"])
    assert bridges.loc[("A", "MCP-1"), "value"] == pytest.approx(105.0)   # mean of 2 wells
    assert bridges.loc[("A", "MCP-1"), "n_wells"] == 2
    assert bridges.loc[("B", "MCP-1"), "value"] == 200.0                  # censored well out
    assert "POOL" not in set(checked.csf["subject_id"].astype(str))
    accounting = checked.accounting.set_index("file").loc[str(tmp_path / "csf.csv")]
    assert (accounting["rows_read"], accounting["rows_used"]) == (7, 7)
    assert any("censored bridging-sample" in note for note in checked.notes)


def test_bridging_sample_without_plate_and_unknown_sample_type_are_rejected(tmp_path):
    csf = BRIDGED.replace("POOL,,MCP-1,200,pg/mL,B,bridging", "POOL,,MCP-1,200,pg/mL,,bridge") \
                 .replace("P02,baseline,MCP-1,60,pg/mL,B,", "P02,baseline,MCP-1,60,pg/mL,B,QC")
    checked = check(tmp_path, csf=csf)
    rejects = checked.rejects[["line", "column", "rule", "action"]].values.tolist()
    assert rejects == [[4, "sample_type", "sample_type_unknown", "row dropped"],
                       [7, "plate", "bridge_without_plate", "row dropped"]]


# ----------------------------------------------------------------- cohorts to score
def test_a_cohort_to_score_may_lack_the_arm_column(tmp_path):
    no_arm = PATIENTS.replace("arm,", "", 1).replace("MSC,", "").replace("control,", "")
    raw = read_cohort(write(tmp_path, patients=no_arm), visits_file="alsfrs.csv")
    with pytest.raises(CohortError, match="column 'arm': required column is missing"):
        check_cohort(raw, panel=PANEL_SPEC, indication=ALS)
    checked = check_cohort(raw, panel=PANEL_SPEC, indication=ALS, arm_required=False)
    assert checked.patients["subject_id"].tolist() == ["P01", "P02"]
    assert checked.patients["arm"].isna().all() and checked.rejects.empty


def test_an_arm_given_to_score_is_still_checked(tmp_path):
    raw = read_cohort(write(tmp_path, patients=PATIENTS.replace("control", "placebo")),
                      visits_file="alsfrs.csv")
    checked = check_cohort(raw, panel=PANEL_SPEC, indication=ALS, arm_required=False)
    assert checked.rejects.loc[checked.rejects["file"].str.endswith("patients.csv"),
                               "rule"].tolist() == ["arm_unknown"]
    assert checked.patients["subject_id"].tolist() == ["P01"]
