"""A non-ALS indication is a config file: multiple system atrophy followed with UMSARS.

The cohort below is written in the input contract with the MSA indication's visits file
(``umsars.csv``), score (rising with progression) and covariates (``subtype``), and goes
through the same ingest, labels and model Pipeline as ALS, with no code of its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from csf_responder.config import TrainConfig, load_config
from csf_responder.ingest import ingest_cohort
from csf_responder.models import make_pipeline
from csf_responder.training import training_data
from tests.conftest import CONFIGS

MSA = ["indication=indications/msa.yaml",
       "features.clinical=[score_baseline, leadin_slope, delta_fs, age, sex, subtype]",
       "ingest.min_labelled=8"]
LEAD_DAYS = [-84, -56, -28, 0]
FOLLOW_DAYS = [30, 61, 91, 122, 152, 183]


def msa_cohort(directory, *, n: int = 16, label_column: bool = False):
    """``n`` MSC patients whose UMSARS rises 1 point/month; odd ones slow to 0.2 after
    baseline (responders), even ones go on (non-responders)."""
    rng = np.random.default_rng(0)
    ids = [f"M{i:02d}" for i in range(n)]
    patients = pd.DataFrame({
        "subject_id": ids, "arm": "MSC", "age": rng.integers(45, 75, n),
        "sex": ["M", "f"] * (n // 2), "subtype": ["msa-p", "C"] * (n // 2),
        "onset_months": rng.integers(12, 48, n),
    })
    if label_column:
        patients["responded"] = [i % 2 for i in range(n)]
        patients.loc[0, "responded"] = None  # unknown: excluded with a reason
    visits = []
    for i, subject in enumerate(ids):
        start = 30 + i
        for day in LEAD_DAYS:
            visits.append((subject, day, round(start + day / 30.4375)))
        rate = 0.2 if i % 2 else 1.0
        for day in FOLLOW_DAYS:
            visits.append((subject, day, round(start + rate * day / 30.4375)))
    csf = [(s, tp, a, f"{v:.1f}", "pg/mL")
           for k, s in enumerate(ids) for tp in ("baseline", "week4")
           for a, v in (("TGF-beta1", 900 + 50 * k), ("MCP-1", 400 + 10 * k),
                        ("VEGF", 60 + k), ("Angiogenin", 5000 + 100 * k))]
    directory.mkdir()
    patients.to_csv(directory / "patients.csv", index=False)
    pd.DataFrame(visits, columns=["subject_id", "day", "umsars"]).to_csv(
        directory / "umsars.csv", index=False)
    pd.DataFrame(csf, columns=["subject_id", "timepoint", "analyte", "value", "unit"]).to_csv(
        directory / "csf.csv", index=False)
    return directory


def ingest(directory, overrides):
    config = load_config(CONFIGS / "train.yaml", TrainConfig, overrides=overrides)[0]
    return config, ingest_cohort(directory, panel=config.panel, indication=config.indication,
                                 labels=config.labels, drop_columns=())


def test_msa_cohort_is_labelled_from_a_rising_score(tmp_path):
    config, cohort = ingest(msa_cohort(tmp_path / "msa"), MSA)
    assert cohort.rejects.empty
    table = cohort.table.set_index("subject_id")
    assert {"subtype", "score_baseline", "leadin_slope"} <= set(table.columns)
    assert "onset_site" not in table.columns
    assert set(table["subtype"]) == {"MSA-P", "MSA-C"}          # aliases, any case
    assert set(table["sex"]) == {"male", "female"}
    assert (table["leadin_slope"] > 0).all()                    # UMSARS rises
    assert table["responder"].tolist() == [i % 2 for i in range(16)]
    accounting = cohort.checked.accounting.set_index("file")
    assert accounting.index[1].endswith("umsars.csv")
    assert (accounting["rows_read"] == accounting["rows_used"]).all()


def test_msa_pipeline_builds_features_from_the_indication(tmp_path):
    config, cohort = ingest(msa_cohort(tmp_path / "msa"), MSA)
    data = training_data(cohort.table, arm="MSC", minimum=config.ingest.min_labelled)
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0).fit(data.X, data.y)
    names = list(pipeline[:-1].get_feature_names_out())
    assert {"subtype_MSA-C", "sex_male", "delta_fs", "score_baseline"} <= set(names)
    engineered = pipeline[:2].transform(data.X)
    # UMSARS is best at 0: delta_fs = baseline score / months since onset
    expected = data.X["score_baseline"] / data.X["onset_months"]
    assert engineered["delta_fs"].to_numpy() == pytest.approx(expected.to_numpy())


def test_out_of_range_score_is_rejected_against_the_indication_range(tmp_path):
    directory = msa_cohort(tmp_path / "msa")
    visits = pd.read_csv(directory / "umsars.csv")
    visits.loc[3, "umsars"] = 105                       # UMSARS I+II tops out at 104
    visits.to_csv(directory / "umsars.csv", index=False)
    _, cohort = ingest(directory, MSA)
    reject = cohort.rejects.iloc[0]
    assert reject["file"].endswith("umsars.csv")
    assert (reject["line"], reject["column"], reject["rule"]) == (5, "umsars", "score_invalid")


def test_missing_visits_file_of_the_indication_is_named(tmp_path):
    from csf_responder.errors import CohortError

    directory = msa_cohort(tmp_path / "msa")
    (directory / "umsars.csv").rename(directory / "alsfrs.csv")
    with pytest.raises(CohortError, match=r"umsars\.csv.*file not found"):
        ingest(directory, MSA)


def test_ready_made_label_column(tmp_path):
    directory = msa_cohort(tmp_path / "msa", label_column=True)
    _, cohort = ingest(directory, [*MSA, "labels.source=column", "labels.column=responded"])
    table = cohort.table.set_index("subject_id")
    assert pd.isna(table.loc["M00", "responder"])
    assert table["responder"].iloc[1:].tolist() == [i % 2 for i in range(1, 16)]
    assert "responded" not in table.columns             # the label is no model input
    reject = cohort.rejects.set_index("subject_id").loc["M00"]
    assert (reject["rule"], reject["column"]) == ("label_missing", "responded")
    assert reject["file"].endswith("patients.csv")
