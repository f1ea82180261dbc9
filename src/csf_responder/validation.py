"""Repeated stratified cross-validation with every fitted step inside the fold."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from csf_responder.errors import DataError

__all__ = ["CVResult", "MetricCI", "auc_with_ci", "optimism_corrected", "permutation_null",
           "proportion_ci", "repeated_cv", "tune"]


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.2f} ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold predictions of repeated cross-validation.

    Attributes
    ----------
    oof : ndarray of shape (n_repeats, n_samples)
        Out-of-fold responder probability of every patient in every repeat.
    fold_aucs : ndarray of shape (n_repeats * n_splits,)
        ROC AUC of each test fold (NaN for a fold with one class only).
    fold_params : list of dict
        Hyperparameters the inner search chose in each outer fold (empty dicts without
        a search), in fold order.
    """

    oof: np.ndarray
    fold_aucs: np.ndarray
    fold_params: list[dict[str, Any]] = field(default_factory=list)

    def predictions(self, subject_ids: pd.Series, y: np.ndarray) -> pd.DataFrame:
        """Long table: ``subject_id``, ``repeat``, ``responder``, ``probability``."""
        n_repeats, n = self.oof.shape
        return pd.DataFrame({
            "subject_id": np.tile(np.asarray(subject_ids), n_repeats),
            "repeat": np.repeat(np.arange(n_repeats), n),
            "responder": np.tile(y, n_repeats),
            "probability": self.oof.ravel(),
        })


def tune(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    search: Mapping[str, Sequence[Any]],
    inner_splits: int,
    seed: int,
) -> tuple[Pipeline, dict[str, Any]]:
    """Choose the model's hyperparameters by stratified K-fold ROC AUC and refit.

    Parameters
    ----------
    pipeline : Pipeline
        Unfitted; its last step is named ``model``.
    search : mapping
        Model parameter -> candidate values (a grid); empty: fit as it is.
    inner_splits : int
        Folds of the search, within ``X``.

    Returns
    -------
    fitted : Pipeline
        Refitted on all of ``X`` with the chosen values.
    chosen : dict
        The chosen values (model parameter -> value).
    """
    if not search:
        return clone(pipeline).fit(X, y), {}
    grid = {f"model__{name}": list(values) for name, values in search.items()}
    inner = StratifiedKFold(n_splits=inner_splits, shuffle=True, random_state=seed)
    found = GridSearchCV(clone(pipeline), grid, scoring="roc_auc", cv=inner, n_jobs=1,
                         refit=True, error_score="raise").fit(X, y)
    chosen = {name.removeprefix("model__"): value
              for name, value in found.best_params_.items()}
    return found.best_estimator_, chosen


def _outer_fold(pipeline, X, y, train, test, search, inner_splits, seed):
    model, chosen = tune(pipeline, X.iloc[train], y[train], search=search,
                         inner_splits=inner_splits, seed=seed)
    return test, model.predict_proba(X.iloc[test])[:, 1], chosen


def repeated_cv(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    n_splits: int,
    n_repeats: int,
    seed: int,
    search: Mapping[str, Sequence[Any]] | None = None,
    inner_splits: int = 5,
    n_jobs: int = 1,
    on_fold: Callable[[], None] | None = None,
) -> CVResult:
    """Out-of-fold probabilities from (nested) repeated stratified K-fold.

    A fresh clone of ``pipeline`` (censoring rule, features, imputer, scaler, model) is
    fitted on each training fold only, so nothing learned sees the test fold. With a
    ``search``, the hyperparameters are chosen inside each training fold by an inner
    ``inner_splits``-fold search (nested cross-validation), so the tuning never sees the
    test fold either. Outer folds run in parallel with joblib (``n_jobs``; -1 = all
    cores); the estimators stay single-threaded, and results do not depend on
    ``n_jobs``.

    Raises
    ------
    DataError
        If the smaller class has fewer patients than ``n_splits``.
    """
    from joblib import Parallel, delayed

    y = np.asarray(y, dtype=int)
    smallest = int(np.bincount(y, minlength=2).min())
    if smallest < n_splits:
        raise DataError(
            f"the smaller class has {smallest} patient(s), fewer than the {n_splits} "
            "cross-validation folds; lower validation.n_splits or label more patients")
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    tasks = (delayed(_outer_fold)(pipeline, X, y, train, test, search or {}, inner_splits,
                                  seed + i)
             for i, (train, test) in enumerate(splitter.split(X, y)))
    oof = np.full((n_repeats, len(y)), np.nan)
    fold_aucs, fold_params = [], []
    results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    for i, (test, proba, chosen) in enumerate(results):
        oof[i // n_splits, test] = proba
        fold_aucs.append(roc_auc_score(y[test], proba) if len(set(y[test])) == 2 else np.nan)
        fold_params.append(chosen)
        if on_fold is not None:
            on_fold()
    return CVResult(oof=oof, fold_aucs=np.asarray(fold_aucs), fold_params=fold_params)


def _mean_auc(y: np.ndarray, oof: np.ndarray) -> float:
    """Mean over rows of ``oof`` of the ROC AUC (Mann-Whitney form, ties count half)."""
    ranks = stats.rankdata(oof, axis=1)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    auc = (ranks[:, y == 1].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc.mean())


def auc_with_ci(
    y: np.ndarray, oof: np.ndarray, *, n_bootstrap: int, ci_level: float, seed: int
) -> MetricCI:
    """Cross-validated ROC AUC with a stratified percentile-bootstrap interval.

    The estimate is the mean over repeats of the AUC of each repeat's out-of-fold
    predictions. The interval resamples patients within each class (so every
    resample holds both classes) and recomputes that mean; it reflects which patients
    were sampled, the dominant source of uncertainty at small N.
    """
    y = np.asarray(y, dtype=int)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        boot[b] = _mean_auc(y[idx], oof[:, idx])
    alpha = (1 - ci_level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return MetricCI(_mean_auc(y, oof), float(low), float(high))


def proportion_ci(successes: int, total: int, *, ci_level: float) -> MetricCI:
    """A proportion with its Wilson score interval (NaN when ``total`` is 0)."""
    if total == 0:
        return MetricCI(np.nan, np.nan, np.nan)
    p = successes / total
    z = stats.norm.ppf(1 - (1 - ci_level) / 2)
    centre = (p + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * np.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return MetricCI(p, max(0.0, centre - half), min(1.0, centre + half))


def _optimism_once(pipeline, X, y, rows, metrics_of):
    model = clone(pipeline).fit(X.iloc[rows], y[rows])
    on_sample = metrics_of(y[rows], model.predict_proba(X.iloc[rows])[:, 1])
    on_cohort = metrics_of(y, model.predict_proba(X)[:, 1])
    return {name: on_sample[name] - on_cohort[name] for name in on_sample}


def optimism_corrected(
    fitted: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    metrics_of: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    n_resamples: int,
    seed: int,
    n_jobs: int = 1,
) -> dict[str, float]:
    """Harrell's bootstrap optimism correction of a final model's apparent performance.

    The apparent performance is that of ``fitted`` on the rows it was fitted on. Each
    resample refits an unfitted clone of it (same hyperparameters) on a bootstrap
    sample; its performance on that sample minus its performance on the whole cohort is
    the optimism; the corrected value is the apparent one minus the mean optimism
    (Harrell, Regression Modeling Strategies, 2015, section 5.3.4). The hyperparameters
    stay fixed, so the optimism of tuning itself is not included: the nested
    cross-validation estimates cover that.

    Parameters
    ----------
    fitted : Pipeline
        The final model, fitted on ``X``, ``y``.
    metrics_of : callable
        (labels, probabilities) -> {metric name: value}.
    n_resamples : int
        Bootstrap resamples (resamples with one class only are drawn again).

    Returns
    -------
    dict
        For each metric ``m``: ``m_apparent``, ``m_optimism`` (mean) and
        ``m_optimism_corrected``.
    """
    from joblib import Parallel, delayed

    y = np.asarray(y, dtype=int)
    rng = np.random.default_rng(seed)
    samples = []
    while len(samples) < n_resamples:
        rows = rng.integers(0, len(y), len(y))
        if len(np.unique(y[rows])) == 2:
            samples.append(rows)
    optimism = Parallel(n_jobs=n_jobs)(
        delayed(_optimism_once)(fitted, X, y, rows, metrics_of) for rows in samples)
    apparent = metrics_of(y, fitted.predict_proba(X)[:, 1])
    out: dict[str, float] = {}
    for name, value in apparent.items():
        mean = float(np.nanmean([o[name] for o in optimism]))
        out.update({f"{name}_apparent": float(value), f"{name}_optimism": mean,
                    f"{name}_optimism_corrected": float(value) - mean})
    return out


def permutation_null(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    n_permutations: int,
    n_splits: int,
    n_repeats: int,
    seed: int,
    search: Mapping[str, Sequence[Any]] | None = None,
    inner_splits: int = 5,
    n_jobs: int = 1,
) -> np.ndarray:
    """Cross-validated AUCs with shuffled labels: the null distribution of the AUC.

    The whole (nested) procedure of :func:`repeated_cv` runs on each permutation of
    ``y``, with the same splits seed, so the p-value of the observed AUC accounts for
    everything the procedure can learn from noise.

    Returns
    -------
    ndarray of shape (n_permutations,)
    """
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for k in range(n_permutations):
        shuffled = rng.permutation(np.asarray(y, dtype=int))
        cv = repeated_cv(pipeline, X, shuffled, n_splits=n_splits, n_repeats=n_repeats,
                         seed=seed, search=search, inner_splits=inner_splits, n_jobs=n_jobs)
        null[k] = _mean_auc(shuffled, cv.oof)
    return null
