"""Cross-validation: the numbers of a plain nested search, no leakage, real signal found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from csf_responder.config import SimulationConfig, TrainConfig, load_config
from csf_responder.errors import DataError
from csf_responder.ingest import ingest_cohort
from csf_responder.io import write_cohort
from csf_responder.metrics import cv_auc, proportion_ci
from csf_responder.models import make_pipeline
from csf_responder.simulate import oracle_probabilities, simulate_trial
from csf_responder.training import training_data
from csf_responder.validation import repeated_cv, stateless_prefix
from tests.conftest import CONFIGS


def test_wilson_interval_known_values():
    ci = proportion_ci(5, 27, ci_level=0.95)
    # Wilson interval for 5/27 by hand (z = 1.96): centre 0.2244, half-width 0.1426
    assert ci.estimate == pytest.approx(5 / 27)
    assert ci.low == pytest.approx(0.0818, abs=1e-3)
    assert ci.high == pytest.approx(0.3670, abs=1e-3)
    assert np.isnan(proportion_ci(0, 0, ci_level=0.95).estimate)


def test_too_few_labelled_patients_stop_with_a_clear_error():
    table = pd.DataFrame({"subject_id": ["a", "b", "c"], "arm": ["MSC", "MSC", "control"],
                          "responder": pd.array([1, pd.NA, 0], dtype="Int64")})
    with pytest.raises(DataError, match="only 1 labelled MSC patient"):
        training_data(table, arm="MSC", minimum=2)
    assert len(training_data(table, arm="MSC", minimum=1).y) == 1


def test_too_few_patients_in_a_class_is_a_clear_error():
    X = pd.DataFrame({"a": range(10)})
    y = np.array([1] * 8 + [0] * 2)
    with pytest.raises(DataError, match="smaller class has 2 patient"):
        repeated_cv(None, X, y, n_splits=5, n_repeats=1, seed=0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A simulated cohort of 150 treated patients, through the real ingest and labels."""
    sim = load_config(CONFIGS / "simulate.yaml", SimulationConfig,
                      overrides=["n_msc=150", "n_control=0", "seed=21"])[0]
    trial = simulate_trial(sim)
    directory = write_cohort(tmp_path_factory.mktemp("cohort"), patients=trial.patients,
                             visits=trial.alsfrs, csf=trial.csf,
                             visits_file="alsfrs.csv")
    config = load_config(CONFIGS / "train.yaml", TrainConfig)[0]
    cohort = ingest_cohort(directory, panel=config.panel, indication=config.indication,
                           labels=config.labels, drop_columns=())
    data = training_data(cohort.table, arm="MSC", minimum=20)
    oracle = oracle_probabilities(trial, sim, draws=2000, cutoff=0.5, horizon_months=6, seed=2)
    p_oracle = oracle.set_index("subject_id").loc[data.subject_ids, "p_responder"].to_numpy()
    return config, data, p_oracle


def _cv_auc(config: TrainConfig, family: str, X, y, seed: int = 0) -> float:
    pipeline = make_pipeline(config.models[family], panel=config.panel,
                             indication=config.indication, features=config.features, seed=seed)
    cv = repeated_cv(pipeline, X, y, n_splits=5, n_repeats=2, seed=seed)
    return cv_auc(y, cv.oof, cv.folds)


def test_finds_no_signal_in_shuffled_labels(cohort):
    config, data, _ = cohort
    rng = np.random.default_rng(5)
    aucs = [_cv_auc(config, "logistic_l2", data.X, rng.permutation(data.y), seed=s)
            for s in range(5)]
    assert 0.4 < np.mean(aucs) < 0.6, aucs


@pytest.mark.parametrize("family", ["logistic_l2", "xgboost"])
def test_finds_real_signal_but_not_more_than_the_oracle(cohort, family):
    config, data, p_oracle = cohort
    oracle_auc = roc_auc_score(data.y, p_oracle)
    model_auc = _cv_auc(config, family, data.X, data.y)
    print(f"{family}: cross-validated AUC {model_auc:.3f}, oracle AUC {oracle_auc:.3f}")
    assert model_auc > 0.6
    assert model_auc < oracle_auc + 0.03


def test_fitting_never_sees_the_test_fold(cohort):
    """A patient's out-of-fold prediction ignores the other test-fold patients' data.

    If imputation or scaling were fitted before the split, changing the other test
    rows would move the learned medians and scales, and so this patient's prediction.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    config, data, _ = cohort
    pipeline = make_pipeline(config.models["logistic_l2"], panel=config.panel,
                             indication=config.indication, features=config.features, seed=0)
    base = repeated_cv(pipeline, data.X, data.y, n_splits=5, n_repeats=1, seed=3)
    _, test = next(RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=3)
                   .split(data.X, data.y))
    kept, others = test[0], test[1:]
    changed = data.X.copy()
    numeric = ["tgf_beta1_baseline", "mcp1_week4", "age", "leadin_slope", "onset_months"]
    changed.loc[changed.index[others], numeric] *= 50
    again = repeated_cv(pipeline, changed, data.y, n_splits=5, n_repeats=1, seed=3)
    assert again.oof[0, kept] == pytest.approx(base.oof[0, kept], abs=1e-12)
    assert not np.allclose(again.oof[0, others], base.oof[0, others])


def test_nested_search_never_sees_the_test_fold(cohort):
    """With a hyperparameter search inside each fold, changing the other test rows still
    moves nothing for a patient: the search, too, runs on the training fold only."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    config, data, _ = cohort
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    kwargs = dict(n_splits=5, n_repeats=1, seed=3, search=spec.search, inner_splits=3)
    base = repeated_cv(pipeline, data.X, data.y, **kwargs)
    _, test = next(RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=3)
                   .split(data.X, data.y))
    changed = data.X.copy()
    changed.loc[changed.index[test[1:]], ["tgf_beta1_baseline", "age"]] *= 50
    again = repeated_cv(pipeline, changed, data.y, **kwargs)
    assert again.oof[0, test[0]] == pytest.approx(base.oof[0, test[0]], abs=1e-12)
    assert len(base.fold_params) == 5
    assert all(set(p) == {"C"} and p["C"] in spec.search["C"] for p in base.fold_params)


def test_parallel_folds_give_the_same_result(cohort):
    config, data, _ = cohort
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    kwargs = dict(n_splits=5, n_repeats=2, seed=1, search=spec.search, inner_splits=3)
    serial = repeated_cv(pipeline, data.X, data.y, n_jobs=1, **kwargs)
    parallel = repeated_cv(pipeline, data.X, data.y, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(serial.oof, parallel.oof)
    assert serial.fold_params == parallel.fold_params


def test_optimism_correction_removes_what_a_flexible_model_learns_from_noise():
    """On pure noise, a weakly penalised model looks good on its own rows; the corrected
    AUC falls back towards 0.5 and the optimism is large."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from csf_responder.metrics import classification_metrics
    from csf_responder.validation import optimism_corrected

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(40, 15)), columns=[f"x{i}" for i in range(15)])
    y = np.array([0, 1] * 20)
    model = Pipeline([("model", LogisticRegression(C=10.0, max_iter=5000))]).fit(X, y)

    def metrics_of(labels, p):
        found = classification_metrics(labels, p, threshold=0.5)
        return {k: found[k] for k in ("roc_auc", "brier", "calibration_slope")}

    out = optimism_corrected(model, X, y, metrics_of=metrics_of, n_resamples=60, seed=1)
    assert out["roc_auc_apparent"] > 0.85
    assert out["roc_auc_optimism"] > 0.1
    # Harrell's bootstrap under-corrects a model this overfitted (40 patients, 15 noise
    # features), a known limit: the nested CV estimate is the sober one
    assert out["roc_auc_optimism_corrected"] < 0.8
    assert out["calibration_slope_optimism_corrected"] < out["calibration_slope_apparent"]
    again = optimism_corrected(model, X, y, metrics_of=metrics_of, n_resamples=60, seed=1,
                               n_jobs=2)
    assert again == out                      # deterministic, whatever the parallelism


def test_same_data_config_and_seed_give_identical_metrics(cohort):
    from csf_responder.training import evaluate_family

    config, data, _ = cohort
    spec = config.models["xgboost"]
    runs = [evaluate_family(
        "xgboost", make_pipeline(spec, panel=config.panel, indication=config.indication,
                                 features=config.features, seed=config.seed),
        data, search=spec.search, n_splits=5, n_repeats=1, inner_splits=3, n_jobs=2,
        n_bootstrap=200, ci_level=0.95, threshold=0.5, n_optimism=5, n_permutations=0,
        seed=config.seed,
        explain=False) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics
    assert runs[0].optimism == runs[1].optimism
    assert runs[0].params == runs[1].params


def test_permutation_null_separates_signal_from_noise():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from csf_responder.metrics import permutation_p_value
    from csf_responder.validation import permutation_null

    rng = np.random.default_rng(4)
    y = np.array([0, 1] * 20)
    X = pd.DataFrame({"signal": y * 2.0 + rng.normal(size=40), "noise": rng.normal(size=40)})
    pipeline = Pipeline([("model", LogisticRegression())])
    kwargs = dict(n_permutations=19, n_splits=5, n_repeats=1, seed=0,
                  search={"C": [0.1, 1.0]}, inner_splits=3)
    null = permutation_null(pipeline, X, y, **kwargs)
    assert null.shape == (19,)
    assert 0.3 < null.mean() < 0.7                       # shuffled labels: no signal
    cv = repeated_cv(pipeline, X, y, n_splits=5, n_repeats=1, seed=0, search={"C": [0.1, 1.0]},
                     inner_splits=3)
    observed = cv_auc(y, cv.oof, cv.folds)
    assert permutation_p_value(observed, null) == pytest.approx(1 / 20)
    noise_only = X[["noise"]]
    cv = repeated_cv(pipeline, noise_only, y, n_splits=5, n_repeats=1, seed=0)
    noise_auc = cv_auc(y, cv.oof, cv.folds)
    assert permutation_p_value(noise_auc, permutation_null(
        pipeline, noise_only, y, **{**kwargs, "search": None})) > 0.05


def _plain_nested(pipeline, X, y, *, grid, n_splits, n_repeats, inner_splits, seed):
    """The reference: GridSearchCV inside each outer fold of a plain loop."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold

    oof, chosen = np.full((n_repeats, len(y)), np.nan), []
    outer = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    for i, (train, test) in enumerate(outer.split(X, y)):
        inner = StratifiedKFold(n_splits=inner_splits, shuffle=True, random_state=seed)
        search = GridSearchCV(clone(pipeline), {f"model__{k}": v for k, v in grid.items()},
                              scoring="roc_auc", cv=inner).fit(X.iloc[train], y[train])
        oof[i // n_splits, test] = search.predict_proba(X.iloc[test])[:, 1]
        chosen.append({k.removeprefix("model__"): v for k, v in search.best_params_.items()})
    return oof, chosen


@pytest.mark.parametrize("family, plates", [("elastic_net", "none"), ("xgboost", "median")])
def test_shared_preprocessing_gives_exactly_the_plain_nested_search(cohort, family, plates):
    """The fast search (stateless steps once, preprocessing once per inner fold, NumPy
    between steps) chooses the same hyperparameters and predicts the same probabilities
    as GridSearchCV refitting the whole Pipeline per candidate; also when a plate step
    that learns comes first and nothing can be hoisted."""
    config, data, _ = cohort
    spec = config.models.get(family) or load_config(
        CONFIGS / "train.yaml", TrainConfig, overrides=[f"models.{family}=models/{family}.yaml"]
    )[0].models[family]
    features = config.features.model_copy(update={"plate_correction": plates})
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=features, seed=0)
    X, y = data.X.iloc[:60], data.y[:60]
    kwargs = dict(n_splits=3, n_repeats=2, inner_splits=3, seed=7)
    fast = repeated_cv(pipeline, X, y, search=spec.search, **kwargs)
    oof, chosen = _plain_nested(pipeline, X, y, grid=spec.search, **kwargs)
    assert fast.fold_params == chosen
    np.testing.assert_allclose(fast.oof, oof, rtol=0, atol=1e-12)
    assert len({tuple(sorted(p.items())) for p in chosen}) > 1 or family == "xgboost"


def test_only_steps_that_learn_nothing_run_before_the_folds(cohort):
    config, _, _ = cohort
    spec = config.models["logistic_l2"]

    def pipeline(plates: str, censoring: str):
        features = config.features.model_copy(update={"plate_correction": plates,
                                                      "censoring": censoring})
        return make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=features, seed=0)

    assert [n for n, _ in pipeline("none", "lloq_sqrt2").steps[:2]] == ["censoring", "features"]
    assert stateless_prefix(pipeline("none", "lloq_sqrt2")) == 2      # censoring, features
    assert stateless_prefix(pipeline("none", "censored_normal")) == 0  # fitted to the rows
    assert stateless_prefix(pipeline("median", "lloq_sqrt2")) == 0     # plate offsets learned
    assert stateless_prefix(pipeline("bridge", "lloq_sqrt2")) == 0


@pytest.mark.parametrize("family", sorted(p.stem for p in (CONFIGS / "models").glob("*.yaml")))
def test_every_model_family_file_is_tuned_refitted_and_explained(cohort, family):
    """Each configs/models/<family>.yaml goes through the nested search, the final refit
    with optimism correction, and SHAP on the readable feature names."""
    from csf_responder.training import evaluate_family

    config, data, _ = cohort
    spec = load_config(CONFIGS / "train.yaml", TrainConfig,
                       overrides=[f"models={{{family}: models/{family}.yaml}}"])[0].models[family]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    result = evaluate_family(family, pipeline, data, search=spec.search, n_splits=3,
                             n_repeats=1, inner_splits=2, n_jobs=1, n_bootstrap=100,
                             ci_level=0.95, threshold=0.5, n_optimism=3, n_permutations=0,
                             seed=0)
    assert all(result.params[k] in values for k, values in spec.search.items())
    assert set(result.params) == set(spec.search)
    assert all(set(p) == set(spec.search) for p in result.cv.fold_params)
    names = list(result.model[:-1].get_feature_names_out())
    assert list(result.shap.columns) == ["subject_id", *names]
    assert result.shap[names].abs().to_numpy().sum() > 0
    assert 0.5 < result.auc.estimate <= 1 and "roc_auc_optimism_corrected" in result.optimism


def test_bootstrap_refits_are_deterministic_whole_pipelines_on_resampled_rows(cohort):
    from csf_responder.validation import bootstrap_refits

    config, data, _ = cohort
    X, y = data.X, data.y
    spec = config.models["logistic_l2"]
    final = make_pipeline(spec, panel=config.panel, indication=config.indication,
                          features=config.features, seed=config.seed).fit(X, y)
    first = bootstrap_refits(final, X, y, n_models=4, seed=7)
    again = bootstrap_refits(final, X, y, n_models=4, seed=7, n_jobs=2)
    assert len(first) == 4 and all(m is not final for m in first)
    p = np.column_stack([m.predict_proba(X)[:, 1] for m in first])  # raw table in
    np.testing.assert_array_equal(p, np.column_stack([m.predict_proba(X)[:, 1] for m in again]))
    assert np.ptp(p, axis=1).max() > 0  # different resamples, different models
    assert not np.allclose(p[:, 0], final.predict_proba(X)[:, 1])
