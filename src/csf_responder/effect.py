"""Who benefits: each patient's expected benefit of MSC from both trial arms, which
features are prognostic and which predictive, and how well a benefit ranking works.

Definitions
-----------
- An **outcome** is measured after baseline and oriented so that higher is better:
  ``slope`` (follow-up slope of the functional score, points/month), ``change``
  (change of the score from baseline to the horizon visit, points) or ``responder``
  (the 0/1 label). For ALSFRS-R the slope and change are as measured; for a score that
  rises with progression (UMSARS) their sign is flipped.
- A patient's **benefit** is the expected outcome under MSC minus under control, given
  their pre-treatment covariates (a conditional average treatment effect). Positive:
  MSC helps.
- A feature is **prognostic** when it is associated with the outcome without treatment
  (in controls), **predictive** when it modifies the treatment effect (a treatment x
  feature interaction). A feature can be both, or neither.

Every per-patient benefit here is **cross-fitted**: the patients are split into folds
(stratified by arm) and each fold's benefits come from models (feature steps included)
fitted on the other folds, so no patient's estimate uses their own outcome.

Two estimators:

- :func:`interaction_benefit`: least squares with treatment-by-covariate interactions,
  ``y = a + t b + Z c + t Z d``; benefit ``b + z d``, its interval from the fold's
  heteroskedasticity-robust (HC3) covariance. Continuous outcomes.
- :func:`t_learner_benefit`: a T-learner, one model per arm from any of the model
  families (:func:`csf_responder.models.make_regressor` or ``make_classifier``);
  benefit ``mu1(x) - mu0(x)``, its interval from bootstrap refits of the two models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from csf_responder.metrics import MetricCI

__all__ = [
    "OUTCOME_KINDS", "BenefitEstimate", "EffectAnalysis", "EffectData", "analyse",
    "csf_separability", "estimator_steps", "benefit_calibration",
    "csf_patients_per_arm", "effect_data", "interaction_benefit", "prognostic_predictive",
    "BenefitLoading", "arm_residual_sds", "benefit_loading", "learning_curve",
    "plan_enrichment", "qini", "qini_curve", "study_size", "summarise_roles",
    "t_learner_benefit", "treatment_effect",
]

#: Each outcome and its kind.
OUTCOME_KINDS = {"slope": "continuous", "change": "continuous", "responder": "binary"}

#: A factory of an unfitted outcome model and its search grid, for an outcome kind.
LearnerFactory = Callable[[str], tuple[object, dict]]


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class EffectData:
    """Patients of both arms with their pre-treatment inputs and outcomes.

    Attributes
    ----------
    X : DataFrame
        Raw wide cohort rows (the input of the feature steps), one per patient.
    treated : ndarray of bool
        True in the treated arm.
    outcomes : DataFrame
        ``slope``, ``change``, ``responder``, oriented so that higher is better (NaN
        where the patient has none), same rows as ``X``.
    subject_id : ndarray
    """

    X: pd.DataFrame
    treated: np.ndarray
    outcomes: pd.DataFrame
    subject_id: np.ndarray

    def outcome(self, name: str) -> np.ndarray:
        return self.outcomes[name].to_numpy(dtype="float64")


def effect_data(table: pd.DataFrame, labels: pd.DataFrame, change: pd.Series, *,
                treated_arm: str, control_arm: str, higher_is_better: bool) -> EffectData:
    """The patients of the two arms, in the cohort table's order.

    Parameters
    ----------
    table : DataFrame
        The wide cohort table (``subject_id``, ``arm``, ...).
    labels : DataFrame
        :func:`csf_responder.labels.derive_labels` output (``followup_slope``,
        ``responder``), same subjects.
    change : Series
        :func:`csf_responder.labels.change_at_horizon`, aligned with ``labels``.
    """
    keep = table["arm"].isin([treated_arm, control_arm]).to_numpy()
    rows = table.loc[keep].reset_index(drop=True)
    by_subject = labels.assign(change=change.to_numpy()).set_index("subject_id")
    found = by_subject.reindex(rows["subject_id"])
    sign = 1.0 if higher_is_better else -1.0
    outcomes = pd.DataFrame({
        "slope": sign * found["followup_slope"].to_numpy(dtype="float64"),
        "change": sign * found["change"].to_numpy(dtype="float64"),
        "responder": pd.to_numeric(found["responder"], errors="coerce").to_numpy(
            dtype="float64"),
    })
    return EffectData(rows, rows["arm"].eq(treated_arm).to_numpy(), outcomes,
                      rows["subject_id"].to_numpy())


def csf_patients_per_arm(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, int]:
    """Patients per arm with at least one of the CSF value ``columns`` measured."""
    has = table[list(columns)].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)
    return {str(arm): int(n) for arm, n in has.groupby(table["arm"]).sum().items()}


def csf_separability(table: pd.DataFrame, columns: Sequence[str], *, control_arm: str,
                     min_controls: int, min_fraction: float) -> tuple[bool, str | None]:
    """Whether CSF features can be called prognostic or predictive: enough controls
    (at least ``min_controls`` and ``min_fraction`` of them) have baseline CSF. Without
    it a CSF feature is imputed for the controls, constant or nearly so in that arm, and
    its interaction with treatment cannot be told apart from its main effect.

    Returns
    -------
    separable, limit
        ``limit`` says in words why not (None when separable).
    """
    per_arm = csf_patients_per_arm(table, columns)
    controls = int(table["arm"].eq(control_arm).sum())
    have = per_arm.get(control_arm, 0)
    if have >= min_controls and have >= min_fraction * controls:
        return True, None
    return False, (
        f"CSF was measured in {have} of {controls} {control_arm} patients (the analysis "
        f"needs at least {min_controls} and {min_fraction:.0%}): without CSF in controls "
        f"the CSF biomarkers cannot be separated into prognostic and predictive, so this "
        f"analysis uses the clinical covariates only. A trial with CSF in both arms (a "
        f"sham lumbar puncture in controls) is needed to tell whether CSF predicts who "
        f"benefits.")


# ------------------------------------------------------------------------ helpers
def _folds(treated: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each patient, stratified by arm."""
    n_folds = min(n_folds, int(min(treated.sum(), (~treated).sum())))
    if n_folds < 2:
        raise ValueError("cross-fitting needs at least 2 patients in each arm")
    fold = np.empty(len(treated), dtype=int)
    split = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(split.split(np.zeros(len(treated)), treated)):
        fold[test] = k
    return fold


def _matrix(steps: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    return steps.transform(X)


def _design(Z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Columns: intercept, treatment, features, treatment x features."""
    t = t.astype("float64")
    return np.column_stack([np.ones(len(t)), t, Z, t[:, None] * Z])


def _usable(Z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Feature columns that vary within each arm. One constant in an arm (a level no
    control has, CSF imputed for every control) makes its main effect and interaction
    collinear with the intercept and treatment: the design would be singular and its
    estimates arbitrary."""
    if not len(Z):
        return np.zeros(Z.shape[1], bool)
    return np.all([Z[t == arm].std(axis=0) > 1e-12 if (t == arm).sum() > 1
                   else np.zeros(Z.shape[1], bool) for arm in (False, True)], axis=0)


def _ols(Z: np.ndarray, t: np.ndarray, y: np.ndarray):
    import statsmodels.api as sm  # heavy: imported when an effect is estimated

    design = _design(Z, t)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("the interaction model's design is rank-deficient (features "
                         "collinear within an arm): its coefficients are not identified")
    return sm.OLS(y, design).fit(cov_type="HC3", use_t=True)


# ------------------------------------------------------------------ estimators
@dataclass(frozen=True)
class BenefitEstimate:
    """Cross-fitted per-patient benefit of one estimator on one outcome.

    Attributes
    ----------
    benefit, low, high : ndarray
        Estimated benefit and its interval (``level``), one per patient.
    mu0, mu1 : ndarray
        Predicted outcome under control and under MSC.
    fold : ndarray
        The cross-fitting fold of each patient.
    """

    estimator: str
    outcome: str
    level: float
    benefit: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mu0: np.ndarray
    mu1: np.ndarray
    fold: np.ndarray

    def frame(self, subject_id: np.ndarray) -> pd.DataFrame:
        """One row per patient: ``subject_id``, ``benefit``, ``benefit_low``,
        ``benefit_high``, ``mu_control``, ``mu_treated``, ``fold``."""
        return pd.DataFrame({"subject_id": subject_id, "benefit": self.benefit,
                             "benefit_low": self.low, "benefit_high": self.high,
                             "mu_control": self.mu0, "mu_treated": self.mu1,
                             "fold": self.fold})


def interaction_benefit(X: pd.DataFrame, treated: np.ndarray, y: np.ndarray, *,
                        features: Pipeline, outcome: str, n_folds: int, level: float,
                        seed: int) -> BenefitEstimate:
    """Cross-fitted benefit from least squares with treatment-by-feature interactions.

    In each fold the feature steps and the model are fitted on the other folds'
    patients with an outcome; the held-out patients (with or without an outcome) get
    ``b + z d`` and a ``level`` interval from the HC3 covariance (t quantiles).
    """
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    n = len(treated)
    fold = _folds(treated, n_folds, seed)
    benefit, se, mu0, mu1, dof = (np.full(n, np.nan) for _ in range(5))
    for k in np.unique(fold):
        train = (fold != k) & np.isfinite(y)
        test = fold == k
        steps = clone(features).fit(X.loc[train])
        Z = _matrix(steps, X.loc[train]).to_numpy(dtype="float64")
        use = _usable(Z, treated[train])
        fit = _ols(Z[:, use], treated[train], y[train])
        Zt = _matrix(steps, X.loc[test]).to_numpy(dtype="float64")[:, use]
        beta = np.asarray(fit.params)
        m = Zt.shape[0]
        D0 = _design(Zt, np.zeros(m))
        D1 = _design(Zt, np.ones(m))
        mu0[test], mu1[test] = D0 @ beta, D1 @ beta
        G = D1 - D0
        benefit[test] = G @ beta
        se[test] = np.sqrt(np.einsum("ij,jk,ik->i", G, np.asarray(fit.cov_params()), G))
        dof[test] = fit.df_resid
    q = stats.t.ppf(0.5 + level / 2, np.maximum(dof, 1))
    return BenefitEstimate("interaction", outcome, level, benefit, benefit - q * se,
                           benefit + q * se, mu0, mu1, fold)


def _fit_arm(model, search: dict, Z: np.ndarray, y: np.ndarray, kind: str, seed: int):
    """Fit one arm's model (tuning its search grid by 3-fold CV when the arm allows);
    return a predictor of the outcome (probability for a binary one) and the fitted
    model's parameters."""
    if len(y) < 2:
        raise ValueError(f"an arm has {len(y)} patient(s) with the outcome in a training "
                         "fold: too few to fit its model")
    counts = None
    if kind == "binary":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:  # one class only: its rate is all there is to predict
            rate = float(classes[0]) if len(classes) else np.nan
            return (lambda Zn: np.full(len(Zn), rate)), {}
    model = clone(model)
    if search and len(y) >= 9 and (counts is None or counts.min() >= 3):
        from sklearn.model_selection import GridSearchCV, KFold

        cv = (StratifiedKFold(3, shuffle=True, random_state=seed) if kind == "binary"
              else KFold(3, shuffle=True, random_state=seed))
        scoring = "neg_log_loss" if kind == "binary" else "neg_mean_squared_error"
        found = GridSearchCV(model, search, cv=cv, scoring=scoring).fit(Z, y)
        model = clone(model).set_params(**found.best_params_)
    model.fit(Z, y)
    if kind == "binary":
        return (lambda Zn: model.predict_proba(Zn)[:, 1]), model.get_params()
    return model.predict, model.get_params()


def _t_fold(X, treated, y, fold, k, *, features, learner, kind, n_bootstrap, seed):
    train = (fold != k) & np.isfinite(y)
    test = fold == k
    steps = clone(features).fit(X.loc[train])
    Z = _matrix(steps, X.loc[train]).to_numpy(dtype="float64")
    Zt = _matrix(steps, X.loc[test]).to_numpy(dtype="float64")
    t, yt = treated[train], y[train]
    model, search = learner(kind)
    predict, tuned = {}, {}
    for arm in (False, True):
        rows = t == arm
        predict[arm], tuned[arm] = _fit_arm(model, search, Z[rows], yt[rows], kind,
                                            seed + k)
    mu0, mu1 = predict[False](Zt), predict[True](Zt)
    boot = np.full((n_bootstrap, len(Zt)), np.nan)
    rng = np.random.default_rng([seed, k])
    for b in range(n_bootstrap):
        arms = {}
        for arm in (False, True):
            rows = np.flatnonzero(t == arm)
            pick = rows[rng.integers(0, len(rows), len(rows))]
            fixed = clone(model).set_params(**tuned[arm]) if tuned[arm] else model
            arms[arm], _ = _fit_arm(fixed, {}, Z[pick], yt[pick], kind, seed)
        boot[b] = arms[True](Zt) - arms[False](Zt)
    return test, mu0, mu1, boot


def t_learner_benefit(X: pd.DataFrame, treated: np.ndarray, y: np.ndarray, *,
                      features: Pipeline, learner: LearnerFactory, name: str, kind: str,
                      outcome: str, n_folds: int, n_bootstrap: int, level: float, seed: int,
                      n_jobs: int = 1) -> BenefitEstimate:
    """Cross-fitted T-learner benefit: ``mu1(x) - mu0(x)``, each arm's model fitted on
    the other folds' patients of that arm.

    Parameters
    ----------
    learner : callable
        ``learner(kind)`` -> (unfitted model, search grid) for ``kind`` ``continuous``
        or ``binary``; the grid is tuned by 3-fold CV within each arm's training rows.
    n_bootstrap : int
        Refits of both arms' models on bootstrap resamples (within arm) of the training
        folds, with the tuned parameters; the ``level`` interval is the estimate plus or
        minus the normal quantile times their SD (a percentile interval needs hundreds of
        refits; NaN with fewer than 2). It is an interval of the expected benefit of
        patients with these covariates, not of one patient's own benefit.
    """
    from joblib import Parallel, delayed

    from csf_responder.execution import serial

    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    n = len(treated)
    fold = _folds(treated, n_folds, seed)
    done = Parallel(n_jobs=n_jobs)(
        delayed(serial(_t_fold))(X, treated, y, fold, k, features=features, learner=learner,
                                 kind=kind, n_bootstrap=n_bootstrap, seed=seed)
        for k in np.unique(fold))
    mu0, mu1, spread = (np.full(n, np.nan) for _ in range(3))
    for test, m0, m1, boot in done:
        mu0[test], mu1[test] = m0, m1
        if len(boot) > 1:
            spread[test] = boot.std(axis=0, ddof=1)
    benefit = mu1 - mu0
    q = stats.norm.ppf(0.5 + level / 2)
    return BenefitEstimate(name, outcome, level, benefit, benefit - q * spread,
                           benefit + q * spread, mu0, mu1, fold)


# --------------------------------------------------------------- interpretation
def treatment_effect(treated: np.ndarray, y: np.ndarray, *, ci_level: float) -> MetricCI:
    """Difference in mean outcome, treated minus control, with a Welch t interval."""
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    a, b = y[treated & np.isfinite(y)], y[~treated & np.isfinite(y)]
    if len(a) < 2 or len(b) < 2:
        return MetricCI(float(a.mean() - b.mean()) if len(a) and len(b) else np.nan,
                        np.nan, np.nan)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = float(a.mean() - b.mean()), float(np.sqrt(va + vb))
    if se == 0:
        return MetricCI(diff, diff, diff)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    q = float(stats.t.ppf(0.5 + ci_level / 2, dof))
    return MetricCI(diff, diff - q * se, diff + q * se)


def prognostic_predictive(X: pd.DataFrame, treated: np.ndarray, y: np.ndarray, *,
                          features: Pipeline, ci_level: float, alpha: float,
                          labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Each feature's prognostic and predictive effect, from one interaction model.

    The model ``y = a + t b + Z c + t Z d`` is fitted on every patient with an outcome,
    features standardised (per SD). ``c_j`` is the **prognostic** effect of feature j:
    its association with the outcome in controls, given the other features. ``d_j`` is
    its **predictive** effect: how much the treatment effect changes per SD of the
    feature. Both with ``ci_level`` intervals and p-values from HC3 standard errors
    (t distribution), Holm-adjusted over the features within each kind, so that a call
    at ``alpha`` holds the family-wise error over all features.

    Returns
    -------
    DataFrame
        One row per feature: ``feature``, ``label``, ``prognostic``,
        ``prognostic_low``, ``prognostic_high``, ``prognostic_p``,
        ``prognostic_p_holm``, the same five for ``predictive``, and ``role``
        (``predictive``, ``prognostic``, ``prognostic and predictive`` or ``neither``).
    """
    from statsmodels.stats.multitest import multipletests

    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(y)
    steps = clone(features).fit(X.loc[ok])
    Zf = _matrix(steps, X.loc[ok])
    names = [str(c) for c in Zf.columns]
    Z = Zf.to_numpy(dtype="float64")
    use = _usable(Z, treated[ok])
    fit = _ols(Z[:, use], treated[ok], y[ok])
    params, bse = np.asarray(fit.params), np.asarray(fit.bse)
    p_values = np.asarray(fit.pvalues)
    q = float(stats.t.ppf(0.5 + ci_level / 2, fit.df_resid))
    m = int(use.sum())
    rows = {name: {"feature": name, "label": (labels or {}).get(name, name)}
            for name in names}
    for kind, offset in (("prognostic", 2), ("predictive", 2 + m)):
        idx = np.arange(offset, offset + m)
        adjusted = (multipletests(p_values[idx], method="holm")[1] if m
                    else np.array([]))
        for j, name in enumerate(np.asarray(names)[use]):
            est, err = params[idx[j]], bse[idx[j]]
            rows[name].update({kind: est, f"{kind}_low": est - q * err,
                               f"{kind}_high": est + q * err, f"{kind}_p": p_values[idx[j]],
                               f"{kind}_p_holm": adjusted[j]})
    table = pd.DataFrame(list(rows.values()))
    for kind in ("prognostic", "predictive"):
        for column in (kind, f"{kind}_low", f"{kind}_high", f"{kind}_p", f"{kind}_p_holm"):
            if column not in table:
                table[column] = np.nan
    prognostic = table["prognostic_p_holm"].lt(alpha)
    predictive = table["predictive_p_holm"].lt(alpha)
    table["role"] = np.select(
        [table["predictive"].isna(), prognostic & predictive, predictive, prognostic],
        ["not estimable (constant within an arm)", "prognostic and predictive",
         "predictive", "prognostic"], "neither")
    return table


def summarise_roles(table: pd.DataFrame, *, alpha: float, treatment: str = "MSC") -> str:
    """The prognostic/predictive calls in plain words."""
    def names(mask) -> str:
        return ", ".join(table.loc[mask, "label"])

    predictive = table["role"].isin(["predictive", "prognostic and predictive"])
    prognostic_only = table["role"].eq("prognostic")
    parts = []
    if predictive.any():
        parts.append(f"Predictive (they change how much a patient gains from {treatment}; "
                     f"Holm-adjusted p < {alpha:g}): {names(predictive)}.")
    else:
        parts.append(f"No feature is predictive at the {alpha:.0%} level (Holm-adjusted): "
                     f"no feature showed evidence of changing how much a patient gains from "
                     f"{treatment}; a small trial cannot rule it out.")
    if prognostic_only.any():
        parts.append(f"Prognostic only (they go with the outcome whatever the treatment): "
                     f"{names(prognostic_only)}.")
    return " ".join(parts)


def qini_curve(benefit: np.ndarray, treated: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """The Qini (uplift) curve of a benefit ranking.

    Patients with an outcome are sorted by decreasing estimated benefit; after the top
    k, the incremental gain is ``Y_t(k) - Y_c(k) n_t(k) / n_c(k)`` (outcome sums and
    counts of treated and controls among them), that is ``n_t(k)`` times the difference
    of the arms' mean outcomes, 0 until both arms are present; divided by the number of
    patients so it reads in outcome units per patient. ``random`` is the straight line
    a random ordering gives on average.

    Returns
    -------
    DataFrame
        ``fraction`` (0 to 1, k / n), ``gain`` and ``random``; first row at 0.
    """
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(y) & np.isfinite(benefit)
    order = np.argsort(-np.asarray(benefit)[ok], kind="stable")
    t, yy = treated[ok][order], y[ok][order]
    n = len(t)
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(np.where(t, yy, 0.0)), np.cumsum(np.where(t, 0.0, yy))
    both = (n_t > 0) & (n_c > 0)
    gain = np.r_[0.0, np.where(both, y_t - y_c * n_t / np.maximum(n_c, 1), 0.0) / max(n, 1)]
    fraction = np.arange(n + 1) / max(n, 1)
    return pd.DataFrame({"fraction": fraction, "gain": gain, "random": fraction * gain[-1]})


def _qini_area(curve: pd.DataFrame) -> float:
    """Area between the Qini curve and the random line (trapezoids)."""
    excess = (curve["gain"] - curve["random"]).to_numpy()
    return float(np.trapezoid(excess, curve["fraction"].to_numpy()))


def qini(benefit: np.ndarray, treated: np.ndarray, y: np.ndarray, *, n_bootstrap: int,
         ci_level: float, seed: int) -> tuple[pd.DataFrame, MetricCI]:
    """The Qini curve and its area (the Qini coefficient: area between the curve and
    the random line, outcome units per patient; > 0 when the ranking puts those who
    benefit first), with a percentile interval from patient resamples within arm (the
    benefits held fixed)."""
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    benefit = np.asarray(benefit, dtype="float64")
    curve = qini_curve(benefit, treated, y)
    area = _qini_area(curve)
    ok = np.flatnonzero(np.isfinite(y) & np.isfinite(benefit))
    arms = [ok[treated[ok]], ok[~treated[ok]]]
    rng = np.random.default_rng(seed)
    areas = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        pick = np.concatenate([rows[rng.integers(0, len(rows), len(rows))]
                               for rows in arms if len(rows)])
        areas[b] = _qini_area(qini_curve(benefit[pick], treated[pick], y[pick]))
    tail = (1 - ci_level) / 2
    low, high = (np.quantile(areas, [tail, 1 - tail]) if n_bootstrap
                 else (np.nan, np.nan))
    return curve, MetricCI(area, float(low), float(high))


def benefit_calibration(benefit: np.ndarray, treated: np.ndarray, y: np.ndarray, *,
                        n_groups: int, ci_level: float) -> pd.DataFrame:
    """Observed vs predicted benefit in quantile groups of the estimated benefit.

    Returns
    -------
    DataFrame
        One row per group (lowest predicted benefit first): ``group``, ``n_treated``,
        ``n_control``, ``predicted`` (mean estimated benefit), ``observed`` (mean
        outcome treated minus control) with ``observed_low`` and ``observed_high``
        (Welch t interval).
    """
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    benefit = np.asarray(benefit, dtype="float64")
    ok = np.isfinite(y) & np.isfinite(benefit)
    ranks = pd.Series(benefit[ok]).rank(method="first").to_numpy()
    groups = np.ceil(ranks * n_groups / max(ok.sum(), 1)).astype(int) - 1
    rows = []
    for g in range(n_groups):
        member = groups == g
        t, yy = treated[ok][member], y[ok][member]
        effect = treatment_effect(t, yy, ci_level=ci_level)
        rows.append({"group": g + 1, "n_treated": int(t.sum()), "n_control": int((~t).sum()),
                     "predicted": float(benefit[ok][member].mean()) if member.any() else np.nan,
                     "observed": effect.estimate, "observed_low": effect.low,
                     "observed_high": effect.high})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class EffectAnalysis:
    """Everything :func:`analyse` estimates.

    Attributes
    ----------
    average : dict
        Outcome -> treated minus control, with its interval.
    estimates : dict
        (estimator, outcome) -> cross-fitted :class:`BenefitEstimate`.
    roles : DataFrame
        :func:`prognostic_predictive` on the primary outcome; ``summary`` in words.
    qini, curves, calibration, loading : dict
        Estimator -> Qini area, Qini curve, benefit calibration groups and
        :class:`BenefitLoading`, on the primary outcome.
    notes : list of str
        Outcomes left out and why.
    """

    outcome: str
    average: dict[str, MetricCI]
    estimates: dict[tuple[str, str], BenefitEstimate]
    roles: pd.DataFrame
    summary: str
    qini: dict[str, MetricCI]
    curves: dict[str, pd.DataFrame]
    calibration: dict[str, pd.DataFrame]
    loading: dict[str, BenefitLoading]
    notes: list[str]

    @property
    def estimators(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.estimates))


def estimator_steps(n_learners: int) -> int:
    """The (estimator, outcome) fits :func:`analyse` makes at most: what its ``on_step``
    counts to."""
    continuous = sum(kind == "continuous" for kind in OUTCOME_KINDS.values())
    return continuous + n_learners * len(OUTCOME_KINDS)


def analyse(data: EffectData, *, features: Pipeline, learners: dict[str, LearnerFactory],
            outcome: str, n_folds: int, n_bootstrap: int, interval_level: float,
            ci_level: float, alpha: float, n_groups: int, n_qini_bootstrap: int, seed: int,
            n_jobs: int = 1, labels: dict[str, str] | None = None, treatment: str = "MSC",
            on_step: Callable[[], None] | None = None) -> EffectAnalysis:
    """Benefit of every estimator on every outcome with enough patients, then the
    prognostic/predictive table, Qini and calibration on the primary ``outcome``.

    An outcome needs at least ``2 n_folds`` patients with it in each arm (so that every
    cross-fitting fold's training part has some); one with fewer is left out with a
    note, the primary one raises. ``on_step`` is called after each (estimator, outcome).
    """
    on_step = on_step or (lambda: None)
    notes = []
    usable = []
    for name in OUTCOME_KINDS:
        y = data.outcome(name)
        counts = [int(np.isfinite(y[data.treated == arm]).sum()) for arm in (True, False)]
        if min(counts) >= 2 * n_folds:
            usable.append(name)
        elif name == outcome:
            raise ValueError(f"the {name} outcome is known for {counts[0]} treated and "
                             f"{counts[1]} control patients: the analysis needs at least "
                             f"{2 * n_folds} in each arm")
        else:
            notes.append(f"the {name} outcome is left out: known for {counts[0]} treated "
                         f"and {counts[1]} control patients (at least {2 * n_folds} per "
                         f"arm needed)")
    jobs = [("interaction", o) for o in usable if OUTCOME_KINDS[o] == "continuous"]
    jobs += [(name, o) for name in learners for o in usable]
    estimates = {}
    for name, o in jobs:
        common = dict(features=features, outcome=o, n_folds=n_folds, level=interval_level,
                      seed=seed)
        if name == "interaction":
            estimates[name, o] = interaction_benefit(data.X, data.treated, data.outcome(o),
                                                     **common)
        else:
            estimates[name, o] = t_learner_benefit(
                data.X, data.treated, data.outcome(o), learner=learners[name], name=name,
                kind=OUTCOME_KINDS[o], n_bootstrap=n_bootstrap, n_jobs=n_jobs, **common)
        on_step()
    y = data.outcome(outcome)
    roles = prognostic_predictive(data.X, data.treated, y, features=features,
                                  ci_level=ci_level, alpha=alpha, labels=labels)
    qini_areas, curves, calibration, loading = {}, {}, {}, {}
    for name in dict.fromkeys(n for n, _ in jobs):
        estimate = estimates[name, outcome]
        curves[name], qini_areas[name] = qini(estimate.benefit, data.treated, y,
                                              n_bootstrap=n_qini_bootstrap,
                                              ci_level=ci_level, seed=seed)
        calibration[name] = benefit_calibration(estimate.benefit, data.treated, y,
                                                n_groups=n_groups, ci_level=ci_level)
        loading[name] = benefit_loading(estimate, data.treated, y, ci_level=ci_level)
    return EffectAnalysis(
        outcome, {o: treatment_effect(data.treated, data.outcome(o), ci_level=ci_level)
                  for o in usable},
        estimates, roles, summarise_roles(roles, alpha=alpha, treatment=treatment),
        qini_areas, curves, calibration, loading, notes)


# -------------------------------------------------------- calibration, planning
@dataclass(frozen=True)
class BenefitLoading:
    """The best linear predictor of the benefit from its cross-fitted estimate
    (Chernozhukov, Demirer, Duflo, Fernandez-Val. Generic machine learning inference on
    heterogeneous treatment effects in randomized experiments. 2018, arXiv:1712.04802):

    ``y = a0 + a1 mu0(x) + b1 (t - p) + b2 (t - p) (S(x) - mean S) + e``

    fitted by least squares (HC3) on the patients with the outcome, ``S`` the estimated
    benefit, ``p`` the treated share. ``b1`` is the average effect; ``b2`` the
    heterogeneity loading: 1 when the estimate's spread between patients is real, 0 when
    none of it is. The calibrated benefit ``b1 + b2 (S - mean S)`` is what enrichment
    plans with: a ranking that only reflects noise gains nothing.
    """

    average: MetricCI
    loading: MetricCI
    params: np.ndarray
    cov: np.ndarray
    mean_benefit: float
    dof: float

    def calibrated(self, benefit: np.ndarray) -> np.ndarray:
        b1, b2 = self.params[2], self.params[3] if len(self.params) > 3 else 0.0
        return b1 + b2 * (np.asarray(benefit, dtype="float64") - self.mean_benefit)

    def mean_ci(self, mean_benefit: float, *, ci_level: float) -> MetricCI:
        """Calibrated mean benefit of a group whose mean estimated benefit is given."""
        g = np.zeros(len(self.params))
        g[2] = 1.0
        if len(self.params) > 3:
            g[3] = mean_benefit - self.mean_benefit
        estimate = float(g @ self.params)
        se = float(np.sqrt(g @ self.cov @ g))
        q = float(stats.t.ppf(0.5 + ci_level / 2, max(self.dof, 1)))
        return MetricCI(estimate, estimate - q * se, estimate + q * se)


def benefit_loading(estimate: BenefitEstimate, treated: np.ndarray, y: np.ndarray, *,
                    ci_level: float) -> BenefitLoading:
    """Fit :class:`BenefitLoading` (without ``b2`` when the estimate does not vary)."""
    import statsmodels.api as sm

    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(y) & np.isfinite(estimate.benefit) & np.isfinite(estimate.mu0)
    t = treated[ok].astype("float64")
    centred_t = t - t.mean()
    benefit = estimate.benefit[ok]
    mean_benefit = float(benefit.mean())
    mu0 = estimate.mu0[ok]
    # a constant mu0 says nothing the intercept does not (least squares by pseudo-inverse
    # gives its column a zero coefficient)
    columns = [np.ones(ok.sum()), mu0 if mu0.std() > 1e-12 else np.zeros_like(mu0),
               centred_t]
    if benefit.std() > 1e-12:
        columns.append(centred_t * (benefit - mean_benefit))
    fit = sm.OLS(y[ok], np.column_stack(columns)).fit(cov_type="HC3", use_t=True)
    params, cov = np.asarray(fit.params), np.nan_to_num(np.asarray(fit.cov_params()))
    q = float(stats.t.ppf(0.5 + ci_level / 2, fit.df_resid))
    se = np.sqrt(np.diag(cov))

    def ci(k: int) -> MetricCI:
        if k >= len(params):
            return MetricCI(np.nan, np.nan, np.nan)
        return MetricCI(float(params[k]), float(params[k] - q * se[k]),
                        float(params[k] + q * se[k]))
    return BenefitLoading(ci(2), ci(3), params, cov, mean_benefit, float(fit.df_resid))


def arm_residual_sds(treated: np.ndarray, y: np.ndarray, mu0: np.ndarray, mu1: np.ndarray
                     ) -> tuple[float, float]:
    """SD of the outcome around the model's mean in each arm (control, treated), such
    that a simulated patient's outcome varies as much as the observed ones: the root of
    the arm's outcome variance minus the variance of its patients' model means, and at
    least half the outcome SD (a model whose means spread nearly as much as the outcomes,
    as an overfitted one on a small cohort may, would otherwise simulate trials with
    next to no noise). Residuals around cross-fitted predictions would count the models'
    estimation error twice."""
    treated = np.asarray(treated, bool)
    y = np.asarray(y, dtype="float64")
    sds = []
    for arm, mu in ((False, mu0), (True, mu1)):
        rows = (treated == arm) & np.isfinite(y) & np.isfinite(mu)
        if rows.sum() < 2:
            sds.append(np.nan)
            continue
        variance = y[rows].var(ddof=1)
        sds.append(float(np.sqrt(max(variance - mu[rows].var(ddof=1), variance / 4))))
    return sds[0], sds[1]


def plan_enrichment(data: EffectData, planned: BenefitEstimate, score: np.ndarray, *,
                    n_thresholds: int, powers: Sequence[float], alpha: float, n_trials: int,
                    ci_level: float, n_bootstrap: int, seed: int, n_max_cap: int
                    ) -> tuple[pd.DataFrame, BenefitLoading, list[str]]:
    """Enrichment table of the rule "enrol if ``score`` >= t", on the cohort's patients.

    Trials are simulated from the fitted models (:func:`csf_responder.enrichment.
    enrichment_table`): each enrolled patient's outcome under control is the cross-fitted
    ``mu0``, under treatment ``mu0`` plus the **calibrated** benefit
    (:class:`BenefitLoading`), with the noise of :func:`arm_residual_sds`. The effect
    among the enrolled and its interval come from the calibration fit (so they carry
    the uncertainty of the whole fit, and selection on noise in the estimates adds
    nothing); ``observed``, ``observed_low``, ``observed_high`` and ``n_observed`` are
    the observed treated-minus-control difference among the enrolled patients with the
    outcome (Welch), as a check.

    Returns
    -------
    table, loading, notes
        The table (``enrichment_table`` columns plus the observed ones), the calibration
        fit, and what was left out, in words.
    """
    from csf_responder.enrichment import enrichment_table, threshold_grid

    y = data.outcome(planned.outcome)
    score = np.asarray(score, dtype="float64")
    loading = benefit_loading(planned, data.treated, y, ci_level=ci_level)
    usable = np.isfinite(score) & np.isfinite(planned.mu0) & np.isfinite(planned.benefit)
    notes = []
    if (~usable).any():
        notes.append(f"{int((~usable).sum())} patients without an enrichment score or a "
                     f"model prediction are not in the enrichment pool")
    mu0 = planned.mu0[usable]
    mu1 = mu0 + loading.calibrated(planned.benefit[usable])
    sds = arm_residual_sds(data.treated[usable], y[usable], mu0, mu1)
    table = enrichment_table(
        score[usable], mu0, mu1, sds, thresholds=threshold_grid(score[usable], n=n_thresholds),
        powers=tuple(powers), alpha=alpha, n_trials=n_trials, ci_level=ci_level,
        n_bootstrap=n_bootstrap, seed=seed, n_max_cap=n_max_cap)
    observed = []
    for i, threshold in enumerate(table["threshold"]):
        enrolled = score[usable] >= threshold
        fit = loading.mean_ci(float(planned.benefit[usable][enrolled].mean()),
                              ci_level=ci_level)
        table.loc[i, ["effect", "effect_ci_low", "effect_ci_high"]] = (
            fit.estimate, fit.low, fit.high)
        seen = treatment_effect(data.treated[usable][enrolled], y[usable][enrolled],
                                ci_level=ci_level)
        observed.append((seen.estimate, seen.low, seen.high,
                         int(np.isfinite(y[usable][enrolled]).sum())))
    table[["observed", "observed_low", "observed_high", "n_observed"]] = observed
    return table, loading, notes


# ------------------------------------------------------------------ study size
def learning_curve(studies, model: Pipeline, *, n_splits: int, seed: int) -> pd.DataFrame:
    """Cross-validated AUC of a responder model against the size of the study.

    Parameters
    ----------
    studies : iterable of (size, repeat, X, y)
        Independent studies (e.g. simulated): ``size`` patients planned, ``X`` the raw
        wide rows of the labelled ones, ``y`` their 0/1 labels.
    model : Pipeline
        The unfitted responder Pipeline (raw wide table -> probability).

    Returns
    -------
    DataFrame
        One row per study: ``size``, ``repeat``, ``n_labelled``, ``prevalence`` and
        ``auc`` (out-of-fold, stratified ``n_splits``-fold; NaN when a class has fewer
        members than folds).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    rows = []
    for size, repeat, X, y in studies:
        y = np.asarray(y, dtype=int)
        auc = np.nan
        if len(y) and np.bincount(y, minlength=2).min() >= n_splits:
            split = StratifiedKFold(n_splits, shuffle=True, random_state=seed + repeat)
            oof = cross_val_predict(clone(model), X, y, cv=split, method="predict_proba")
            auc = float(roc_auc_score(y, oof[:, 1]))
        rows.append({"size": size, "repeat": repeat, "n_labelled": len(y),
                     "prevalence": float(y.mean()) if len(y) else np.nan, "auc": auc})
    return pd.DataFrame(rows)


def study_size(curve: pd.DataFrame, *, n_parameters: int) -> dict[str, float]:
    """Riley et al. (2020) minimum sample size to develop the responder model, with
    the anticipated AUC (floored at 0.6) and responder rate of the learning curve's
    largest studies (see :func:`csf_responder.metrics.riley_sample_size`).

    Returns
    -------
    dict
        ``riley_minimum_n``, ``n_parameters``, ``anticipated_auc``, ``prevalence`` and
        ``anticipated_r2_cs``; empty when the curve has no finite AUC.
    """
    from csf_responder.metrics import anticipated_r2_cs, riley_sample_size

    ok = curve[np.isfinite(curve["auc"])] if len(curve) else curve
    if not len(ok):
        return {}
    largest = ok[ok["size"] == ok["size"].max()]
    auc = max(float(largest["auc"].mean()), 0.6)
    prevalence = float(largest["prevalence"].mean())
    r2 = anticipated_r2_cs(auc, prevalence)
    needed = riley_sample_size(n_parameters=n_parameters, prevalence=prevalence, r2_cs=r2)
    return {"riley_minimum_n": float(needed["minimum"]), "n_parameters": float(n_parameters),
            "anticipated_auc": auc, "prevalence": prevalence, "anticipated_r2_cs": r2}
