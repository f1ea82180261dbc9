"""Tests of the input contract, :func:`csf_responder.contracts.check_cohort`.

Each test writes a tiny cohort directory (a few rows) and reads it back with
:func:`csf_responder.io.read_cohort`, so line numbers are real file lines.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csf_responder.config import AnalyteSpec
from csf_responder.contracts import REJECT_COLUMNS, check_cohort
from csf_responder.errors import CohortError
from csf_responder.io import read_cohort

PANEL = [
    AnalyteSpec(name="TGF-beta1", unit="pg/mL", key="tgf_beta1"),
    AnalyteSpec(name="MCP-1", unit="pg/mL", key="mcp1"),
]
TIMEPOINTS = ["baseline", "week4"]

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
    raw = read_cohort(write(directory, **files))
    return check_cohort(raw, analytes=PANEL, timepoints=TIMEPOINTS)


def csf_row(checked, subject, timepoint, analyte) -> pd.Series:
    csf = checked.csf
    chosen = csf[(csf["subject_id"] == subject) & (csf["timepoint"] == timepoint)
                 & (csf["analyte"] == analyte)]
    assert len(chosen) == 1
    return chosen.iloc[0]


def n_rows(text: str) -> int:
    return len(text.strip().splitlines()) - 1


# ----------------------------------------------------------------------- positive
def test_valid_cohort_gets_types(tmp_path):
    checked = check(tmp_path)
    patients = checked.patients
    assert patients["subject_id"].tolist() == ["P01", "P02"]
    assert patients["arm"].tolist() == ["MSC", "control"]
    assert patients["age"].tolist() == [54.0, 61.0]
    assert patients["onset_months"].tolist() == [14.0, 20.5]
    assert patients["age"].dtype == np.float64
    assert checked.alsfrs["day"].dtype == np.int64
    assert checked.alsfrs["alsfrs_r"].dtype == np.int64
    assert checked.alsfrs["day"].tolist() == [-84, 0, 0]
    assert checked.csf["value"].dtype == np.float64
    assert checked.rejects.empty
    assert list(checked.rejects.columns) == list(REJECT_COLUMNS)
    assert checked.notes == []


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
    pd.testing.assert_frame_equal(shuffled.alsfrs, reference.alsfrs)
    pd.testing.assert_frame_equal(shuffled.csf, reference.csf)


def test_extra_column_is_ignored_with_a_note(tmp_path):
    patients = "subject_id,arm,age,sex,onset_site,onset_months,site\n" \
               "P01,MSC,54,male,bulbar,14,Seoul\nP02,control,61,female,spinal,20.5,Busan\n"
    checked = check(tmp_path, patients=patients)
    assert "site" not in checked.patients.columns
    assert len(checked.notes) == 1
    assert str(tmp_path / "patients.csv") in checked.notes[0]
    assert "site" in checked.notes[0]


def test_alsfrs_item_columns_are_known_not_extra(tmp_path):
    alsfrs = "subject_id,day,alsfrs_r,q1,q12\nP01,-84,40,4,3\nP01,0,37,4,3\nP02,0,41,4,4\n"
    assert check(tmp_path, alsfrs=alsfrs).notes == []


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
    csf = "subject_id,timepoint,analyte,value,unit,lloq\nP01,baseline,MCP-1,BLQ,ng/mL,0.02\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert row["limit"] == pytest.approx(20.0)
    assert row["value"] == pytest.approx(20.0)


def test_analyte_names_match_ignoring_case_and_separators(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,tgf beta1,10,pg/mL\nP01,baseline,mcp_1,20,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    assert sorted(checked.csf["analyte"]) == ["MCP-1", "TGF-beta1"]
    assert checked.rejects.empty


def test_analyte_name_without_hyphen_matches(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\nP01,baseline,MCP1,20,pg/mL\n"
    checked = check(tmp_path, csf=csf)
    assert checked.rejects.empty
    assert checked.csf["analyte"].tolist() == ["MCP-1"]


def test_replicates_are_averaged_with_a_note(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit,replicate\n" \
          "P01,baseline,MCP-1,100,pg/mL,1\n" \
          "P01,baseline,MCP-1,140,pg/mL,2\n" \
          "P01,week4,MCP-1,50,pg/mL,1\n"
    checked = check(tmp_path, csf=csf)
    assert len(checked.csf) == 2
    assert csf_row(checked, "P01", "baseline", "MCP-1")["value"] == 120.0
    assert csf_row(checked, "P01", "week4", "MCP-1")["value"] == 50.0
    assert len(checked.notes) == 1
    assert "averaged" in checked.notes[0]
    assert str(tmp_path / "csf.csv") in checked.notes[0]


def test_quantified_replicate_wins_over_censored_one(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,MCP-1,<15.6,pg/mL\n" \
          "P01,baseline,MCP-1,18,pg/mL\n"
    row = csf_row(check(tmp_path, csf=csf), "P01", "baseline", "MCP-1")
    assert (row["value"], row["flag"]) == (18.0, "observed")


# ------------------------------------------------------------------------ rejects
def test_unusable_rows_are_rejected_with_file_line_and_reason(tmp_path):
    alsfrs = (
        "subject_id,day,alsfrs_r\n"
        "P01,-84,40\n"     # line 2: used
        "P99,-84,40\n"     # line 3: unknown subject
        "P01,-56,\n"       # line 4: blank score
        "P01,0,37\n"       # line 5: used
        "P01,0,36\n"       # line 6: duplicate of line 5
        "P02,0,41\n"       # line 7: used
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
    rejects = checked.rejects
    got = {(r.file, int(r.line)): (r.subject_id, r.reason) for r in rejects.itertuples()}
    assert set(got) == {(alsfrs_file, 3), (alsfrs_file, 4), (alsfrs_file, 6),
                        (csf_file, 3), (csf_file, 4), (csf_file, 5)}
    assert got[(alsfrs_file, 3)] == ("P99", "subject_id not in patients.csv")
    assert got[(alsfrs_file, 4)] == ("P01", "alsfrs_r is blank")
    assert got[(alsfrs_file, 6)][1].startswith("duplicate visit")
    assert got[(csf_file, 3)] == ("P99", "subject_id not in patients.csv")
    assert "'IL-6'" in got[(csf_file, 4)][1]
    assert "not in the panel" in got[(csf_file, 4)][1]
    assert "'month3'" in got[(csf_file, 5)][1]

    # the duplicate keeps the first score, and every row is used or rejected
    assert checked.alsfrs.query("subject_id == 'P01' and day == 0")["alsfrs_r"].tolist() == [37]
    n_alsfrs_rejects = (rejects["file"] == alsfrs_file).sum()
    n_csf_rejects = (rejects["file"] == csf_file).sum()
    assert len(checked.alsfrs) + n_alsfrs_rejects == n_rows(alsfrs)
    assert len(checked.csf) + n_csf_rejects == n_rows(csf)


def test_visit_after_a_blank_line_for_the_same_day_is_kept(tmp_path):
    alsfrs = "subject_id,day,alsfrs_r\nP01,0,\nP01,0,37\nP02,0,41\n"
    checked = check(tmp_path, alsfrs=alsfrs)
    assert checked.alsfrs.query("subject_id == 'P01'")["alsfrs_r"].tolist() == [37]
    assert checked.rejects["reason"].tolist() == ["alsfrs_r is blank"]


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


def test_unknown_arm(tmp_path):
    patients = PATIENTS.replace("P02,control", "P02,placebo")
    with pytest.raises(CohortError, match="'placebo'") as info:
        check(tmp_path, patients=patients)
    assert_points_at(info.value, tmp_path / "patients.csv", 3, "arm")


def test_duplicate_subject_id(tmp_path):
    patients = PATIENTS + "P01,control,70,female,spinal,9\n"
    with pytest.raises(CohortError, match="'P01' appears twice") as info:
        check(tmp_path, patients=patients)
    assert_points_at(info.value, tmp_path / "patients.csv", 4, "subject_id")


def test_non_integer_alsfrs_r(tmp_path):
    alsfrs = ALSFRS.replace("P01,0,37", "P01,0,37.5")
    with pytest.raises(CohortError, match="integer") as info:
        check(tmp_path, alsfrs=alsfrs)
    assert_points_at(info.value, tmp_path / "alsfrs.csv", 3, "alsfrs_r")


def test_non_numeric_alsfrs_r(tmp_path):
    alsfrs = ALSFRS.replace("P02,0,41", "P02,0,forty")
    with pytest.raises(CohortError, match="'forty'") as info:
        check(tmp_path, alsfrs=alsfrs)
    assert_points_at(info.value, tmp_path / "alsfrs.csv", 4, "alsfrs_r")


@pytest.mark.parametrize(("score", "bound"), [("49", "<= 48"), ("-1", ">= 0")])
def test_alsfrs_r_out_of_range(tmp_path, score, bound):
    alsfrs = ALSFRS.replace("P01,-84,40", f"P01,-84,{score}")
    with pytest.raises(CohortError, match=bound) as info:
        check(tmp_path, alsfrs=alsfrs)
    assert_points_at(info.value, tmp_path / "alsfrs.csv", 2, "alsfrs_r")


def test_unparseable_csf_value(tmp_path):
    csf = CSF.replace("1200", "12OO")
    with pytest.raises(CohortError, match="expected a concentration") as info:
        check(tmp_path, csf=csf)
    assert_points_at(info.value, tmp_path / "csf.csv", 2, "value")


def test_unconvertible_unit(tmp_path):
    csf = CSF.replace("P01,baseline,MCP-1,<15.6,pg/mL", "P01,baseline,MCP-1,<15.6,IU/mL")
    with pytest.raises(CohortError, match="'IU/mL' cannot be converted to pg/mL") as info:
        check(tmp_path, csf=csf)
    assert_points_at(info.value, tmp_path / "csf.csv", 3, "unit")


def test_censored_value_without_a_limit(tmp_path):
    csf = "subject_id,timepoint,analyte,value,unit\n" \
          "P01,baseline,MCP-1,20,pg/mL\nP01,week4,MCP-1,< LLOQ,pg/mL\n"
    with pytest.raises(CohortError, match="censored value without a limit") as info:
        check(tmp_path, csf=csf)
    assert_points_at(info.value, tmp_path / "csf.csv", 3, "value")
