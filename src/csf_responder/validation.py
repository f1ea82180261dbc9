"""Nested repeated stratified cross-validation with every fitted step inside the fold.

How the work is shared, without changing a single number
---------------------------------------------------------
A plain nested search (``GridSearchCV`` inside ``cross_val_score``) refits the whole
Pipeline for every candidate of every inner fold: the feature engineering, the
imputer and the scaler are refitted once per candidate although they do not depend on
the model's hyperparameters. Here, in the same folds and with the same grid order,

- the leading steps that learn nothing from the rows (they declare ``stateless``: each
  output row comes from its input row alone, e.g. the censoring rule and the feature
  formulas) run once on the whole table (:func:`stateless_prefix`); a step that learns
  (plate correction, imputation, scaling) never moves out of the fold;
- in each inner fold the remaining preprocessing is fitted once on the inner training
  rows and shared by every candidate model;
- between the fitted steps the data stay NumPy arrays (no pandas per step).

The chosen hyperparameters and out-of-fold probabilities are those of the plain
search (tests/test_validation.py checks it against ``GridSearchCV``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import ParameterGrid, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from csf_responder.errors import DataError
from csf_responder.metrics import cv_auc

__all__ = ["CVResult", "bootstrap_refits", "optimism_corrected", "permutation_null", "repeated_cv",
           "stateless_prefix", "tune"]


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold predictions of repeated cross-validation.

    Attributes
    ----------
    oof : ndarray of shape (n_repeats, n_samples)
        Out-of-fold responder probability of every patient in every repeat.
    folds : ndarray of shape (n_repeats, n_samples)
        Test fold (0 to n_splits - 1) of every patient in every repeat: the AUC counts
        only pairs of patients from the same test fold
        (:func:`csf_responder.metrics.cv_auc`).
    fold_aucs : ndarray of shape (n_repeats * n_splits,)
        ROC AUC of each test fold (NaN for a fold with one class only).
    fold_params : list of dict
        Hyperparameters the inner search chose in each outer fold (empty dicts without
        a search), in fold order.
    """

    oof: np.ndarray
    folds: np.ndarray
    fold_aucs: np.ndarray
    fold_params: list[dict[str, Any]] = field(default_factory=list)

    def predictions(self, subject_ids: pd.Series, y: np.ndarray) -> pd.DataFrame:
        """Long table: ``subject_id``, ``repeat``, ``fold``, ``responder``, ``probability``."""
        n_repeats, n = self.oof.shape
        return pd.DataFrame({
            "subject_id": np.tile(np.asarray(subject_ids), n_repeats),
            "repeat": np.repeat(np.arange(n_repeats), n),
            "fold": self.folds.ravel(),
            "responder": np.tile(y, n_repeats),
            "probability": self.oof.ravel(),
        })


def stateless_prefix(pipeline: Pipeline) -> int:
    """How many leading steps of ``pipeline`` learn nothing from the rows.

    A step counts when it declares ``stateless = True``: each output row is computed from
    the same input row alone and ``fit`` learns nothing but column names. Such steps give
    the same output whichever rows they were fitted on, so running them once on the whole
    table before cross-validation leaks nothing. Counting stops at the first step that
    learns (or does not say), and never includes the final estimator.
    """
    count = 0
    for _, step in pipeline.steps[:-1]:
        if step == "passthrough" or not getattr(step, "stateless", False):
            break
        count += 1
    return count


def _rows(X, index):
    return X.iloc[index] if isinstance(X, pd.DataFrame) else X[index]


@dataclass(frozen=True)
class _Split:
    """A Pipeline cut after its stateless head: the rows after the head, and the rest."""

    X: Any
    tail: Pipeline


def _split(pipeline: Pipeline, X: pd.DataFrame, *, fitted: bool = False) -> _Split:
    """Run the stateless head of ``pipeline`` on ``X`` once; return the rows and the tail.

    The tail is an unfitted clone of the remaining steps, passing NumPy arrays between
    its steps (and taking one, when they are all scikit-learn's own). With ``fitted``,
    the head of an already fitted pipeline is reused.
    """
    k = stateless_prefix(pipeline)
    tail = clone(pipeline[k:]).set_output(transform="default")
    if k:
        head = pipeline[:k] if fitted else clone(pipeline[:k]).fit(X)
        X = head.transform(X)
        if all(type(step).__module__.startswith("sklearn.") for _, step in tail.steps[:-1]):
            X = X.to_numpy(dtype="float64")  # scikit-learn's own steps: no frame needed
    return _Split(X, tail)


def _candidates(search: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """The grid's candidates in ``GridSearchCV``'s order (``[{}]`` without a search)."""
    if not search:
        return [{}]
    return list(ParameterGrid({name: list(values) for name, values in search.items()}))


def _fit_tail(tail: Pipeline, X, y: np.ndarray, params: Mapping[str, Any]) -> Pipeline:
    model = tail.steps[-1][0]
    return clone(tail).set_params(**{f"{model}__{k}": v for k, v in params.items()}).fit(X, y)


def _roc_auc(model, X, y: np.ndarray) -> float:
    """ROC AUC of a fitted classifier, from the response ``GridSearchCV``'s ``roc_auc``
    scorer uses (the decision function where there is one), in the exact Mann-Whitney
    form, without scikit-learn's per-call input validation."""
    if hasattr(model, "decision_function"):
        scores = model.decision_function(X)
    else:
        scores = model.predict_proba(X)[:, 1]
    return cv_auc(y, scores)


def _inner_search(tail: Pipeline, X, y: np.ndarray, candidates: list[dict[str, Any]],
                  inner_splits: int, seed: int) -> int:
    """Index of the candidate with the best mean inner-fold ROC AUC (first among ties,
    as ``GridSearchCV``); the preprocessing of each inner fold is fitted once."""
    if len(candidates) == 1:
        return 0
    prep, model = (tail[:-1] if len(tail) > 1 else None), tail[-1]
    inner = StratifiedKFold(n_splits=inner_splits, shuffle=True, random_state=seed)
    scores = np.empty((len(candidates), inner_splits))
    for k, (train, test) in enumerate(inner.split(np.zeros(len(y)), y)):
        X_train, X_test = _rows(X, train), _rows(X, test)
        if prep is not None:
            prep = clone(prep)
            X_train = prep.fit_transform(X_train, y[train])
            X_test = prep.transform(X_test)
        for c, params in enumerate(candidates):
            fitted = clone(model).set_params(**params).fit(X_train, y[train])
            scores[c, k] = _roc_auc(fitted, X_test, y[test])
    mean = scores.mean(axis=1)
    return int(np.flatnonzero(mean == np.nanmax(mean))[0])


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

    The same choice as ``GridSearchCV(pipeline, grid, scoring="roc_auc",
    cv=StratifiedKFold(inner_splits, shuffle=True, random_state=seed))``, computed
    without refitting the preprocessing per candidate (see the module docstring).

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
        A clone of ``pipeline`` refitted on all of ``X`` with the chosen values.
    chosen : dict
        The chosen values (model parameter -> value).
    """
    candidates = _candidates(search)
    chosen = {}
    if len(candidates) > 1:
        split = _split(pipeline, X)
        chosen = candidates[_inner_search(split.tail, split.X, np.asarray(y), candidates,
                                          inner_splits, seed)]
    return _fit_tail(pipeline, X, y, chosen), dict(chosen)


def _outer_fold(tail, X, y, train, test, candidates, inner_splits, seed):
    best = candidates[_inner_search(tail, _rows(X, train), y[train], candidates,
                                    inner_splits, seed)]
    model = _fit_tail(tail, _rows(X, train), y[train], best)
    return test, model.predict_proba(_rows(X, test))[:, 1], dict(best)


def _check_classes(y: np.ndarray, n_splits: int) -> None:
    smallest = int(np.bincount(y, minlength=2).min())
    if smallest < n_splits:
        raise DataError(
            f"the smaller class has {smallest} patient(s), fewer than the {n_splits} "
            "cross-validation folds; lower validation.n_splits or label more patients")


def _cross_validate(split: _Split, y: np.ndarray, *, n_splits: int, n_repeats: int, seed: int,
                    candidates: list[dict[str, Any]], inner_splits: int, n_jobs: int,
                    on_fold: Callable[[], None] | None = None) -> CVResult:
    from joblib import Parallel, delayed

    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    tasks = (delayed(_outer_fold)(split.tail, split.X, y, train, test, candidates,
                                  inner_splits, seed)
             for train, test in splits)
    oof = np.full((n_repeats, len(y)), np.nan)
    folds = np.full((n_repeats, len(y)), -1)
    fold_aucs, fold_params = [], []
    for i, (test, proba, chosen) in enumerate(
            Parallel(n_jobs=n_jobs, return_as="generator")(tasks)):
        oof[i // n_splits, test] = proba
        folds[i // n_splits, test] = i % n_splits
        both = len(set(y[test])) == 2
        fold_aucs.append(roc_auc_score(y[test], proba) if both else np.nan)
        fold_params.append(chosen)
        if on_fold is not None:
            on_fold()
    return CVResult(oof=oof, folds=folds, fold_aucs=np.asarray(fold_aucs),
                    fold_params=fold_params)


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

    A fresh clone of ``pipeline`` (plate correction, imputer, scaler, model) is fitted
    on each training fold only, so nothing learned sees the test fold. With a
    ``search``, the hyperparameters are chosen inside each training fold by an inner
    ``inner_splits``-fold search (``StratifiedKFold(shuffle=True, random_state=seed)``,
    nested cross-validation), so the tuning never sees the test fold either. The
    outer splits are ``RepeatedStratifiedKFold(n_splits, n_repeats, random_state=seed)``:
    the same folds as a plain ``cross_val_score`` with those splitters. Outer folds run
    in parallel with joblib (``n_jobs``; -1 = all cores); the estimators stay
    single-threaded, and results do not depend on ``n_jobs``.

    Raises
    ------
    DataError
        If the smaller class has fewer patients than ``n_splits``.
    """
    y = np.asarray(y, dtype=int)
    _check_classes(y, n_splits)
    return _cross_validate(_split(pipeline, X), y, n_splits=n_splits, n_repeats=n_repeats,
                           seed=seed, candidates=_candidates(search),
                           inner_splits=inner_splits, n_jobs=n_jobs, on_fold=on_fold)


#: Optimism resamples per joblib task.
_CHUNK = 25


def _optimism(tail, X, y, samples, metrics_of):
    """Optimism of each resample in ``samples`` (one joblib task for many: each is quick)."""
    out = []
    for rows in samples:
        model = clone(tail).fit(_rows(X, rows), y[rows])
        on_sample = metrics_of(y[rows], model.predict_proba(_rows(X, rows))[:, 1])
        on_cohort = metrics_of(y, model.predict_proba(X)[:, 1])
        out.append({name: on_sample[name] - on_cohort[name] for name in on_sample})
    return out


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
    cross-validation estimates cover that. The stateless head of the Pipeline runs once
    (:func:`stateless_prefix`); every step that learns is refitted on each resample.

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
    split = _split(fitted, X, fitted=True)
    chunks = [samples[i:i + _CHUNK] for i in range(0, len(samples), _CHUNK)]
    optimism = [o for chunk in Parallel(n_jobs=n_jobs)(
        delayed(_optimism)(split.tail, split.X, y, chunk, metrics_of) for chunk in chunks)
        for o in chunk]
    apparent = metrics_of(y, fitted.predict_proba(X)[:, 1])
    out: dict[str, float] = {}
    for name, value in apparent.items():
        mean = float(np.nanmean([o[name] for o in optimism]))
        out.update({f"{name}_apparent": float(value), f"{name}_optimism": mean,
                    f"{name}_optimism_corrected": float(value) - mean})
    return out


def _refit(fitted: Pipeline, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray) -> Pipeline:
    return clone(fitted).fit(_rows(X, rows), y[rows])


def bootstrap_refits(
    fitted: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    n_models: int,
    seed: int,
    n_jobs: int = 1,
) -> list[Pipeline]:
    """``n_models`` refits of the final model on bootstrap resamples of its rows.

    Each is an unfitted clone of ``fitted`` (same hyperparameters, whole Pipeline, so it
    takes the same raw table) fitted on patients drawn with replacement (a resample with
    one class only is drawn again). The spread of their predictions for a new patient is
    the model's uncertainty about that patient: scoring reports its percentiles as the
    interval of the responder probability. Deterministic for a seed.
    """
    from joblib import Parallel, delayed

    y = np.asarray(y, dtype=int)
    rng = np.random.default_rng([seed, 0x1D7])  # a stream of its own: optimism unchanged
    samples = []
    while len(samples) < n_models:
        rows = rng.integers(0, len(y), len(y))
        if len(np.unique(y[rows])) == 2:
            samples.append(rows)
    return list(Parallel(n_jobs=n_jobs)(delayed(_refit)(fitted, X, y, rows)
                                        for rows in samples))


def _null_auc(split, y, kwargs):
    cv = _cross_validate(split, y, n_jobs=1, **kwargs)
    return cv_auc(y, cv.oof, cv.folds)


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
    on_permutation: Callable[[], None] | None = None,
) -> np.ndarray:
    """Cross-validated AUCs with shuffled labels: the null distribution of the AUC.

    The whole (nested) procedure of :func:`repeated_cv` runs on each permutation of
    ``y``, with the same splitter seeds, so the p-value of the observed AUC accounts for
    everything the procedure can learn from noise. The statistic is the one reported,
    :func:`csf_responder.metrics.cv_auc` (pairs within a test fold). Permutations run in
    parallel (``n_jobs``), each one's folds serially; the permutations are drawn up
    front, so the result does not depend on ``n_jobs``.

    Returns
    -------
    ndarray of shape (n_permutations,)
    """
    from joblib import Parallel, delayed

    from csf_responder.execution import serial

    y = np.asarray(y, dtype=int)
    _check_classes(y, n_splits)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(y) for _ in range(n_permutations)]
    split = _split(pipeline, X)
    kwargs = {"n_splits": n_splits, "n_repeats": n_repeats, "seed": seed,
              "candidates": _candidates(search), "inner_splits": inner_splits}
    null = []
    for auc in Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(serial(_null_auc))(split, labels, kwargs) for labels in shuffled):
        null.append(auc)
        if on_permutation is not None:
            on_permutation()
    return np.asarray(null, dtype=float)
