"""Tests of responder labels in :mod:`csf_responder.labels`.

Slopes are hand-computed. With visits on days -84, -56, -28 and 0 and a score falling
one point per 28 days, the lead-in slope is -1/28 points per day, i.e.
-30.4375/28 points per month (a month is 365.25/12 = 30.4375 days).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from csf_responder.contracts import REJECT_COLUMNS
from csf_responder.labels import (
    EXCLUSIONS,
    MONTH_DAYS,
    column_labels,
    derive_labels,
    exclusion_rejects,
    lead_in_summary,
    window_slopes,
)

LEAD_DAYS = [-84, -56, -28, 0]
LEAD_SCORES = [40, 39, 38, 37]           # -1 point / 28 days
LEAD_SLOPE = -MONTH_DAYS / 28            # points per month
FOLLOW_DAYS = [56, 112, 168]             # 168 >= 6 months - 21 days = 161.625

SETTINGS = dict(
    higher_is_better=True, cutoff=0.5, horizon_months=6, lead_in_days=98, min_visits_lead_in=3,
    min_visits_follow_up=3, horizon_tolerance_days=21,
)


def visits(*subjects: tuple[str, list[int], list[int]]) -> pd.DataFrame:
    rows = [(s, d, y) for s, days, scores in subjects for d, y in zip(days, scores, strict=True)]
    return pd.DataFrame(rows, columns=["subject_id", "day", "score"])


def patient(subject, follow_scores, *, lead_days=LEAD_DAYS, lead_scores=LEAD_SCORES,
            follow_days=FOLLOW_DAYS):
    return subject, [*lead_days, *follow_days], [*lead_scores, *follow_scores]


def labels_of(table: pd.DataFrame, subjects, **overrides) -> pd.DataFrame:
    return derive_labels(table, subjects=pd.Series(subjects), **{**SETTINGS, **overrides})


# --------------------------------------------------------------------- window_slopes
def test_window_slopes_linear_decline():
    table = visits(("A", LEAD_DAYS, LEAD_SCORES), ("B", [0, 30.4375 * 2], [40, 38]))
    slopes = window_slopes(table)
    assert slopes.index.name == "subject_id"
    assert slopes.loc["A", "slope"] == pytest.approx(LEAD_SLOPE)
    assert slopes.loc["A", "n_visits"] == 4
    assert slopes.loc["B", "slope"] == pytest.approx(-1.0)   # 2 points over 2 months


def test_window_slopes_least_squares_of_non_linear_scores():
    # days 0, 28, 56 (mean 28), scores 40, 40, 37 (mean 39):
    # Sxy = (-28)(1) + 0 + (28)(-2) = -84, Sxx = 2 * 28**2 = 1568
    table = visits(("A", [0, 28, 56], [40, 40, 37]))
    expected = -84 / 1568 * MONTH_DAYS
    assert window_slopes(table).loc["A", "slope"] == pytest.approx(expected)


def test_window_slopes_undefined_with_one_visit_or_one_day():
    table = visits(("one", [0], [40]), ("same_day", [0, 0], [40, 38]))
    slopes = window_slopes(table)
    assert slopes.loc["one", "n_visits"] == 1
    assert np.isnan(slopes.loc["one", "slope"])
    assert slopes.loc["same_day", "n_visits"] == 2
    assert np.isnan(slopes.loc["same_day", "slope"])


def test_window_slopes_does_not_depend_on_row_order():
    table = visits(("A", [0, 28, 56], [40, 40, 37]), ("B", [-28, 0], [30, 29]))
    shuffled = table.iloc[[4, 1, 3, 0, 2]]
    pd.testing.assert_series_equal(
        window_slopes(shuffled)["slope"].sort_index(), window_slopes(table)["slope"].sort_index()
    )


def test_window_slopes_ignore_visits_without_a_subject():
    table = visits(("A", [0, 28, 56], [40, 40, 37]))
    with_blank = pd.concat([table, pd.DataFrame({"subject_id": [None], "day": [14],
                                                 "score": [10]})], ignore_index=True)
    pd.testing.assert_frame_equal(window_slopes(with_blank), window_slopes(table),
                                  check_index_type=False)


# -------------------------------------------------------------------- lead_in_summary
def test_lead_in_summary_takes_the_latest_lead_in_visit_in_the_subjects_order():
    # B's two visits on day -7: the later row (score 29 after the shuffle) is its
    # baseline, as a stable sort by day keeps them; C's latest lead-in visit is outside
    # the baseline tolerance; D has none
    table = visits(("B", [-60, -7, -7, 30], [30, 29, 28, 10]), ("A", [-28, 0], [40, 39]),
                   ("C", [-90, -60], [20, 19]))
    table = table.iloc[[3, 6, 0, 2, 4, 1, 5, 7]]
    out = lead_in_summary(table, subjects=pd.Series(["A", "B", "C", "D"]), lead_in_days=98,
                          baseline_tolerance_days=14)
    assert out["subject_id"].tolist() == ["A", "B", "C", "D"]
    assert out["baseline_day"].tolist()[:2] == [0.0, -7.0]
    assert out["score_baseline"].tolist()[:2] == [39.0, 29.0]
    assert out[["baseline_day", "score_baseline"]].iloc[2:].isna().all().all()
    assert out["n_lead_in"].tolist() == [2, 3, 2, 0]
    assert out["leadin_slope"].iloc[0] == pytest.approx(-MONTH_DAYS / 28)
    assert out["leadin_slope"].iloc[2] == pytest.approx(-MONTH_DAYS / 30)
    assert np.isnan(out["leadin_slope"].iloc[3])


# ---------------------------------------------------------------------- derive_labels
def test_decline_halved_is_good_responder_at_the_cutoff():
    # follow-up falls 1 point per 56 days: half the lead-in rate, improvement = 0.5
    table = visits(patient("A", [36, 35, 34]))
    row = labels_of(table, ["A"]).iloc[0]
    assert row["leadin_slope"] == pytest.approx(LEAD_SLOPE)
    assert row["followup_slope"] == pytest.approx(-MONTH_DAYS / 56)
    assert row["slope_improvement"] == pytest.approx(0.5)
    assert row["score_baseline"] == 37
    assert row["responder"] == 1
    assert pd.isna(row["exclusion"])


def test_exactly_halved_steep_decline_is_good_responder():
    # lead-in -4 points / 28 days, follow-up -2 points / 28 days: improvement exactly 0.5
    table = visits(patient("A", [36, 32, 28], lead_scores=[52, 48, 44, 40]))
    row = labels_of(table, ["A"]).iloc[0]
    assert row["responder"] == 1


def test_unchanged_progression_is_poor_responder():
    # follow-up falls 2 points per 56 days = lead-in rate: improvement 0
    table = visits(patient("A", [35, 33, 31]))
    row = labels_of(table, ["A"]).iloc[0]
    assert row["slope_improvement"] == pytest.approx(0.0, abs=1e-12)
    assert row["responder"] == 0


def test_cutoff_just_above_improvement_makes_poor_responder():
    table = visits(patient("A", [36, 35, 34]))
    assert labels_of(table, ["A"], cutoff=0.51)["responder"].iloc[0] == 0


def test_rising_follow_up_gives_improvement_above_one():
    # follow-up rises 1 point per 56 days: 1 - (+1/56) / (-1/28) = 1.5
    table = visits(patient("A", [38, 39, 40]))
    row = labels_of(table, ["A"]).iloc[0]
    assert row["followup_slope"] > 0
    assert row["slope_improvement"] == pytest.approx(1.5)
    assert row["responder"] == 1


def test_output_columns_and_dtypes():
    out = labels_of(visits(patient("A", [36, 35, 34])), ["A"])
    assert list(out.columns) == ["subject_id", "score_baseline", "leadin_slope",
                                 "followup_slope", "slope_improvement", "responder", "exclusion"]
    assert str(out["responder"].dtype) == "Int64"


def test_baseline_within_tolerance_before_day_zero():
    # last lead-in visit on day -14 counts as baseline (tolerance 21 days)
    table = visits(("A", [-84, -56, -28, -14, 56, 112, 168], [40, 39, 38, 37, 36, 35, 34]))
    row = labels_of(table, ["A"]).iloc[0]
    assert row["score_baseline"] == 37
    assert pd.isna(row["exclusion"])


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        # latest visit before baseline is day -28, beyond the 21-day tolerance
        (("A", [-84, -56, -28, 56, 112, 168], [40, 39, 38, 36, 35, 34]), "no_baseline_visit"),
        # only two lead-in visits (min 3)
        (("A", [-28, 0, 56, 112, 168], [38, 37, 36, 35, 34]), "too_few_lead_in_visits"),
        # visits before the 98-day lead-in window do not count
        (("A", [-150, -120, 0, 56, 112, 168], [42, 41, 37, 36, 35, 34]),
         "too_few_lead_in_visits"),
        # flat lead-in
        (patient("A", [40, 39, 38], lead_scores=[40, 40, 40, 40]), "no_lead_in_decline"),
        # rising lead-in
        (patient("A", [40, 39, 38], lead_scores=[37, 38, 39, 40]), "no_lead_in_decline"),
        # follow-up stops at day 112 < 161.625: dropout
        (patient("A", [36, 35], follow_days=[56, 112]), "no_visit_at_horizon"),
        # baseline plus one follow-up visit at the horizon (min 3)
        (patient("A", [34], follow_days=[182]), "too_few_follow_up_visits"),
    ],
)
def test_each_exclusion_reason(case, reason):
    out = labels_of(visits(case), ["A"])
    row = out.iloc[0]
    assert row["exclusion"] == reason
    assert pd.isna(row["responder"])
    assert np.isnan(row["slope_improvement"])
    assert np.isnan(row["followup_slope"])


def test_subject_without_visits_is_excluded():
    out = labels_of(visits(patient("A", [36, 35, 34])), ["A", "Z"])
    assert out["exclusion"].iloc[1] == "no_visits"
    assert pd.isna(out["responder"].iloc[1])
    assert np.isnan(out["score_baseline"].iloc[1])
    assert out["responder"].iloc[0] == 1


def test_every_exclusion_reason_is_tested():
    reasons = {"no_visits", "no_baseline_visit", "too_few_lead_in_visits",
               "no_lead_in_decline", "no_visit_at_horizon", "too_few_follow_up_visits",
               "label_missing"}  # label_missing: see test_column_labels_*
    assert set(EXCLUSIONS) == reasons


def test_horizon_decides_which_visits_count():
    # follow-up days 0, 61, 122, 183 with scores 37, 36, 35, 30
    table = visits(("A", [*LEAD_DAYS, 61, 122, 183], [*LEAD_SCORES, 36, 35, 30]))

    # 4 months = 121.75 days; window ends at 142.75: visits 0, 61, 122 -> -1/61 per day
    four = labels_of(table, ["A"], horizon_months=4).iloc[0]
    assert four["followup_slope"] == pytest.approx(-MONTH_DAYS / 61)
    assert four["slope_improvement"] == pytest.approx(1 - 28 / 61)     # 0.54: good
    assert four["responder"] == 1

    # 6 months: all four visits; days mean 91.5, scores mean 34.5
    # Sxy = -91.5*2.5 - 30.5*1.5 + 30.5*0.5 - 91.5*4.5 = -671, Sxx = 2*(91.5**2 + 30.5**2)
    six = labels_of(table, ["A"], horizon_months=6).iloc[0]
    per_day = -671 / 18605
    assert six["followup_slope"] == pytest.approx(per_day * MONTH_DAYS)
    assert six["slope_improvement"] == pytest.approx(1 - per_day * -28)  # < 0: poor
    assert six["responder"] == 0


def test_horizon_tolerance_boundary():
    # 6 months - 21 days = 161.625: a last visit on day 162 reaches the horizon, 161 does not
    reached = labels_of(visits(patient("A", [36, 35, 34], follow_days=[56, 112, 162])), ["A"])
    missed = labels_of(visits(patient("A", [36, 35, 34], follow_days=[56, 112, 161])), ["A"])
    assert pd.isna(reached["exclusion"].iloc[0])
    assert missed["exclusion"].iloc[0] == "no_visit_at_horizon"


def test_visits_after_the_horizon_window_are_ignored():
    # day 300 is past 6 months + 21 days; a crash there must not change the slope
    base = labels_of(visits(patient("A", [36, 35, 34])), ["A"])
    late = labels_of(visits(patient("A", [36, 35, 34, 0], follow_days=[56, 112, 168, 300])),
                     ["A"])
    assert late["followup_slope"].iloc[0] == pytest.approx(base["followup_slope"].iloc[0])


def test_rows_follow_the_order_of_subjects():
    table = visits(
        patient("A", [36, 35, 34]),        # improvement 0.5
        patient("B", [35, 33, 31]),        # improvement 0
        patient("C", [38, 39, 40]),        # improvement 1.5
    )
    out = labels_of(table, ["C", "Z", "A", "B"])
    assert out["subject_id"].tolist() == ["C", "Z", "A", "B"]
    assert out["slope_improvement"].iloc[0] == pytest.approx(1.5)
    assert out["exclusion"].iloc[1] == "no_visits"
    assert out["slope_improvement"].iloc[2] == pytest.approx(0.5)
    assert out["slope_improvement"].iloc[3] == pytest.approx(0.0, abs=1e-12)
    assert out["responder"].isna().tolist() == [False, True, False, False]
    assert out["responder"].dropna().tolist() == [1, 1, 0]


def test_input_is_not_mutated():
    table = visits(patient("B", [35, 33, 31]), patient("A", [36, 35, 34]))
    subjects = pd.Series(["A", "B"])
    before, before_subjects = table.copy(), subjects.copy()
    derive_labels(table, subjects=subjects, **SETTINGS)
    pd.testing.assert_frame_equal(table, before)
    pd.testing.assert_series_equal(subjects, before_subjects)


# ---------------------------------------------------- scores where higher is worse
def mirrored(table: pd.DataFrame, top: int = 104) -> pd.DataFrame:
    """The same course on a score that rises with progression (UMSARS-like)."""
    return table.assign(score=top - table["score"])


def test_rising_score_gives_the_same_labels_when_higher_is_worse():
    table = visits(patient("A", [36, 35, 34]), patient("B", [35, 33, 31]),
                   patient("C", [38, 39, 40]))
    falling = labels_of(table, ["A", "B", "C"])
    rising = labels_of(mirrored(table), ["A", "B", "C"], higher_is_better=False)
    assert rising["leadin_slope"].tolist() == pytest.approx(-falling["leadin_slope"])
    assert rising["slope_improvement"].tolist() == pytest.approx(
        falling["slope_improvement"].tolist())
    assert rising["responder"].tolist() == falling["responder"].tolist() == [1, 0, 1]


def test_rising_score_without_worsening_is_excluded_when_higher_is_worse():
    # a falling UMSARS is improvement during the lead-in: no progression to slow
    table = visits(patient("A", [36, 35, 34]))
    out = labels_of(table, ["A"], higher_is_better=False)
    assert out["exclusion"].iloc[0] == "no_lead_in_decline"


# ------------------------------------------------------------------ column_labels
def test_column_labels_take_the_label_and_keep_the_lead_in_summary():
    table = visits(patient("A", [36, 35, 34]), patient("B", [35, 33, 31]))
    out = column_labels(table, subjects=pd.Series(["A", "B", "C"]),
                        label=pd.Series([0, 1, None], dtype="Int64"),
                        lead_in_days=98, horizon_tolerance_days=21)
    assert out["responder"].tolist()[:2] == [0, 1]
    assert pd.isna(out["responder"].iloc[2])
    assert out["exclusion"].iloc[:2].isna().all()
    assert out["exclusion"].iloc[2] == "label_missing"
    assert out["leadin_slope"].iloc[0] == pytest.approx(LEAD_SLOPE)
    assert out["score_baseline"].iloc[1] == 37
    assert out["followup_slope"].isna().all()


# ------------------------------------------------------------------ exclusion_rejects
def test_exclusion_rejects_lists_excluded_patients_with_reasons():
    table = visits(
        patient("A", [36, 35, 34]),
        patient("B", [36, 35], follow_days=[56, 112]),
    )
    labels = labels_of(table, ["A", "B", "Z"])
    rejects = exclusion_rejects(labels, file="cohort/alsfrs.csv", column="alsfrs_r")
    assert list(rejects.columns) == list(REJECT_COLUMNS)
    assert rejects["subject_id"].tolist() == ["B", "Z"]
    assert rejects["file"].tolist() == ["cohort/alsfrs.csv"] * 2
    assert rejects["column"].tolist() == ["alsfrs_r"] * 2
    assert rejects["line"].isna().all()
    assert rejects["rule"].tolist() == ["no_visit_at_horizon", "no_visits"]
    assert rejects["value"].tolist() == [EXCLUSIONS["no_visit_at_horizon"],
                                         EXCLUSIONS["no_visits"]]
    assert set(rejects["action"]) == {"patient not labelled (kept for scoring)"}


def test_exclusion_rejects_empty_when_everyone_is_labelled():
    labels = labels_of(visits(patient("A", [36, 35, 34])), ["A"])
    rejects = exclusion_rejects(labels, file="alsfrs.csv", column="alsfrs_r")
    assert rejects.empty
    assert list(rejects.columns) == list(REJECT_COLUMNS)


def test_no_visit_at_all_excludes_everyone_without_error():
    empty = visits().astype({"subject_id": "str", "day": "int64", "score": "int64"})
    out = labels_of(empty, ["A", "B"])
    assert out["exclusion"].tolist() == ["no_visits", "no_visits"]
    assert out["responder"].isna().all()


def test_rows_in_subject_and_day_order_are_kept_and_others_sorted_as_lexsort_does():
    """The lead-in summary skips the sort of visits already in (subject, day) order:
    the order is lexsort's either way, ties and rows without an id (code -1) too."""
    from csf_responder.labels import _by_group_and_day

    rng = np.random.default_rng(2)
    groups = np.sort(rng.integers(-1, 40, 300))
    day = rng.integers(-90, 1, 300).astype(float)
    ordered = np.lexsort((day, groups))
    cases = {"ordered": (groups[ordered], day[ordered]), "shuffled": (groups, day),
             "one day out of order": (groups[ordered], day[ordered][::-1].copy()),
             "no id last": (np.r_[groups[ordered] + 1, -1], np.r_[day[ordered], 0.0]),
             "empty": (np.zeros(0, np.intp), np.zeros(0))}
    for name, (g, d) in cases.items():
        np.testing.assert_array_equal(_by_group_and_day(g, d), np.lexsort((d, g)), name)
