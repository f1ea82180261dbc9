"""Factories of unfitted model Pipelines: all fitting happens in validation or the final refit."""

from __future__ import annotations

from sklearn.base import ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from csf_responder.config import FeatureSpec, IndicationSpec, ModelSpec, PanelSpec
from csf_responder.features import (
    BridgeNormalization,
    CensoredValueImputer,
    CohortFeatures,
    PlateCentering,
)

__all__ = ["make_classifier", "make_pipeline", "prevalence_pipeline"]


def make_classifier(spec: ModelSpec, *, seed: int) -> ClassifierMixin:
    """An unfitted classifier of the given family with the spec's parameters."""
    if spec.family == "logistic":
        return LogisticRegression(**{"max_iter": 5000, **spec.params}, random_state=seed)
    if spec.family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**{"n_jobs": 1, **spec.params}, random_state=seed)
    if spec.family == "xgboost":
        from xgboost import XGBClassifier  # heavy: imported only when a model is built

        params = {"n_jobs": 1, "tree_method": "hist", "eval_metric": "logloss", **spec.params}
        return XGBClassifier(**params, random_state=seed)
    raise ValueError(f"unknown model family {spec.family!r}")


def prevalence_pipeline() -> Pipeline:
    """The prevalence-only reference: every patient gets the training responder rate.

    Any model should beat it; it takes the same raw wide table as the others.
    """
    from sklearn.dummy import DummyClassifier

    return Pipeline([("model", DummyClassifier(strategy="prior"))])


def make_pipeline(
    spec: ModelSpec, *, panel: PanelSpec, indication: IndicationSpec, features: FeatureSpec,
    seed: int, csf: bool = True,
) -> Pipeline:
    """The one Pipeline from raw wide cohort table to responder probability.

    Steps: [plate centring] -> censored-value rule -> engineered features -> median
    imputation of missing values -> standardisation -> classifier. It outputs pandas
    DataFrames between steps, so every intermediate column keeps a readable name. With
    ``csf=False`` the features are the clinical ones only: the clinical-only reference
    that shows whether CSF adds anything.
    """
    keys = {name: panel.analyte(name).column_key for name in features.analytes}
    plates = {"median": [("plates", PlateCentering(timepoints=tuple(panel.timepoints)))],
              "bridge": [("plates", BridgeNormalization())]}.get(features.plate_correction, [])
    steps = [
        *plates,
        ("censoring", CensoredValueImputer(rule=features.censoring)),
        ("features", CohortFeatures(
            analytes=tuple(keys.values()) if csf else (),
            timepoints=tuple(panel.timepoints),
            ratios=(tuple((keys[num], keys[den]) for num, den in features.all_ratios())
                    if csf else ()),
            changes=features.changes and csf,
            levels=tuple(features.levels) if features.levels is not None else None,
            clinical=tuple(features.clinical),
            categories=tuple((name, tuple(indication.covariates[name].levels))
                             for name in features.clinical
                             if name in indication.covariates
                             and indication.covariates[name].type == "category"),
            score_best=float(indication.score.max if indication.score.higher_is_better
                             else indication.score.min),
        )),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", make_classifier(spec, seed=seed)),
    ]
    return Pipeline(steps).set_output(transform="pandas")
