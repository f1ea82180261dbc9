"""Proofs of issue 4 on simulated cohorts, end to end through the pipeline's own stages.

Signal
    On a simulated cohort of 2,000 treated patients, the best family's cross-validated
    AUC is within 0.03 of the oracle AUC (the AUC of the simulator's true probabilities
    on the same labels), and by mean absolute SHAP value every feature the simulator
    plants as informative (the TGF-beta1/MCP-1 axis: the baseline log ratio and its
    change after the first injection) ranks above every feature it plants as pure noise
    (three ``role: noise`` analytes added to the cohort, and Angiogenin, which no
    generating equation uses either; see :mod:`csf_responder.simulate`).

Null
    On simulated phase-2-size cohorts whose labels are shuffled, the reported CV AUC's 95%
    interval contains 0.5 and the permutation p-value (the whole nested procedure per
    permutation) exceeds 0.05, for at least 90% of 20 cohorts.

The cohort goes through the input contract (``write_cohort``, as ``csf-responder
simulate`` writes it), is ingested with a panel that knows the noise analytes, and each
family is validated with :func:`csf_responder.training.evaluate_family` (nested CV, then
the refit that SHAP explains), with small validation settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from csf_responder.config import (
    SIM_GENERATING_ANALYTES,
    FeatureSpec,
    IndicationSpec,
    LabelSpec,
    ModelSpec,
    SimulationConfig,
    analyte_key,
    load_yaml,
)
from csf_responder.ingest import ingest_cohort
from csf_responder.io import write_cohort
from csf_responder.models import make_pipeline
from csf_responder.simulate import oracle_probabilities, simulate_trial
from csf_responder.training import FamilyResult, TrainingData, evaluate_family, training_data
from tests.conftest import CONFIGS
from tests.simulated import noise_panel, simulation_config

N_MSC = 2000
#: Monte Carlo draws per patient of the oracle. On this cohort the oracle AUC moves by
#: ~0.002 between seeds at 2,000 draws and is within 0.002 of 8,000 draws; fewer draws
#: bias it low (500 draws: ~0.015 low, the importance weights are then too few).
ORACLE_DRAWS = 2000
ORACLE_SEED = 3
AUC_TOLERANCE = 0.03
FAMILIES = ("logistic_l2", "xgboost")
VALIDATION = {"n_splits": 5, "n_repeats": 1, "inner_splits": 3, "n_jobs": 2,
              "n_bootstrap": 200, "ci_level": 0.95, "threshold": 0.5, "n_optimism": 0,
              "n_permutations": 0}
#: The benefit axis as the pipeline names it (features of the ratio in configs/train.yaml).
PLANTED = ("log_ratio_tgf_beta1_mcp1_baseline", "change_log_ratio_tgf_beta1_mcp1")


@dataclass(frozen=True)
class SignalRun:
    config: SimulationConfig
    data: TrainingData
    oracle: np.ndarray  # p_responder of each labelled patient, aligned with data.y
    results: dict[str, FamilyResult]
    noise_analytes: list[str]

    @property
    def best(self) -> FamilyResult:
        return max(self.results.values(), key=lambda result: result.auc.estimate)


@pytest.fixture(scope="module")
def signal(tmp_path_factory) -> SignalRun:
    config = simulation_config(f"n_msc={N_MSC}", "n_control=0")
    trial = simulate_trial(config)
    cohort = tmp_path_factory.mktemp("signal") / "cohort"
    write_cohort(cohort, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")

    train = load_yaml(CONFIGS / "train.yaml")
    indication = IndicationSpec.model_validate(load_yaml(CONFIGS / train["indication"]))
    labels = LabelSpec.model_validate(train["labels"])
    panel = noise_panel()
    ingested = ingest_cohort(cohort, panel=panel, indication=indication, labels=labels,
                             drop_columns=[])
    data = training_data(ingested.table, arm="MSC", minimum=N_MSC // 2)

    oracle = oracle_probabilities(trial, config, draws=ORACLE_DRAWS, cutoff=labels.cutoff,
                                  horizon_months=labels.horizon_months, seed=ORACLE_SEED)
    p = (pd.DataFrame({"subject_id": data.subject_ids})
         .merge(oracle, on="subject_id", how="left", validate="one_to_one")["p_responder"])
    assert p.notna().all(), "every labelled patient has an oracle probability"

    # every simulated analyte (informative and noise), the ratio, changes, clinical
    features = FeatureSpec.model_validate(
        {**train["features"], "analytes": [a.name for a in config.analytes]})
    results = {}
    for name in FAMILIES:
        spec = ModelSpec.model_validate(load_yaml(CONFIGS / "models" / f"{name}.yaml"))
        pipeline = make_pipeline(spec, panel=panel, indication=indication, features=features,
                                 seed=train["seed"])
        results[name] = evaluate_family(name, pipeline, data, search=spec.search,
                                        seed=train["seed"], **VALIDATION)
    noise = [a.name for a in config.analytes if a.name not in SIM_GENERATING_ANALYTES]
    return SignalRun(config, data, p.to_numpy(dtype=float), results, noise)


def _noise_features(names: list[str], analytes: list[str]) -> list[str]:
    """Model features derived from ``analytes``: their logs at each timepoint, changes."""
    keys = [analyte_key(name) for name in analytes]
    return [f for f in names
            if any(f.startswith((f"log_{k}_", f"change_log_{k}")) for k in keys)]


def _mean_abs_shap(result: FamilyResult) -> pd.Series:
    shap = result.shap.drop(columns="subject_id")
    return shap.abs().mean().sort_values(ascending=False)


def test_signal_best_family_cv_auc_is_within_0_03_of_the_oracle_auc(signal):
    oracle_auc = roc_auc_score(signal.data.y, signal.oracle)
    lines = [f"oracle AUC {oracle_auc:.4f} (draws {ORACLE_DRAWS}) on {len(signal.data.y)} "
             f"labelled MSC patients, {signal.data.y.mean():.0%} responders"]
    for name, result in signal.results.items():
        auc = result.auc
        lines.append(f"{name}: CV AUC {auc.estimate:.4f} ({auc.low:.4f}-{auc.high:.4f}), "
                     f"oracle - CV {oracle_auc - auc.estimate:+.4f}, params {result.params}")
    best = signal.best
    lines.append(f"best family: {best.name}")
    message = "\n".join(lines)
    print("\n" + message)
    assert abs(best.auc.estimate - oracle_auc) <= AUC_TOLERANCE, message


def test_signal_planted_axis_outranks_every_noise_feature_by_mean_abs_shap(signal):
    best = signal.best
    names = list(best.model[:-1].get_feature_names_out())
    assert set(PLANTED) <= set(names), names
    noise = _noise_features(names, signal.noise_analytes)
    # levels: [baseline] in configs/train.yaml: each noise analyte's baseline log + change
    assert len(noise) == 2 * len(signal.noise_analytes), noise

    lines = []
    for name, result in signal.results.items():
        ranking = _mean_abs_shap(result)
        rank = {feature: i + 1 for i, feature in enumerate(ranking.index)}
        lines.append(f"{name} (CV AUC {result.auc.estimate:.4f}): mean |SHAP| rank / value of "
                     f"{len(ranking)} features")
        lines += [f"  planted {f}: #{rank[f]} {ranking[f]:.4f}" for f in PLANTED]
        top = max(noise, key=lambda f: ranking[f])
        lines.append(f"  highest noise {top}: #{rank[top]} {ranking[top]:.4f}")
    message = f"best family: {best.name}\n" + "\n".join(lines)
    print("\n" + message)

    ranking = _mean_abs_shap(best)
    assert ranking[list(PLANTED)].min() > ranking[noise].max(), message


NULL_COHORTS = 20
NULL_SIZE = 32  # labelled MSC patients per cohort, about the phase 2 trial's
NULL_VALIDATION = {"n_splits": 5, "n_repeats": 1, "inner_splits": 3, "n_jobs": 2,
                   "n_bootstrap": 500, "ci_level": 0.95, "threshold": 0.5, "n_optimism": 0,
                   "n_permutations": 19}


def test_null_shuffled_labels_give_no_signal_in_at_least_90_percent_of_cohorts(tmp_path):
    """20 disjoint phase-2-size cohorts of one simulated trial, each with its labels
    shuffled: the nested procedure (ridge logistic, its C tuned inside every fold) must
    not find signal. A cohort passes when its AUC interval contains 0.5 and its
    permutation p-value (19 permutations: p = 0.05 only if no permutation reaches the
    observed AUC) exceeds 0.05; both hold for ~95% of cohorts when the procedure is sound,
    while tuning or preprocessing outside the folds would shift every AUC up."""
    config = simulation_config(f"n_msc={int(NULL_COHORTS * NULL_SIZE * 1.25)}", "n_control=0",
                               "seed=404", noise=())
    trial = simulate_trial(config)
    cohort = write_cohort(tmp_path / "cohort", patients=trial.patients, visits=trial.alsfrs,
                          csf=trial.csf, visits_file="alsfrs.csv")
    train = load_yaml(CONFIGS / "train.yaml")
    indication = IndicationSpec.model_validate(load_yaml(CONFIGS / train["indication"]))
    panel = noise_panel(noise=())
    ingested = ingest_cohort(cohort, panel=panel, indication=indication,
                             labels=LabelSpec.model_validate(train["labels"]), drop_columns=[])
    data = training_data(ingested.table, arm="MSC", minimum=NULL_COHORTS * NULL_SIZE)
    spec = ModelSpec.model_validate({**load_yaml(CONFIGS / "models" / "logistic_l2.yaml"),
                                     "search": {"C": [0.03, 3.0]}})
    features = FeatureSpec.model_validate(train["features"])
    pipeline = make_pipeline(spec, panel=panel, indication=indication, features=features,
                             seed=0)
    rng = np.random.default_rng(404)
    outcomes = []
    for k in range(NULL_COHORTS):
        rows = np.arange(k * NULL_SIZE, (k + 1) * NULL_SIZE)
        shuffled = TrainingData(X=data.X.iloc[rows].reset_index(drop=True),
                                y=rng.permutation(data.y[rows]),
                                subject_ids=data.subject_ids.iloc[rows].reset_index(drop=True))
        result = evaluate_family("logistic_l2", pipeline, shuffled, search=spec.search, seed=k,
                                 explain=False, **NULL_VALIDATION)
        outcomes.append((result.auc, result.permutation_p))
    passed = [auc.low <= 0.5 <= auc.high and p > 0.05 for auc, p in outcomes]
    lines = [f"cohort {k}: AUC {auc} p {p:.2f} {'ok' if ok else 'SIGNAL'}"
             for k, ((auc, p), ok) in enumerate(zip(outcomes, passed, strict=True))]
    mean_auc = np.mean([auc.estimate for auc, _ in outcomes])
    message = "\n".join([*lines, f"mean AUC {mean_auc:.3f}, passed {sum(passed)}/{len(passed)}"])
    print("\n" + message)
    assert sum(passed) >= 0.9 * NULL_COHORTS, message
