"""Training stages: select the labelled patients, validate a model family, refit it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from csf_responder.errors import DataError
from csf_responder.explain import shap_values
from csf_responder.metrics import (
    MetricCI,
    anticipated_r2_cs,
    bootstrap_delta_auc,
    bootstrap_metrics,
    classification_metrics,
    decision_curve,
    permutation_p_value,
    riley_sample_size,
)
from csf_responder.validation import (
    CVResult,
    bootstrap_refits,
    optimism_corrected,
    permutation_null,
    repeated_cv,
    tune,
)

#: Thresholds of the decision curve: 5% to 95% risk of being a good responder.
DECISION_THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)

#: Metrics whose apparent value on the final model is optimism-corrected.
OPTIMISM_METRICS = ("roc_auc", "calibration_slope", "brier")

__all__ = ["FamilyResult", "TrainingData", "best_family", "delta_auc", "evaluate_family",
           "sample_size", "training_data"]


@dataclass(frozen=True)
class TrainingData:
    """The labelled patients of one arm: raw wide rows ``X`` (no ``arm`` column, which
    scoring does not need) and labels ``y``."""

    X: pd.DataFrame
    y: np.ndarray
    subject_ids: pd.Series


def training_data(table: pd.DataFrame, *, arm: str, minimum: int) -> TrainingData:
    """Rows of ``arm`` with a responder label, as the model's raw input and target.

    Parameters
    ----------
    table : DataFrame
        The wide cohort table with its ``responder`` column (see
        :func:`csf_responder.ingest.ingest_cohort`).
    arm : str
        The arm the model learns from (``MSC``: response to the treatment).
    minimum : int
        Fewest labelled patients to go on with.

    Raises
    ------
    DataError
        With fewer than ``minimum`` labelled patients.
    """
    keep = table["arm"].eq(arm) & table["responder"].notna()
    chosen = table.loc[keep].reset_index(drop=True)
    if len(chosen) < minimum:
        raise DataError(f"only {len(chosen)} labelled {arm} patient(s), fewer than "
                        f"ingest.min_labelled = {minimum}: the cohort cannot support a model "
                        "(see the rejects for why patients were left out)")
    return TrainingData(
        X=chosen.drop(columns=["responder", "arm"]),
        y=chosen["responder"].astype(int).to_numpy(),
        subject_ids=chosen["subject_id"],
    )


@dataclass(frozen=True)
class FamilyResult:
    """Validation and final refit of one model family (``params``: the hyperparameters
    the search chose for the final model; ``metrics``: every cross-validated metric of
    :data:`csf_responder.metrics.METRICS` with its bootstrap interval; ``optimism``: the
    final model's apparent and optimism-corrected :data:`OPTIMISM_METRICS`; ``decision``:
    the out-of-fold decision curve; ``permutation_p``: the permutation-test p-value of
    the AUC, NaN when not run; ``interval_models``: bootstrap refits of the final model
    that scoring uses for the interval of each probability)."""

    name: str
    cv: CVResult
    metrics: dict[str, MetricCI]
    model: Pipeline
    params: dict
    shap: pd.DataFrame
    shap_features: pd.DataFrame
    optimism: dict[str, float]
    decision: pd.DataFrame
    permutation_p: float
    interval_models: tuple[Pipeline, ...] = ()

    @property
    def auc(self) -> MetricCI:
        """Cross-validated ROC AUC with its interval."""
        return self.metrics["roc_auc"]

    def metric_values(self) -> dict[str, float]:
        """Every number as it is logged: ``m``, ``m_ci_low``, ``m_ci_high`` for each
        metric, the optimism figures (``roc_auc_optimism_corrected``, ...) and
        ``permutation_p`` when the permutation test ran."""
        values = {f"{name}{suffix}": float(value) for name, ci in self.metrics.items()
                  for suffix, value in (("", ci.estimate), ("_ci_low", ci.low),
                                        ("_ci_high", ci.high))}
        values.update({name: float(value) for name, value in self.optimism.items()})
        if not np.isnan(self.permutation_p):
            values["permutation_p"] = float(self.permutation_p)
        return values


def evaluate_family(
    name: str,
    pipeline: Pipeline,
    data: TrainingData,
    *,
    search: dict,
    n_splits: int,
    n_repeats: int,
    inner_splits: int,
    n_jobs: int,
    n_bootstrap: int,
    ci_level: float,
    threshold: float,
    n_optimism: int,
    n_permutations: int,
    seed: int,
    explain: bool = True,
    n_interval_models: int = 0,
    on_fold: Callable[[], None] | None = None,
    on_permutation: Callable[[], None] | None = None,
) -> FamilyResult:
    """Cross-validate an unfitted Pipeline (nested, when it has a ``search``), then tune
    and refit it on every labelled patient.

    The metrics and their intervals come from the out-of-fold predictions only (the
    ROC AUC from pairs of patients in the same test fold, see
    :func:`csf_responder.metrics.cv_auc`); the refitted model (the one logged and used
    for scoring) is explained with SHAP on the training rows (unless ``explain`` is
    false, as for the prevalence-only reference), and its apparent performance is
    corrected for optimism with ``n_optimism`` bootstrap resamples (0: not corrected).
    With ``n_permutations``, the whole nested procedure is repeated on shuffled labels
    for a permutation p-value of the AUC. ``n_interval_models`` bootstrap refits of the
    final model go with it (:func:`csf_responder.validation.bootstrap_refits`).
    """
    cv = repeated_cv(pipeline, data.X, data.y, n_splits=n_splits, n_repeats=n_repeats,
                     seed=seed, search=search, inner_splits=inner_splits, n_jobs=n_jobs,
                     on_fold=on_fold)
    metrics = bootstrap_metrics(data.y, cv.oof, folds=cv.folds, threshold=threshold,
                                n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed)
    final, chosen = tune(pipeline, data.X, data.y, search=search, inner_splits=inner_splits,
                         seed=seed)
    optimism = {}
    if n_optimism:
        def metrics_of(labels, p):
            found = classification_metrics(labels, p, threshold=threshold)
            return {name: found[name] for name in OPTIMISM_METRICS}

        optimism = optimism_corrected(final, data.X, data.y, metrics_of=metrics_of,
                                      n_resamples=n_optimism, seed=seed, n_jobs=n_jobs)
    if explain:
        values, features = shap_values(final, data.X)
    else:
        values, features = pd.DataFrame(index=data.X.index), pd.DataFrame(index=data.X.index)
    values.insert(0, "subject_id", data.subject_ids.to_numpy())
    p_value = np.nan
    if n_permutations:
        null = permutation_null(pipeline, data.X, data.y, n_permutations=n_permutations,
                                n_splits=n_splits, n_repeats=n_repeats, seed=seed,
                                search=search, inner_splits=inner_splits, n_jobs=n_jobs,
                                on_permutation=on_permutation)
        p_value = permutation_p_value(metrics["roc_auc"].estimate, null)
    decision = decision_curve(data.y, cv.oof, thresholds=DECISION_THRESHOLDS)
    refits = (bootstrap_refits(final, data.X, data.y, n_models=n_interval_models, seed=seed,
                               n_jobs=n_jobs) if n_interval_models else [])
    return FamilyResult(name, cv, metrics, final, chosen, values, features, optimism,
                        decision, p_value, tuple(refits))


def best_family(results: dict[str, FamilyResult], metric: str) -> str:
    """Name of the family with the highest ``metric`` (a name of
    :meth:`FamilyResult.metric_values`, e.g. ``roc_auc_optimism_corrected``); by the
    cross-validated AUC when some family lacks it (optimism correction switched off).
    First listed wins a tie."""
    values = {name: r.metric_values().get(metric, np.nan) for name, r in results.items()}
    if any(np.isnan(v) for v in values.values()):
        values = {name: r.auc.estimate for name, r in results.items()}
    return max(values, key=values.__getitem__)


def delta_auc(result: FamilyResult, reference: FamilyResult, data: TrainingData, *,
              n_bootstrap: int, ci_level: float, seed: int) -> MetricCI:
    """Cross-validated AUC of ``result`` minus that of ``reference`` (same patients and
    splits), with a paired patient-level bootstrap interval."""
    if not np.array_equal(result.cv.folds, reference.cv.folds):
        raise ValueError(f"{result.name} and {reference.name} were not validated on the "
                         "same folds; their AUCs cannot be paired")
    return bootstrap_delta_auc(data.y, result.cv.oof, reference.cv.oof, folds=result.cv.folds,
                               n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed)


def sample_size(result: FamilyResult, data: TrainingData) -> dict[str, float]:
    """Riley et al. (2020) minimum sample size for ``result``'s model.

    Candidate parameters are the model's input features; the anticipated Cox-Snell
    R-squared comes from its cross-validated AUC (floored at 0.6: a weaker model would
    call for thousands of patients, and the point is the order of magnitude) and the
    outcome prevalence.
    """
    n_parameters = len(result.model[:-1].get_feature_names_out())
    prevalence = float(np.mean(data.y))
    r2 = anticipated_r2_cs(max(result.auc.estimate, 0.6), prevalence)
    needed = riley_sample_size(n_parameters=n_parameters, prevalence=prevalence, r2_cs=r2)
    return {"riley_minimum_n": needed["minimum"], "n_parameters": n_parameters,
            "anticipated_r2_cs": r2, "n_labelled": len(data.y)}
