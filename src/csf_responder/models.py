"""Factories of unfitted model Pipelines: all fitting happens in validation or the final refit."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.base import ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from csf_responder.config import (
    EffectFeatureSpec,
    FeatureSpec,
    IndicationSpec,
    ModelSpec,
    PanelSpec,
)
from csf_responder.features import (
    BridgeNormalization,
    CensoredValueImputer,
    CohortFeatures,
    PlateCentering,
)

__all__ = ["RIDGE_ALPHAS", "baseline_features", "feature_steps", "make_classifier", "make_pipeline",
           "make_regressor", "prevalence_pipeline"]


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


#: Penalties the linear regressor of the logistic family chooses from (leave-one-out).
RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def make_regressor(spec: ModelSpec, *, seed: int) -> tuple[RegressorMixin, dict]:
    """An unfitted regressor of the family, for a continuous outcome (the effect
    pipeline's meta-learners), and the search grid that applies to it.

    The logistic family's counterpart is ridge regression, whose penalty is chosen by
    efficient leave-one-out over :data:`RIDGE_ALPHAS` (the classifier's ``C`` grid does
    not carry over to a squared loss, so its search is dropped); the tree families keep
    their parameters and search grid.
    """
    params = dict(spec.params)
    if spec.family == "logistic":
        from sklearn.linear_model import RidgeCV

        return RidgeCV(alphas=RIDGE_ALPHAS), {}
    if spec.family == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(**{"n_jobs": 1, **params}, random_state=seed), spec.search
    if spec.family == "xgboost":
        from xgboost import XGBRegressor

        params.pop("eval_metric", None)
        return (XGBRegressor(**{"n_jobs": 1, "tree_method": "hist", **params},
                             random_state=seed), spec.search)
    raise ValueError(f"unknown model family {spec.family!r}")


def prevalence_pipeline() -> Pipeline:
    """The prevalence-only reference: every patient gets the training responder rate.

    Any model should beat it; it takes the same raw wide table as the others.
    """
    from sklearn.dummy import DummyClassifier

    return Pipeline([("model", DummyClassifier(strategy="prior"))])


def feature_steps(
    *, panel: PanelSpec, indication: IndicationSpec, analytes: Sequence[str],
    ratios: Sequence[tuple[str, str]], clinical: Sequence[str], censoring: str,
    plate_correction: str = "none", changes: bool = False,
    levels: Sequence[str] | None = None,
) -> list[tuple[str, TransformerMixin]]:
    """The unfitted steps from raw wide cohort table to standardised model features.

    Steps: [plate centring] -> censored-value rule -> engineered features -> median
    imputation of missing values -> standardisation. ``analytes`` (names) get log
    levels at ``levels`` (all timepoints by default); ``ratios`` (name pairs) log ratios.
    """
    keys = {spec.name: spec.column_key for spec in panel.analytes}
    plates = {"median": [("plates", PlateCentering(timepoints=tuple(panel.timepoints)))],
              "bridge": [("plates", BridgeNormalization())]}.get(plate_correction, [])
    return [
        *plates,
        ("censoring", CensoredValueImputer(rule=censoring)),
        ("features", CohortFeatures(
            analytes=tuple(keys[name] for name in analytes),
            timepoints=tuple(panel.timepoints),
            ratios=tuple((keys[num], keys[den]) for num, den in ratios),
            changes=changes,
            levels=tuple(levels) if levels is not None else None,
            clinical=tuple(clinical),
            categories=tuple((name, tuple(indication.covariates[name].levels))
                             for name in clinical
                             if name in indication.covariates
                             and indication.covariates[name].type == "category"),
            score_best=float(indication.score.max if indication.score.higher_is_better
                             else indication.score.min),
        )),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
    ]


def baseline_features(*, panel: PanelSpec, indication: IndicationSpec,
                      features: EffectFeatureSpec, csf: bool = True) -> Pipeline:
    """The effect analysis' feature steps (:func:`feature_steps`, pandas out): what is
    known before treatment, the CSF levels and ratios at the first timepoint (none with
    ``csf=False``) and the clinical features."""
    return Pipeline(feature_steps(
        panel=panel, indication=indication, analytes=features.analytes if csf else (),
        ratios=features.ratios if csf else (), clinical=features.clinical,
        censoring=features.censoring, plate_correction=features.plate_correction,
        levels=panel.timepoints[:1])).set_output(transform="pandas")


def make_pipeline(
    spec: ModelSpec, *, panel: PanelSpec, indication: IndicationSpec, features: FeatureSpec,
    seed: int, csf: bool = True,
) -> Pipeline:
    """The one Pipeline from raw wide cohort table to responder probability.

    Steps: :func:`feature_steps` -> classifier. It outputs pandas DataFrames between
    steps, so every intermediate column keeps a readable name. With ``csf=False`` the
    features are the clinical ones only: the clinical-only reference that shows whether
    CSF adds anything.
    """
    steps = feature_steps(
        panel=panel, indication=indication,
        analytes=features.analytes if csf else (),
        ratios=features.all_ratios() if csf else (),
        clinical=features.clinical, censoring=features.censoring,
        plate_correction=features.plate_correction, changes=features.changes and csf,
        levels=features.levels)
    steps.append(("model", make_classifier(spec, seed=seed)))
    return Pipeline(steps).set_output(transform="pandas")
