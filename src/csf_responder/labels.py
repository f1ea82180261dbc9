"""Responder labels from visit-level functional scores (ALSFRS-R by default).

Definitions (Oh et al. 2018, Ann Neurol 84:361-373)
---------------------------------------------------
- Visits carry ``subject_id``, ``day`` and ``score`` (the indication's functional score,
  e.g. the ALSFRS-R total; see ``configs/indications/``).
- Days count from baseline, the visit just before the first injection (day 0);
  lead-in visits have negative days. A month is 365.25 / 12 = 30.4375 days.
- The **lead-in slope** is the least-squares slope of the score on time, in
  points per month, over the visits from ``-lead_in_days`` to baseline.
- The **follow-up slope** is the same over the visits from baseline to the horizon
  (``horizon_months``; a visit counts up to ``horizon_tolerance_days`` past it).
- **Slope improvement** = 1 - follow-up slope / lead-in slope: 0 when progression goes on
  unchanged, 1 when it stops, above 1 when the patient improves. The formula holds for
  scores that fall (ALSFRS-R) and rise (UMSARS) with progression alike; the lead-in
  slope must show progression (negative when higher is better, positive otherwise).
- A **good responder** has slope improvement >= ``cutoff`` (0.5 in the trial: the
  decline slowed by at least half).

A patient whose label cannot be computed gets ``responder`` missing and one of the
exclusion reasons in :data:`EXCLUSIONS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "EXCLUSIONS", "MONTH_DAYS", "change_at_horizon", "column_labels", "derive_labels",
    "exclusion_rejects",
    "lead_in_summary", "window_slopes",
]

MONTH_DAYS = 365.25 / 12

#: Slack when comparing the slope improvement with the cut-off (floating-point rounding).
CUTOFF_TOLERANCE = 1e-9

#: Why a patient has no label, in the order the checks run.
EXCLUSIONS = {
    "no_visits": "no visit with a functional score at all",
    "no_baseline_visit": "no visit at baseline (day 0, within the tolerance)",
    "too_few_lead_in_visits": "too few lead-in visits to fit a slope",
    "no_lead_in_decline": "lead-in slope shows no progression: improvement is undefined",
    "no_visit_at_horizon": "no follow-up visit at the horizon (dropped out or missing)",
    "too_few_follow_up_visits": "too few follow-up visits to fit a slope",
    "label_missing": "the label column is blank",
}


def window_slopes(visits: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope per subject, in points per month.

    Parameters
    ----------
    visits : DataFrame
        Columns ``subject_id``, ``day`` and ``score``; one window's visits.

    Returns
    -------
    DataFrame
        Indexed by ``subject_id`` with ``n_visits`` and ``slope`` (NaN with fewer than two
        visits or a single distinct day).
    """
    # grouped by integer codes (ids hashed once, by Arrow for text ids): grouping by the
    # ids themselves made a Python string of each, a third of the time on large cohorts
    groups, ids = pd.factorize(visits["subject_id"])
    n, slope = _slopes(groups, visits["day"].to_numpy(dtype="float64"),
                       visits["score"].to_numpy(dtype="float64"))
    return pd.DataFrame({"n_visits": n, "slope": slope},
                        index=pd.Index(ids, name="subject_id"))


def _slopes(groups: np.ndarray, day: np.ndarray, score: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Visits and least-squares slope (points per month) of each group, by code: groups
    ``0..k-1`` of :func:`pandas.factorize` (codes in order of first appearance; rows
    coded -1, without an id, count for none)."""
    named = groups >= 0
    if not named.all():
        groups, day, score = groups[named], day[named], score[named]
    frame = pd.DataFrame({"t": day / MONTH_DAYS, "y": score})
    grouped = frame.groupby(groups, sort=False)
    # centred sums: the one-pass form (sum t^2 - (sum t)^2 / n) loses precision
    tc = frame["t"] - grouped["t"].transform("mean")
    yc = frame["y"] - grouped["y"].transform("mean")
    sums = pd.DataFrame({"n": 1.0, "sxx": tc * tc, "sxy": tc * yc}).groupby(
        groups, sort=False).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (sums["sxy"] / sums["sxx"]).where(sums["sxx"] > 1e-12)
    return sums["n"].astype("int64").to_numpy(), slope.to_numpy()


def _by_group_and_day(groups: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Row order by group code, then day, ties in row order: ``np.lexsort((day,
    groups))``; the rows' own order, without a sort, when they are in it already (the
    checked visits are, by subject and day)."""
    if not len(groups) or ((groups[1:] > groups[:-1])
                           | ((groups[1:] == groups[:-1]) & (day[1:] >= day[:-1]))).all():
        return np.arange(len(groups))
    return np.lexsort((day, groups))


def lead_in_summary(
    visits: pd.DataFrame,
    *,
    subjects: pd.Series,
    lead_in_days: int,
    baseline_tolerance_days: int,
) -> pd.DataFrame:
    """Baseline score and lead-in slope of each subject: what is known at baseline.

    Parameters
    ----------
    visits : DataFrame
        Visits with ``subject_id``, ``day`` and ``score``.
    subjects : Series
        Subject identifiers, in the order of the returned rows.
    lead_in_days : int
        Length of the lead-in window before baseline, in days.
    baseline_tolerance_days : int
        How far before day 0 the latest lead-in visit may lie and still count as baseline.

    Returns
    -------
    DataFrame
        One row per subject: ``subject_id``, ``baseline_day``, ``score_baseline``,
        ``n_lead_in``, ``leadin_slope`` (points/month; NaN when it cannot be fitted).
    """
    pre = visits[(visits["day"] <= 0) & (visits["day"] >= -lead_in_days)]
    groups, ids = pd.factorize(pre["subject_id"])  # each id hashed once (see window_slopes)
    day = pre["day"].to_numpy(dtype="float64")
    score = pre["score"].to_numpy(dtype="float64")
    by_day = _by_group_and_day(groups, day)
    by_day = by_day[groups[by_day] >= 0]
    coded = groups[by_day]
    last = by_day[np.flatnonzero(np.r_[coded[1:] != coded[:-1], True])] if len(coded) \
        else np.array([], dtype=np.int64)  # each subject's latest lead-in visit, by code
    n_visits, slope = _slopes(groups, day, score)
    at = pd.Index(ids).get_indexer(pd.Index(subjects))  # -1: no lead-in visit
    found = at >= 0

    def of_subjects(values: np.ndarray, missing: float) -> np.ndarray:
        out = np.full(len(at), missing, dtype="float64")
        out[found] = values[at[found]]
        return out

    baseline_day = np.where(day[last] >= -baseline_tolerance_days, day[last], np.nan)
    return pd.DataFrame({
        "subject_id": pd.Index(subjects, name="subject_id"),
        "baseline_day": of_subjects(baseline_day, np.nan),
        "score_baseline": of_subjects(np.where(np.isnan(baseline_day), np.nan, score[last]),
                                      np.nan),
        "n_lead_in": of_subjects(n_visits.astype("float64"), 0).astype("int64"),
        "leadin_slope": of_subjects(slope, np.nan),
    })


def derive_labels(
    visits: pd.DataFrame,
    *,
    subjects: pd.Series,
    higher_is_better: bool,
    cutoff: float,
    horizon_months: float,
    lead_in_days: int,
    min_visits_lead_in: int,
    min_visits_follow_up: int,
    horizon_tolerance_days: int,
) -> pd.DataFrame:
    """Derive good/poor responder labels from visit-level functional scores.

    Parameters
    ----------
    visits : DataFrame
        Visits with ``subject_id``, ``day`` (days from baseline) and ``score``.
    subjects : Series
        Every subject to label (a subject with no visit is excluded with a reason).
    higher_is_better : bool
        Direction of the score: true for ALSFRS-R (progression lowers it), false for
        scores that rise with progression (UMSARS).
    cutoff : float
        Minimum slope improvement of a good responder (0.5 = decline halved).
    horizon_months : float
        End of the follow-up window, in months after baseline.
    lead_in_days : int
        Length of the lead-in window, in days before baseline.
    min_visits_lead_in, min_visits_follow_up : int
        Fewest visits (baseline included) to fit each window's slope.
    horizon_tolerance_days : int
        Slack around baseline and the horizon for visit scheduling.

    Returns
    -------
    DataFrame
        One row per subject, in the order of ``subjects``: ``subject_id``,
        ``score_baseline``, ``leadin_slope``, ``followup_slope``, ``slope_improvement``,
        ``responder`` (nullable Int64: 1 good, 0 poor, missing when excluded) and
        ``exclusion`` (a key of :data:`EXCLUSIONS`, or missing).
    """
    summary = lead_in_summary(visits, subjects=subjects, lead_in_days=lead_in_days,
                              baseline_tolerance_days=horizon_tolerance_days)
    horizon_days = horizon_months * MONTH_DAYS
    baseline_day = visits["subject_id"].map(
        summary.set_index("subject_id")["baseline_day"]).astype("float64")
    follow = visits[(visits["day"] >= baseline_day)
                    & (visits["day"] <= horizon_days + horizon_tolerance_days)]
    fu = window_slopes(follow).reindex(summary["subject_id"])
    last_day = follow.groupby("subject_id")["day"].max().reindex(summary["subject_id"])
    n_visits = visits.groupby("subject_id").size().reindex(summary["subject_id"]).fillna(0)

    lead = summary["leadin_slope"].to_numpy()
    checks = [
        ("no_visits", n_visits.to_numpy() == 0),
        ("no_baseline_visit", summary["baseline_day"].isna().to_numpy()),
        ("too_few_lead_in_visits",
         (summary["n_lead_in"].to_numpy() < min_visits_lead_in) | np.isnan(lead)),
        ("no_lead_in_decline", ~((lead if higher_is_better else -lead) < 0)),
        ("no_visit_at_horizon",
         ~(last_day.to_numpy(dtype="float64") >= horizon_days - horizon_tolerance_days)),
        ("too_few_follow_up_visits",
         (fu["n_visits"].fillna(0).to_numpy() < min_visits_follow_up)
         | fu["slope"].isna().to_numpy()),
    ]
    exclusion = pd.Series(pd.NA, index=summary.index, dtype="string")
    for reason, failed in checks:
        exclusion = exclusion.mask(exclusion.isna() & failed, reason)

    followup = fu["slope"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        improvement = 1.0 - followup / lead
    labelled = exclusion.isna().to_numpy()
    # a decline exactly halved is a good responder, whatever the floating-point rounding
    responder = pd.array(np.where(improvement >= cutoff - CUTOFF_TOLERANCE, 1, 0), dtype="Int64")
    responder[~labelled] = pd.NA
    return pd.DataFrame({
        "subject_id": summary["subject_id"],
        "score_baseline": summary["score_baseline"],
        "leadin_slope": lead,
        "followup_slope": np.where(labelled, followup, np.nan),
        "slope_improvement": np.where(labelled, improvement, np.nan),
        "responder": responder,
        "exclusion": exclusion,
    })


def change_at_horizon(visits: pd.DataFrame, labels: pd.DataFrame, *, horizon_months: float,
                      horizon_tolerance_days: int) -> pd.Series:
    """Change of the score from baseline to the horizon visit, per subject.

    The horizon visit is the one closest to ``horizon_months`` within the tolerance;
    the baseline score is the labels' ``score_baseline``. The sign is the score's own
    (ALSFRS-R: negative when the patient declines).

    Returns
    -------
    Series
        Indexed like ``labels`` (its ``subject_id`` order), NaN without a horizon visit
        or a baseline score.
    """
    target = horizon_months * MONTH_DAYS
    gap = (visits["day"] - target).abs()
    near = visits.assign(gap=gap)[gap <= horizon_tolerance_days]
    closest = near.sort_values(["gap", "day"], kind="stable").drop_duplicates("subject_id")
    at = closest.set_index("subject_id")["score"].astype("float64")
    subjects = labels["subject_id"]
    change = at.reindex(subjects).to_numpy() - labels["score_baseline"].to_numpy(dtype="float64")
    return pd.Series(change, index=labels.index, name="change")


def column_labels(
    visits: pd.DataFrame,
    *,
    subjects: pd.Series,
    label: pd.Series,
    lead_in_days: int,
    horizon_tolerance_days: int,
) -> pd.DataFrame:
    """Responder labels given in a column (response defined outside this pipeline).

    Parameters
    ----------
    visits : DataFrame
        Visits with ``subject_id``, ``day`` and ``score``, for the baseline score and
        lead-in slope (model inputs, not the label).
    subjects : Series
        Every subject to label.
    label : Series
        Aligned with ``subjects``: 1 good responder, 0 poor, missing when unknown.
    lead_in_days, horizon_tolerance_days : int
        Lead-in window and baseline slack, as in :func:`derive_labels`.

    Returns
    -------
    DataFrame
        The columns of :func:`derive_labels`; slopes after baseline are not computed, and
        a missing label is the exclusion ``label_missing``.
    """
    summary = lead_in_summary(visits, subjects=subjects, lead_in_days=lead_in_days,
                              baseline_tolerance_days=horizon_tolerance_days)
    responder = pd.array(label.to_numpy(), dtype="Int64")
    exclusion = pd.Series(pd.NA, index=summary.index, dtype="string")
    exclusion = exclusion.mask(pd.Series(responder.isna(), index=summary.index),
                               "label_missing")
    return pd.DataFrame({
        "subject_id": summary["subject_id"],
        "score_baseline": summary["score_baseline"],
        "leadin_slope": summary["leadin_slope"],
        "followup_slope": np.nan,
        "slope_improvement": np.nan,
        "responder": responder,
        "exclusion": exclusion,
    })


def exclusion_rejects(labels: pd.DataFrame, *, file: str, column: str) -> pd.DataFrame:
    """Patients without a label as rejects rows (the columns of every rejects table).

    ``line`` is missing: an exclusion concerns a patient's visits as a whole; ``rule`` is
    the exclusion key and ``value`` says why, in words.
    """
    excluded = labels[labels["exclusion"].notna()]
    return pd.DataFrame({
        "file": file,
        "line": pd.array([pd.NA] * len(excluded), dtype="Int64"),
        "subject_id": excluded["subject_id"].to_numpy(),
        "column": column,
        "value": [EXCLUSIONS[key] for key in excluded["exclusion"]],
        "rule": excluded["exclusion"].to_numpy(dtype=object),
        "action": "patient not labelled (kept for scoring)",
    })
