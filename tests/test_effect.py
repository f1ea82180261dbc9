"""Individual benefit, prognostic vs predictive features, Qini and benefit calibration
(csf_responder.effect), with the proofs of issue 7 on the simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.pipeline import Pipeline

from csf_responder import effect
from csf_responder.config import EffectConfig, ModelSpec, SimulationConfig, load_config
from csf_responder.errors import ConfigError
from csf_responder.io import write_cohort
from csf_responder.labels import change_at_horizon
from csf_responder.models import baseline_features, make_classifier, make_regressor
from csf_responder.simulate import simulate_trial, true_benefit
from tests.conftest import CONFIGS
from tests.simulated import effect_rows

EFFECT = CONFIGS / "effect.yaml"


def _config(*overrides: str) -> EffectConfig:
    return load_config(EFFECT, EffectConfig, overrides=list(overrides))[0]


def _steps(config: EffectConfig, *, csf: bool = True) -> Pipeline:
    return baseline_features(panel=config.panel, indication=config.indication,
                             features=config.features, csf=csf)


def _cohort(tmp_path, *overrides: str):
    """A simulated trial, through the real ingest, as EffectData; and its true benefit."""
    sim, _ = load_config(CONFIGS / "simulate.yaml", SimulationConfig,
                         overrides=list(overrides))
    trial = simulate_trial(sim)
    write_cohort(tmp_path, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    config = _config()
    data = effect_rows(tmp_path, config)
    truth = true_benefit(trial, sim, horizon_months=6).set_index("subject_id")
    return config, data, truth.reindex(data.subject_id)


#: Benefit driven by the baseline TGF-beta1/MCP-1 axis alone, as a fraction of a typical
#: patient's decline (so progression is prognostic only), CSF in both arms.
PLANTED = ("design.csf_in_controls=true", "benefit.relative_to=typical_rate",
           "benefit.axis_change_weight=0")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _cohort(tmp_path_factory.mktemp("planted"), *PLANTED, "n_msc=2000",
                   "n_control=2000")


# ------------------------------------------------------------------------ proofs
def test_planted_heterogeneity_interaction_model_recovers_individual_benefit(planted):
    config, data, truth = planted
    estimate = effect.interaction_benefit(
        data.X, data.treated, data.outcome("slope"), features=_steps(config),
        outcome="slope", n_folds=5, level=0.9, seed=1)
    rho = stats.spearmanr(estimate.benefit, truth["true_benefit_slope"]).statistic
    assert rho >= 0.5
    # the estimate is calibrated: its loading (1 = the spread between patients is real)
    loading = effect.benefit_loading(estimate, data.treated, data.outcome("slope"),
                                     ci_level=0.95).loading
    assert loading.low < 1 < loading.high


def test_planted_heterogeneity_t_learner_recovers_individual_benefit(planted):
    config, data, truth = planted
    spec = config.learners["logistic_l2"]
    estimate = effect.t_learner_benefit(
        data.X, data.treated, data.outcome("change"), features=_steps(config),
        learner=lambda kind: make_regressor(spec, seed=1), name="logistic_l2",
        kind="continuous", outcome="change", n_folds=5, n_bootstrap=0, level=0.9, seed=1)
    rho = stats.spearmanr(estimate.benefit, truth["true_benefit_change"]).statistic
    assert rho >= 0.5


def test_planted_axis_is_predictive_and_lead_in_slope_prognostic_only(planted):
    config, data, _ = planted
    roles = effect.prognostic_predictive(
        data.X, data.treated, data.outcome("slope"), features=_steps(config),
        ci_level=0.95, alpha=0.05).set_index("feature")
    assert roles.loc["log_ratio_tgf_beta1_mcp1_baseline", "role"] == "predictive"
    assert roles.loc["log_ratio_tgf_beta1_mcp1_baseline", "predictive"] > 0
    assert roles.loc["leadin_slope", "role"] == "prognostic"
    assert roles.loc["leadin_slope", "predictive_p_holm"] >= 0.05
    # planted noise-like features (age, sex) are neither
    assert roles.loc["age", "role"] == "neither"


def test_without_heterogeneity_no_feature_is_called_predictive_in_90_percent_of_seeds(
        tmp_path):
    config = _config()
    clean = 0
    for seed in range(20):
        _, data, _ = _cohort(tmp_path / str(seed), "design.csf_in_controls=true",
                             "benefit.relative_to=typical_rate", "benefit.axis_slope=0",
                             "benefit.noise_sd=0", "n_msc=150", "n_control=150",
                             f"seed={seed}")
        roles = effect.prognostic_predictive(
            data.X, data.treated, data.outcome("slope"), features=_steps(config),
            ci_level=0.95, alpha=0.05)
        clean += not roles["role"].str.contains("predictive").any()
    assert clean >= 18


def test_planted_heterogeneity_is_found_by_the_qini_curve_and_calibrated(planted):
    config, data, truth = planted
    y = data.outcome("slope")
    estimate = effect.interaction_benefit(data.X, data.treated, y, features=_steps(config),
                                          outcome="slope", n_folds=5, level=0.9, seed=1)
    curve, area = effect.qini(estimate.benefit, data.treated, y, n_bootstrap=200,
                              ci_level=0.95, seed=1)
    assert area.low > 0
    groups = effect.benefit_calibration(estimate.benefit, data.treated, y, n_groups=4,
                                        ci_level=0.95)
    # observed benefit rises with predicted benefit, and each group's interval holds it
    assert np.all(np.diff(groups["observed"]) > 0)
    assert (groups["observed_low"] < groups["predicted"]).all()
    assert (groups["predicted"] < groups["observed_high"]).all()


# --------------------------------------------------------------- cross-fitting
def test_a_patients_own_outcome_never_enters_its_benefit(planted):
    """Cross-fitting: changing one patient's outcome leaves its own estimate unchanged
    (and changes others', so the outcome is used at all)."""
    config, data, _ = planted
    rows = np.r_[np.flatnonzero(data.treated)[:60], np.flatnonzero(~data.treated)[:60]]
    X = data.X.iloc[rows].reset_index(drop=True)
    t, y = data.treated[rows], data.outcome("slope")[rows].copy()
    y[~np.isfinite(y)] = 0.0
    spec = config.learners["xgboost"]
    for run in ("interaction", "t_learner"):
        def estimate(outcome, run=run):
            if run == "interaction":
                return effect.interaction_benefit(X, t, outcome, features=_steps(config),
                                                  outcome="slope", n_folds=4, level=0.9,
                                                  seed=3).benefit
            return effect.t_learner_benefit(
                X, t, outcome, features=_steps(config),
                learner=lambda kind: (make_regressor(spec, seed=1)[0], {}),
                name="xgboost", kind="continuous", outcome="slope", n_folds=4,
                n_bootstrap=0, level=0.9, seed=3).benefit
        before = estimate(y)
        changed = y.copy()
        changed[0] += 50.0
        after = estimate(changed)
        assert after[0] == pytest.approx(before[0], abs=1e-9)
        assert not np.allclose(after, before)


def test_t_learner_gives_responder_probability_benefit_with_intervals(planted):
    config, data, _ = planted
    spec = config.learners["logistic_l2"]
    rows = np.r_[np.flatnonzero(data.treated)[:150], np.flatnonzero(~data.treated)[:150]]
    estimate = effect.t_learner_benefit(
        data.X.iloc[rows].reset_index(drop=True), data.treated[rows],
        data.outcome("responder")[rows], features=_steps(config),
        learner=lambda kind: (make_classifier(spec, seed=1), spec.search), name="l2",
        kind="binary", outcome="responder", n_folds=3, n_bootstrap=10, level=0.9, seed=1)
    assert ((estimate.mu0 >= 0) & (estimate.mu0 <= 1)).all()
    assert ((estimate.mu1 >= 0) & (estimate.mu1 <= 1)).all()
    assert np.allclose(estimate.benefit, estimate.mu1 - estimate.mu0)
    assert (estimate.low <= estimate.high).all()
    # MSC raise the chance of response on average (the simulator's planted effect)
    assert estimate.benefit.mean() > 0.1


# --------------------------------------------------------------------- pieces
def test_treatment_effect_matches_welch_t_test():
    rng = np.random.default_rng(0)
    y = np.r_[rng.normal(1.0, 1.0, 30), rng.normal(0.0, 2.0, 25), np.nan]
    t = np.r_[np.ones(30, bool), np.zeros(26, bool)]
    ci = effect.treatment_effect(t, y, ci_level=0.95)
    result = stats.ttest_ind(y[:30], y[30:55], equal_var=False)
    low, high = result.confidence_interval(0.95)
    assert ci.estimate == pytest.approx(y[:30].mean() - y[30:55].mean())
    assert (ci.low, ci.high) == pytest.approx((low, high))


def test_qini_curve_on_a_hand_worked_example():
    # ranked: T y=3, C y=1, T y=2, C y=0
    benefit = np.array([4.0, 3.0, 2.0, 1.0])
    treated = np.array([True, False, True, False])
    y = np.array([3.0, 1.0, 2.0, 0.0])
    curve = effect.qini_curve(benefit, treated, y)
    # k=1: treated only, 0; k=2: 3 - 1*1/1; k=3: 5 - 1*2/1; k=4: 5 - 1*2/2; divided by n
    assert curve["gain"].tolist() == pytest.approx([0, 0, 2 / 4, 3 / 4, 4 / 4])
    assert curve["random"].iloc[-1] == pytest.approx(1.0)


def test_qini_area_is_positive_for_a_good_ranking_and_about_zero_for_a_random_one():
    rng = np.random.default_rng(1)
    n = 4000
    x = rng.normal(size=n)
    t = rng.random(n) < 0.5
    y = x + t * (1 + x) + rng.normal(size=n)  # benefit 1 + x
    _, good = effect.qini(x, t, y, n_bootstrap=100, ci_level=0.95, seed=0)
    _, bad = effect.qini(-x, t, y, n_bootstrap=100, ci_level=0.95, seed=0)
    _, random = effect.qini(rng.normal(size=n), t, y, n_bootstrap=100, ci_level=0.95, seed=0)
    assert good.low > 0 > bad.high
    assert random.low < 0 < random.high


def test_benefit_calibration_groups_cover_every_patient_with_an_outcome():
    rng = np.random.default_rng(2)
    n = 203
    benefit = rng.normal(size=n)
    t = rng.random(n) < 0.5
    y = rng.normal(size=n)
    y[:3] = np.nan
    groups = effect.benefit_calibration(benefit, t, y, n_groups=4, ci_level=0.9)
    assert len(groups) == 4
    assert (groups["n_treated"] + groups["n_control"]).sum() == n - 3
    assert groups["predicted"].is_monotonic_increasing


def _synthetic(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.normal(size=n)})
    t = rng.random(n) < 0.5
    y = 1 + 0.8 * X["a"] + t * (0.5 + 0.6 * X["b"]) + rng.normal(size=n) * (1 + t)
    from sklearn.preprocessing import StandardScaler

    steps = Pipeline([("scale", StandardScaler())]).set_output(transform="pandas")
    return X, t, y.to_numpy(), steps


def test_roles_match_an_independent_hc3_fit_and_holm():
    import statsmodels.formula.api as smf
    from statsmodels.stats.multitest import multipletests

    X, t, y, steps = _synthetic()
    roles = effect.prognostic_predictive(X, t, y, features=steps, ci_level=0.95,
                                         alpha=0.05).set_index("feature")
    z = (X - X.mean()) / X.std(ddof=0)
    fit = smf.ols("y ~ t * (a + b + c)", data=z.assign(y=y, t=t.astype(float))).fit(
        cov_type="HC3", use_t=True)
    for name in "abc":
        assert roles.loc[name, "prognostic"] == pytest.approx(fit.params[name])
        assert roles.loc[name, "predictive"] == pytest.approx(fit.params[f"t:{name}"])
        assert roles.loc[name, "predictive_p"] == pytest.approx(fit.pvalues[f"t:{name}"])
    holm = multipletests(roles["predictive_p"], method="holm")[1]
    assert roles["predictive_p_holm"].to_numpy() == pytest.approx(holm)
    assert roles["role"].to_dict() == {"a": "prognostic", "b": "predictive", "c": "neither"}


def test_a_feature_constant_in_one_arm_is_not_estimable_rather_than_arbitrary():
    X, t, y, steps = _synthetic()
    X.loc[~t, "c"] = 0.0  # e.g. CSF imputed for every control
    roles = effect.prognostic_predictive(X, t, y, features=steps, ci_level=0.95,
                                         alpha=0.05).set_index("feature")
    assert roles.loc["c", "role"].startswith("not estimable")
    assert np.isnan(roles.loc["c", "predictive"])
    assert roles.loc["b", "role"] == "predictive"
    estimate = effect.interaction_benefit(X, t, y, features=steps, outcome="slope",
                                          n_folds=3, level=0.9, seed=0)
    assert np.isfinite(estimate.benefit).all()


def test_analyse_leaves_out_an_outcome_an_arm_lacks_and_refuses_a_primary_one():
    X, t, y, steps = _synthetic(200)
    outcomes = pd.DataFrame({"slope": y, "change": np.where(t, y, np.nan),
                             "responder": (y > 1).astype(float)})
    data = effect.EffectData(X, t, outcomes, np.arange(len(t)))
    spec = ModelSpec(family="logistic", params={}, search={})

    def learner(kind):
        return make_classifier(spec, seed=0) if kind == "binary" else make_regressor(
            spec, seed=0)[0], {}
    analysis = effect.analyse(data, features=steps, learners={"l2": learner},
                              outcome="slope", n_folds=3, n_bootstrap=2, interval_level=0.9,
                              ci_level=0.95, alpha=0.05, n_groups=3, n_qini_bootstrap=20,
                              seed=0)
    assert {o for _, o in analysis.estimates} == {"slope", "responder"}
    assert any("change outcome is left out" in note for note in analysis.notes)
    with pytest.raises(ValueError, match="change outcome is known for"):
        effect.analyse(data, features=steps, learners={}, outcome="change", n_folds=3,
                       n_bootstrap=0, interval_level=0.9, ci_level=0.95, alpha=0.05,
                       n_groups=3, n_qini_bootstrap=0, seed=0)


def test_t_learner_with_one_class_in_an_arm_predicts_its_rate():
    X, t, y, steps = _synthetic(120)
    responder = np.where(t, (y > 1).astype(float), 0.0)  # no control responds
    spec = ModelSpec(family="logistic", params={}, search={})
    estimate = effect.t_learner_benefit(
        X, t, responder, features=steps, learner=lambda kind: (make_classifier(spec, seed=0),
                                                               {}),
        name="l2", kind="binary", outcome="responder", n_folds=3, n_bootstrap=3,
        level=0.9, seed=0)
    assert (estimate.mu0 == 0).all()
    assert np.allclose(estimate.benefit, estimate.mu1)


def test_enrichment_plans_with_the_calibrated_benefit_not_with_noise(tmp_path):
    """No heterogeneity: selecting on noisy estimates must not inflate the expected
    effect among the enrolled (each row's interval holds the true average benefit)."""
    config, data, truth = _cohort(tmp_path, "design.csf_in_controls=true",
                                  "benefit.relative_to=typical_rate", "benefit.axis_slope=0",
                                  "benefit.noise_sd=0", "n_msc=100", "n_control=100")
    estimate = effect.interaction_benefit(
        data.X, data.treated, data.outcome("change"), features=_steps(config),
        outcome="change", n_folds=5, level=0.9, seed=1)
    plan, loading, _ = effect.plan_enrichment(
        data, estimate, estimate.benefit, n_thresholds=10, powers=(0.8,), alpha=0.05,
        n_trials=300, ci_level=0.95, n_bootstrap=0, seed=1, n_max_cap=2000)
    true = truth["true_benefit_change"].mean()
    assert (plan["effect_ci_low"] < true).all() and (true < plan["effect_ci_high"]).all()
    assert loading.loading.low < 0 < loading.loading.high  # no real spread found
    assert {"observed", "observed_low", "observed_high", "n_observed"} <= set(plan)
    assert plan["n_observed"].iloc[0] == np.isfinite(data.outcome("change")).sum()


def test_enrichment_on_planted_heterogeneity_raises_the_effect_and_lowers_n(planted):
    config, data, _ = planted
    estimate = effect.interaction_benefit(
        data.X, data.treated, data.outcome("change"), features=_steps(config),
        outcome="change", n_folds=5, level=0.9, seed=1)
    plan, loading, _ = effect.plan_enrichment(
        data, estimate, estimate.benefit, n_thresholds=5, powers=(0.8,), alpha=0.05,
        n_trials=300, ci_level=0.95, n_bootstrap=0, seed=1, n_max_cap=2000)
    assert loading.loading.low > 0.5
    assert plan["effect"].iloc[-1] > plan["effect"].iloc[0] + 0.5
    assert plan["n_per_arm_80_simulated"].iloc[-1] < plan["n_per_arm_80_simulated"].iloc[0]
    # the observed effect among the enrolled rises too
    assert plan["observed"].iloc[-1] > plan["observed"].iloc[0]


def test_roles_are_summarised_in_words():
    table = pd.DataFrame({
        "label": ["ratio", "slope", "age"],
        "role": ["predictive", "prognostic", "neither"]})
    text = effect.summarise_roles(table, alpha=0.05)
    assert "Predictive" in text and "ratio" in text.split("Prognostic")[0]
    assert "Prognostic only" in text and "slope" in text.split("Prognostic only")[1]
    none = effect.summarise_roles(table.assign(role="neither"), alpha=0.05)
    assert none.startswith("No feature is predictive at the 5% level")


def test_effect_data_orients_outcomes_so_that_higher_is_better():
    table = pd.DataFrame({"subject_id": ["a", "b", "c"], "arm": ["MSC", "control", "other"]})
    labels = pd.DataFrame({"subject_id": ["a", "b", "c"], "followup_slope": [-1.0, -2.0, 0],
                           "responder": pd.array([1, 0, pd.NA], dtype="Int64")})
    change = pd.Series([-3.0, np.nan, 1.0])
    up = effect.effect_data(table, labels, change, treated_arm="MSC", control_arm="control",
                            higher_is_better=True)
    down = effect.effect_data(table, labels, change, treated_arm="MSC",
                              control_arm="control", higher_is_better=False)
    assert list(up.subject_id) == ["a", "b"]  # arms other than the two are left out
    assert up.treated.tolist() == [True, False]
    assert up.outcome("slope").tolist() == [-1.0, -2.0]
    assert down.outcome("slope").tolist() == [1.0, 2.0]
    assert np.isnan(down.outcome("change")[1]) and down.outcome("change")[0] == 3.0
    assert up.outcome("responder").tolist() == [1.0, 0.0]


def test_csf_patients_per_arm_counts_any_measured_value():
    table = pd.DataFrame({"arm": ["MSC", "MSC", "control", "control"],
                          "a_baseline": [1.0, np.nan, np.nan, np.nan],
                          "b_baseline": [np.nan, 2.0, np.nan, 3.0]})
    assert effect.csf_patients_per_arm(table, ["a_baseline", "b_baseline"]) == {
        "MSC": 2, "control": 1}


def test_change_at_horizon_takes_the_visit_closest_to_the_horizon():
    visits = pd.DataFrame({"subject_id": ["a", "a", "a", "b", "b"],
                           "day": [0, 180, 186, 0, 120], "score": [40, 37, 36, 30, 28]})
    labels = pd.DataFrame({"subject_id": ["a", "b"], "score_baseline": [40.0, 30.0]})
    change = change_at_horizon(visits, labels, horizon_months=6, horizon_tolerance_days=21)
    assert change.iloc[0] == -3.0  # day 180 is closer to 182.6 than day 186
    assert np.isnan(change.iloc[1])


def test_study_size_from_the_learning_curve():
    curve = pd.DataFrame({"size": [33, 33, 264, 264], "repeat": [0, 1, 0, 1],
                          "n_labelled": [30, 31, 250, 252], "prevalence": [0.6] * 4,
                          "auc": [0.6, np.nan, 0.78, 0.8]})
    size = effect.study_size(curve, n_parameters=10)
    assert size["anticipated_auc"] == pytest.approx(0.79)
    assert size["riley_minimum_n"] >= 100
    assert effect.study_size(curve.assign(auc=np.nan), n_parameters=10) == {}


def test_learning_curve_auc_grows_with_a_real_signal():
    rng = np.random.default_rng(5)

    def studies():
        for size in (40, 400):
            for repeat in range(2):
                x = rng.normal(size=size)
                y = (x + rng.normal(size=size) > 0).astype(int)
                yield size, repeat, pd.DataFrame({"x": x}), y

    spec = ModelSpec(family="logistic", params={}, search={})
    curve = effect.learning_curve(studies(), Pipeline([("m", make_classifier(spec, seed=0))]),
                                  n_splits=5, seed=0)
    means = curve.groupby("size")["auc"].mean()
    assert list(curve.columns) == ["size", "repeat", "n_labelled", "prevalence", "auc"]
    assert 0.65 < means[400] < 0.85


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize(("override", "message"), [
    ("features.analytes=[TGF-beta1, MCP-1]", "exactly collinear"),
    ("enrichment.estimator=nope", "neither interaction nor a learner"),
    ("features.analytes=[Interferon-omega]", "not in the panel"),
    ("enrichment.powers=[0.8, 1.2]", "between 0 and 1"),
    ("learning_curve.model=nope", "is not a learner"),
])
def test_effect_config_refuses_what_cannot_work(override, message):
    with pytest.raises(ConfigError, match=message):
        _config(override)
