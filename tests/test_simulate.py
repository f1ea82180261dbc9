"""The simulator: determinism, the input contract, the published figures, the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from csf_responder.config import SimulationConfig, TrainConfig, load_config, load_yaml
from csf_responder.contracts import check_cohort
from csf_responder.io import read_cohort, write_cohort
from csf_responder.labels import MONTH_DAYS, derive_labels, window_slopes
from csf_responder.simulate import (
    oracle_probabilities,
    simulate_trial,
    trial_summary,
    true_benefit,
)
from tests.simulated import NOISE_ANALYTES, noise_panel, simulation_config


def _config(configs_dir, *overrides: str) -> SimulationConfig:
    return load_config(configs_dir / "simulate.yaml", SimulationConfig,
                       overrides=list(overrides))[0]


def _train_config(configs_dir) -> TrainConfig:
    return load_config(configs_dir / "train.yaml", TrainConfig)[0]


def test_same_seed_same_cohort_other_seed_other_cohort(configs_dir):
    first = simulate_trial(_config(configs_dir, "n_msc=12", "n_control=10"))
    again = simulate_trial(_config(configs_dir, "n_msc=12", "n_control=10"))
    other = simulate_trial(_config(configs_dir, "n_msc=12", "n_control=10", "seed=1"))
    for name in ("patients", "alsfrs", "csf", "latent"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    assert not first.alsfrs.equals(other.alsfrs)


def test_default_design_matches_phase2(configs_dir):
    trial = simulate_trial(_config(configs_dir))
    assert trial.patients["arm"].value_counts().to_dict() == {"MSC": 33, "control": 31}
    days = trial.alsfrs["day"]
    assert days.min() < -80 and days.max() > 180  # week -12 through month 6
    with_csf = set(trial.csf["subject_id"])
    arms = trial.patients.set_index("subject_id")["arm"]
    assert {arms[s] for s in with_csf} == {"MSC"}  # no lumbar puncture in controls
    assert set(trial.csf["timepoint"]) == {"baseline", "week4"}
    assert {"TGF-beta1", "MCP-1", "VEGF", "Angiogenin"} <= set(trial.csf["analyte"])
    censored = trial.csf["value"].str.startswith("<")
    assert censored.any(), "values below the LLOQ are written as a lab writes them"
    assert (trial.csf.loc[censored, "value"] == "<" + trial.csf.loc[censored, "lloq"]).all()


def test_csf_in_controls_option_samples_controls_too(configs_dir):
    trial = simulate_trial(_config(configs_dir, "design.csf_in_controls=true"))
    arms = trial.patients.set_index("subject_id")["arm"]
    assert {arms[s] for s in set(trial.csf["subject_id"])} == {"MSC", "control"}


def test_simulated_cohort_passes_the_input_contract(configs_dir, tmp_path):
    trial = simulate_trial(_config(configs_dir))
    write_cohort(tmp_path, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    train = _train_config(configs_dir)
    checked = check_cohort(read_cohort(tmp_path, visits_file="alsfrs.csv"), panel=train.panel,
                           indication=train.indication)
    assert checked.rejects.empty
    assert (checked.accounting["rows_read"] == checked.accounting["rows_used"]).all()
    assert len(checked.patients) == 64 and len(checked.visits) == len(trial.alsfrs)
    angiogenin = checked.csf[checked.csf["analyte"] == "Angiogenin"]
    raw = trial.csf[trial.csf["analyte"] == "Angiogenin"]
    assert set(raw["unit"]) == {"ng/mL"}
    # converted to the panel's pg/mL: medians in the thousands, not in single digits
    assert angiogenin["value"].median() > 500
    assert set(checked.csf["flag"]) == {"observed", "below"}


def _published_ci(mean: float, sd: float, n: int) -> tuple[float, float]:
    half = 1.96 * sd / np.sqrt(n)
    return mean - half, mean + half


def test_large_cohort_reproduces_every_published_figure(configs_dir):
    """Calibration: 20,000 per arm, one parameter set, every figure in its published 95% CI."""
    config = _config(configs_dir, "n_msc=20000", "n_control=20000")
    trial = simulate_trial(config)
    train = _train_config(configs_dir)
    summary = trial_summary(
        trial.patients, trial.alsfrs, horizons_months=(4, 6), cutoff=0.5,
        lead_in_days=train.labels.lead_in_days,
        tolerance_days=train.labels.horizon_tolerance_days,
    ).set_index(["arm", "horizon_months"])
    reference = yaml.safe_load((configs_dir / "reference" / "phase2.yaml").read_text())

    rows = []
    for ref in reference["change_from_baseline"]:
        sim = summary.loc[(ref["arm"], ref["horizon_months"])]
        low, high = _published_ci(ref["mean"], ref["sd"], ref["n"])
        rows.append(("change mean", ref, ref["mean"], low, high, sim["change_mean"]))
        rows.append(("change SD", ref, ref["sd"], 0.75 * ref["sd"], 1.25 * ref["sd"],
                     sim["change_sd"]))
    for ref in reference["responder_rate"]:
        sim = summary.loc[(ref["arm"], ref["horizon_months"])]
        half = 1.96 * np.sqrt(ref["rate"] * (1 - ref["rate"]) / ref["n"])
        rows.append(("responder rate", ref, ref["rate"], ref["rate"] - half,
                     ref["rate"] + half, sim["responder_rate"]))
    for ref in reference["slope_change"]:
        sim = summary.loc[(ref["arm"], ref["horizon_months"])]
        low, high = _published_ci(ref["mean"], ref["sd"], ref["n"])
        rows.append(("slope change", ref, ref["mean"], low, high, sim["slope_change_mean"]))

    table = pd.DataFrame([
        {"figure": f, "arm": r["arm"], "months": r["horizon_months"], "published": pub,
         "ci_low": lo, "ci_high": hi, "simulated": sim, "inside": lo <= sim <= hi}
        for f, r, pub, lo, hi, sim in rows
    ])
    print("\n" + table.round(3).to_string(index=False))
    assert table["inside"].all(), "\n" + table[~table["inside"]].round(3).to_string(index=False)


@pytest.fixture(scope="module")
def oracle_trial():
    from tests.conftest import CONFIGS

    config = load_config(CONFIGS / "simulate.yaml", SimulationConfig,
                         overrides=["n_msc=300", "n_control=300", "seed=11"])[0]
    trial = simulate_trial(config)
    oracle = oracle_probabilities(trial, config, draws=2000, cutoff=0.5, horizon_months=6,
                                  seed=3)
    train = load_config(CONFIGS / "train.yaml", TrainConfig)[0]
    labels = derive_labels(trial.alsfrs.rename(columns={"alsfrs_r": "score"}),
                           subjects=trial.patients["subject_id"], higher_is_better=True,
                           **train.labels.slope_settings())
    merged = labels.merge(oracle, on="subject_id").merge(trial.patients[["subject_id", "arm"]])
    return config, trial, oracle, merged


def test_oracle_is_missing_exactly_where_no_label_can_exist(oracle_trial):
    _, _, _, merged = oracle_trial
    no_decline = merged["exclusion"].eq("no_lead_in_decline").fillna(False)
    assert merged.loc[no_decline, "p_responder"].isna().all()
    assert merged.loc[merged["responder"].notna(), "p_responder"].notna().all()
    assert merged["p_responder"].dropna().between(0, 1).all()


@pytest.mark.parametrize("arm", ["MSC", "control"])
def test_oracle_is_calibrated_against_realised_labels(oracle_trial, arm):
    _, _, _, merged = oracle_trial
    rows = merged[merged["responder"].notna() & merged["arm"].eq(arm)]
    y = rows["responder"].astype(int).to_numpy()
    p = rows["p_responder"].clip(1e-4, 1 - 1e-4).to_numpy()
    se = np.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(p.mean() - y.mean()) < 3 * se + 0.01
    logit = np.log(p / (1 - p))[:, None]
    slope = LogisticRegression(C=1e6).fit(logit, y).coef_[0, 0]
    assert 0.5 < slope < 1.6
    assert roc_auc_score(y, p) > 0.65


def test_oracle_separates_treated_from_untreated(oracle_trial):
    _, _, _, merged = oracle_trial
    means = merged.groupby("arm")["p_responder"].mean()
    assert means["MSC"] > means["control"] + 0.25


def test_oracle_is_deterministic_by_seed(configs_dir):
    config = _config(configs_dir, "n_msc=6", "n_control=4")
    trial = simulate_trial(config)
    first = oracle_probabilities(trial, config, draws=500, cutoff=0.5, horizon_months=6, seed=1)
    again = oracle_probabilities(trial, config, draws=500, cutoff=0.5, horizon_months=6, seed=1)
    pd.testing.assert_frame_equal(first, again)


# ------------------------------------------------- potential outcomes, true benefit
@pytest.mark.parametrize("overrides", [(), ("design.csf_in_controls=true",)])
def test_potential_benefit_is_the_realised_one_in_the_msc_arm(configs_dir, overrides):
    trial = simulate_trial(_config(configs_dir, *overrides))
    latent = trial.latent.merge(trial.patients[["subject_id", "arm"]], on="subject_id")
    msc = latent["arm"].eq("MSC")
    assert (latent.loc[msc, "benefit_if_msc"] == latent.loc[msc, "benefit"]).all()
    assert (latent.loc[~msc, "benefit"] == 0).all()
    assert latent["benefit_if_msc"].between(0, 1, inclusive="neither").all()


def _big(configs_dir, *overrides: str):
    config = _config(configs_dir, "n_msc=3000", "n_control=3000", *overrides)
    trial = simulate_trial(config)
    truth = true_benefit(trial, config, horizon_months=config.oracle_horizon_months)
    return config, trial, truth


@pytest.fixture(scope="module")
def big_cohorts():
    """3,000 patients per arm, default parameters, in each benefit mode."""
    from tests.conftest import CONFIGS

    return {mode: _big(CONFIGS, f"benefit.relative_to={mode}")
            for mode in ("own_rate", "typical_rate")}


@pytest.mark.parametrize("mode", ["own_rate", "typical_rate"])
def test_true_benefit_covers_every_patient(big_cohorts, mode):
    config, trial, truth = big_cohorts[mode]
    assert list(truth.columns) == ["subject_id", "true_benefit_slope", "true_benefit_change"]
    assert truth["subject_id"].tolist() == trial.patients["subject_id"].tolist()
    values = truth[["true_benefit_slope", "true_benefit_change"]].to_numpy()
    assert np.isfinite(values).all() and (values > 0).all()  # b > 0: MSC always help
    with pytest.raises(ValueError, match="no scheduled follow-up visit"):
        true_benefit(trial, config, horizon_months=0.5)


def test_typical_rate_benefit_does_not_depend_on_progression_rate(configs_dir):
    """With ``typical_rate`` the benefit in points depends on ``b`` alone; with
    ``own_rate`` it grows with the rate. Baseline MCP-1 both speeds progression and lowers
    the TGF-beta1/MCP-1 axis, which ties ``b`` to the rate (Spearman about -0.13 with
    default parameters, whatever the mode): its effect on the rate is switched off here to
    see the outcome scale alone."""
    results = {}
    for mode in ("own_rate", "typical_rate"):
        _, trial, truth = _big(configs_dir, f"benefit.relative_to={mode}",
                               "progression.mcp1_log_effect=0")
        slope = truth["true_benefit_slope"]
        results[mode] = (spearmanr(slope, trial.latent["rate"])[0],
                         spearmanr(slope, trial.latent["benefit_if_msc"])[0])
    assert abs(results["typical_rate"][0]) < 0.1, results
    assert results["typical_rate"][1] > 0.9999, results  # a function of b alone
    assert results["own_rate"][0] > 0.3, results
    assert results["own_rate"][1] < 0.9, results


def _randomised_difference(config, trial) -> dict[str, tuple[float, float]]:
    """MSC minus control: mean ALSFRS-R change at the horizon visit (patients with one) and
    mean follow-up slope (baseline to horizon, patients with every scheduled visit), each
    with its standard error. Dropout is random, so both compare randomised groups."""
    horizon = config.oracle_horizon_months
    d = config.design
    target = np.rint(horizon * MONTH_DAYS)
    visits = trial.alsfrs.merge(trial.patients[["subject_id", "arm"]], on="subject_id")
    base = visits[visits["day"] == 0].set_index("subject_id")["alsfrs_r"]
    at = visits[(visits["day"] - target).abs() <= d.visit_jitter_days]
    change = (at.set_index("subject_id")["alsfrs_r"] - base).dropna()
    follow = visits[(visits["day"] >= 0) & (visits["day"] <= target + d.visit_jitter_days)]
    slopes = window_slopes(follow.rename(columns={"alsfrs_r": "score"}))
    n_scheduled = 1 + sum(m <= horizon for m in d.follow_up_visit_months)
    slope = slopes.loc[slopes["n_visits"] == n_scheduled, "slope"]
    arm = trial.patients.set_index("subject_id")["arm"]
    out = {}
    for name, values in (("true_benefit_change", change), ("true_benefit_slope", slope)):
        groups = values.groupby(arm.reindex(values.index))
        mean, var, n = groups.mean(), groups.var(), groups.size()
        out[name] = (mean["MSC"] - mean["control"], float(np.sqrt((var / n).sum())))
    return out


@pytest.mark.parametrize("mode", ["own_rate", "typical_rate"])
def test_true_benefit_is_what_randomisation_estimates(big_cohorts, mode):
    config, trial, truth = big_cohorts[mode]
    observed = _randomised_difference(config, trial)
    for column, (difference, se) in observed.items():
        expected = truth[column].mean()
        assert abs(difference - expected) < 3.5 * se, (column, difference, expected, se)
        assert 3.5 * se < 0.25 * expected  # precise enough to tell a wrong benefit apart


def test_no_heterogeneity_without_axis_and_noise_in_typical_rate(configs_dir):
    spread = {}
    for mode in ("own_rate", "typical_rate"):
        config = _config(configs_dir, "n_msc=200", "n_control=200", "benefit.axis_slope=0",
                         "benefit.noise_sd=0", f"benefit.relative_to={mode}")
        truth = true_benefit(simulate_trial(config), config, horizon_months=6)
        spread[mode] = np.ptp(truth[["true_benefit_slope", "true_benefit_change"]].to_numpy(),
                              axis=0)
    assert (spread["typical_rate"] < 1e-12).all(), spread
    assert (spread["own_rate"] > 0.1).all(), spread  # the own rate still varies it


def test_typical_rate_changes_the_treated_arm_only_and_the_oracle_follows(configs_dir):
    own = _config(configs_dir, "n_msc=20", "n_control=20")
    typical = _config(configs_dir, "n_msc=20", "n_control=20",
                      "benefit.relative_to=typical_rate")
    trials = {name: simulate_trial(c) for name, c in (("own", own), ("typical", typical))}
    arm = trials["own"].patients.set_index("subject_id")["arm"]
    follow = {name: t.alsfrs[t.alsfrs["day"] > 0].set_index(["subject_id", "day"])["alsfrs_r"]
              for name, t in trials.items()}
    same = (follow["own"] == follow["typical"]).groupby(level="subject_id").all()
    assert same[arm[same.index] == "control"].all()
    assert not same[arm[same.index] == "MSC"].all()
    settings = {"draws": 300, "cutoff": 0.5, "horizon_months": 6, "seed": 2}
    oracle = {name: oracle_probabilities(trials[name], c, **settings).set_index("subject_id")
              ["p_responder"] for name, c in (("own", own), ("typical", typical))}
    control = arm == "control"
    pd.testing.assert_series_equal(oracle["own"][control], oracle["typical"][control])
    assert not oracle["own"][~control].equals(oracle["typical"][~control])


def test_csf_in_controls_has_no_msc_shift(configs_dir):
    config = _config(configs_dir, "n_msc=1000", "n_control=1000", "design.csf_in_controls=true")
    trial = simulate_trial(config)
    arm = trial.patients.set_index("subject_id")["arm"]
    csf = trial.csf.assign(arm=trial.csf["subject_id"].map(arm))
    samples = csf.groupby(["subject_id", "timepoint"]).size().unstack()
    assert len(samples) == 2000 and samples.notna().all().all()
    assert (samples == len(config.analytes)).all().all()
    quantified = csf[~csf["value"].str.startswith("<")]
    logs = np.log(quantified.set_index(["arm", "subject_id", "analyte", "timepoint"])
                  ["value"].astype(float)).unstack("timepoint").dropna()
    change = (logs["week4"] - logs["baseline"]).groupby(level=["arm", "analyte"])
    mean, se = change.mean(), change.std() / np.sqrt(change.size())
    for analyte in config.analytes:
        if analyte.name == "VEGF":
            continue  # often below its LLOQ: the quantified pairs are a biased subset
        for arm_name, expected in (("control", 0.0), ("MSC", analyte.msc_log_change)):
            key = (arm_name, analyte.name)
            assert abs(mean[key] - expected) < 4 * se[key] + 0.01, (key, mean[key])
    # the oracle reads controls' CSF too (with their own prior: no change expected)
    small = _config(configs_dir, "design.csf_in_controls=true")
    small_trial = simulate_trial(small)
    small_arm = small_trial.patients.set_index("subject_id")["arm"]
    settings = {"draws": 300, "cutoff": 0.5, "horizon_months": 6, "seed": 5}
    with_csf = oracle_probabilities(small_trial, small, **settings).set_index("subject_id")
    without = oracle_probabilities(simulate_trial(_config(configs_dir)), _config(configs_dir),
                                   **settings).set_index("subject_id")
    controls = small_arm.index[small_arm == "control"]
    p = with_csf.loc[controls, "p_responder"]
    assert p.notna().any() and p.dropna().between(0, 1).all()
    assert not p.equals(without.loc[controls, "p_responder"])


def test_simulate_recipe_writes_true_benefit_to_the_truth_file(configs_dir, tmp_path):
    from pipelines.simulate import run

    overrides = ["n_msc=5", "n_control=3", "oracle_draws=200", "benefit.relative_to=typical_rate"]
    outcome = run(config_path=configs_dir / "simulate.yaml", out=tmp_path / "cohort",
                  truth=tmp_path / "truth.csv", overrides=overrides)
    written = pd.read_csv(outcome.truth_file)
    assert list(written.columns) == ["subject_id", "p_responder", "true_benefit_slope",
                                     "true_benefit_change"]
    config = _config(configs_dir, *overrides)
    expected = true_benefit(simulate_trial(config), config,
                            horizon_months=config.oracle_horizon_months)
    pd.testing.assert_frame_equal(written[expected.columns], expected, rtol=1e-12)


# ------------------------------------------------------------------ noise analytes
def test_noise_analytes_change_nothing_else_in_the_cohort_nor_the_oracle():
    """``role: noise``: an analyte that influences nothing, drawn from its own stream."""
    sizes = ("n_msc=30", "n_control=10", "design.csf_in_controls=true")
    plain = simulation_config(*sizes, noise=())
    noisy = simulation_config(*sizes)
    first, second = simulate_trial(plain), simulate_trial(noisy)
    for name in ("patients", "alsfrs", "latent"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    names = [a["name"] for a in NOISE_ANALYTES]
    is_noise = second.csf["analyte"].isin(names)
    pd.testing.assert_frame_equal(second.csf[~is_noise].reset_index(drop=True), first.csf)
    # measured like the others: every sample has them, in their units, censored at the LLOQ
    noise = second.csf[is_noise]
    assert len(noise) == len(first.csf) // 4 * len(names)
    assert dict(zip(noise["analyte"], noise["unit"], strict=True)) == {
        a["name"]: a["reported_unit"] for a in NOISE_ANALYTES}
    assert noise.loc[noise["analyte"] == "Noise-B", "value"].str.startswith("<").any()
    # independent of every latent: the oracle ignores them and is the same to the bit
    settings = {"draws": 300, "cutoff": 0.5, "horizon_months": 6, "seed": 4}
    pd.testing.assert_frame_equal(oracle_probabilities(first, plain, **settings),
                                  oracle_probabilities(second, noisy, **settings))


def test_noise_analytes_pass_the_input_contract_with_a_panel_that_knows_them(configs_dir,
                                                                             tmp_path):
    trial = simulate_trial(simulation_config("n_msc=12", "n_control=4"))
    write_cohort(tmp_path, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    train = _train_config(configs_dir)
    checked = check_cohort(read_cohort(tmp_path, visits_file="alsfrs.csv"), panel=noise_panel(),
                           indication=train.indication)
    assert checked.rejects.empty
    noise_c = checked.csf.loc[checked.csf["analyte"] == "Noise-C", "value"]
    assert noise_c.median() > 500  # reported in ng/mL, converted to the panel's pg/mL


@pytest.mark.parametrize("change, match", [
    ({"TGF-beta1": {"role": "noise"}}, "TGF-beta1.*role cohort"),
    ({"VEGF": {"role": "noise"}}, "VEGF.*role cohort"),
    ({"Noise-A": {"name": "Noise-B"}}, "more than once"),
    ({"Noise-A": {"role": "signal"}}, "role"),
    ({"Noise-A": {"rol": "noise"}}, "rol"),
])
def test_simulation_config_refuses_bad_analyte_roles(configs_dir, change, match):
    data = load_yaml(configs_dir / "simulate.yaml")
    analytes = [*data["analytes"], *NOISE_ANALYTES]
    data["analytes"] = [{**a, **change.get(a["name"], {})} for a in analytes]
    with pytest.raises(ValidationError, match=match):
        SimulationConfig.model_validate(data)


# ----------------------------------------------------------------- scoring cohort
def _scoring(configs_dir, out, *, n=500, csf_format="csv", block_size=200, overrides=()):
    from pipelines.simulate import run_scoring

    return run_scoring(config_path=configs_dir / "simulate.yaml", out=out, n=n,
                       csf_format=csf_format, overrides=list(overrides), block_size=block_size)


def _read_scoring(directory, configs_dir, tmp_path):
    """Read and check a scoring cohort with the project's own ingest. ``arm`` is
    required by the contract of a training cohort: added (MSC) in a copy."""
    import shutil

    from csf_responder.config import analyte_match_key

    copy = tmp_path / f"with_arm_{directory.name}"
    shutil.copytree(directory, copy)
    patients = pd.read_csv(copy / "patients.csv", dtype=str, keep_default_na=False)
    assert "arm" not in patients.columns
    patients.insert(1, "arm", "MSC")
    patients.to_csv(copy / "patients.csv", index=False)
    train = _train_config(configs_dir)
    spellings = train.panel.spellings()
    raw = read_cohort(copy, visits_file="alsfrs.csv", is_analyte=lambda name: getattr(
        spellings.get(analyte_match_key(name)), "name", False))
    return raw, check_cohort(raw, panel=train.panel, indication=train.indication)


@pytest.fixture(scope="module")
def scoring_cohorts(tmp_path_factory):
    """One scoring cohort in both formats (same seed: the same patients)."""
    from tests.conftest import CONFIGS

    root = tmp_path_factory.mktemp("scoring")
    return {fmt: _scoring(CONFIGS, root / fmt, csf_format=fmt) for fmt in ("csv", "parquet")}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_scoring_cohort_passes_the_input_contract(scoring_cohorts, fmt, configs_dir,
                                                  tmp_path):
    outcome = scoring_cohorts[fmt]
    csf_name = f"csf.{fmt}"
    assert sorted(p.name for p in outcome.cohort_dir.iterdir()) == sorted(
        ["alsfrs.csv", "patients.csv", csf_name])
    raw, checked = _read_scoring(outcome.cohort_dir, configs_dir, tmp_path)
    assert any("wide layout" in note for note in raw.notes)
    assert checked.rejects.empty, checked.rejects.head()
    assert (checked.accounting["rows_read"] == checked.accounting["rows_used"]).all()
    assert checked.accounting["rows_read"].tolist() == [500, 4 * 500, 2 * 4 * 500]
    csf = checked.csf
    assert len(csf) == 500 * 2 * 4  # every patient, timepoint and analyte: one value
    assert (csf.groupby(["subject_id", "timepoint", "analyte"], observed=True).size() == 1).all()
    assert set(csf["flag"]) == {"observed", "below"}
    # censored values carry the panel's default limit (angiogenin: 0.4 ng/mL = 400 pg/mL)
    train = _train_config(configs_dir)
    panel_lloq = {a.name: a.lloq for a in train.panel.analytes}
    below = csf[csf["flag"] == "below"]
    assert (below["limit"] == below["analyte"].astype(str).map(panel_lloq)).all()
    angiogenin = csf.loc[csf["analyte"] == "Angiogenin", "value"]
    assert angiogenin.median() > 500  # ng/mL in the header, converted to pg/mL


def test_scoring_cohort_formats_hold_the_same_values(scoring_cohorts, configs_dir, tmp_path):
    checked = {fmt: _read_scoring(o.cohort_dir, configs_dir, tmp_path)[1].csf
               for fmt, o in scoring_cohorts.items()}
    columns = ["subject_id", "timepoint", "analyte", "value", "flag", "limit", "plate"]
    pd.testing.assert_frame_equal(
        checked["csv"][columns].astype(str), checked["parquet"][columns].astype(str))
    csv_dir, pq_dir = (scoring_cohorts[f].cohort_dir for f in ("csv", "parquet"))
    for name in ("patients.csv", "alsfrs.csv"):
        assert (csv_dir / name).read_bytes() == (pq_dir / name).read_bytes()


def test_scoring_cohort_layout(scoring_cohorts, configs_dir):
    directory = scoring_cohorts["parquet"].cohort_dir
    config = _config(configs_dir)
    patients = pd.read_csv(directory / "patients.csv", dtype=str)
    visits = pd.read_csv(directory / "alsfrs.csv")
    csf = pd.read_parquet(directory / "csf.parquet")
    # new patients, not randomised; ids of their own, in order
    assert list(patients.columns) == ["subject_id", "age", "sex", "onset_site", "onset_months"]
    ids = patients["subject_id"]
    assert ids.tolist() == [f"SC{i:07d}" for i in range(1, 501)]
    assert not set(ids) & set(simulate_trial(config).patients["subject_id"])
    # ALSFRS-R at lead-in and baseline only: each scheduled visit once, none after day 0
    assert (visits["day"] <= 0).all()
    assert (visits.groupby("subject_id").size() == len(config.design.lead_in_visit_days)).all()
    assert (visits.loc[visits["day"] == 0].groupby("subject_id").size() == 1).all()
    assert visits["alsfrs_r"].between(0, 48).all()
    # CSF, wide: one row per sample, every timepoint of the design, every analyte filled
    headers = [f"{a.name} ({a.reported_unit})" for a in config.analytes]
    assert list(csf.columns) == ["subject_id", "timepoint", "plate", *headers]
    assert csf["timepoint"].tolist() == list(config.design.csf_days) * 500
    assert (csf[headers] != "").all().all() and csf[headers].notna().all().all()
    assert csf["plate"].str.fullmatch(r"SCPLATE\d{5}").all()
    assert (csf.groupby("plate").size() <= 40).all()
    assert (csf.groupby("subject_id")["plate"].nunique() == 1).all()
    # every file grouped by subject in the order of patients.csv
    for table in (visits, csf):
        assert pd.unique(table["subject_id"]).tolist() == ids.tolist()


def test_scoring_cohort_is_deterministic_by_seed(configs_dir, tmp_path):
    first = _scoring(configs_dir, tmp_path / "first", n=300, csf_format="parquet")
    again = _scoring(configs_dir, tmp_path / "again", n=300, csf_format="parquet")
    other = _scoring(configs_dir, tmp_path / "other", n=300, csf_format="parquet",
                     overrides=["seed=1"])
    for name in ("patients.csv", "alsfrs.csv", "csf.parquet"):
        assert (first.cohort_dir / name).read_bytes() == (again.cohort_dir / name).read_bytes()
        if name != "csf.parquet":  # the parquet file may differ only in its values
            assert (first.cohort_dir / name).read_bytes() != (other.cohort_dir / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(first.cohort_dir / "csf.parquet"),
                                  pd.read_parquet(again.cohort_dir / "csf.parquet"))
    assert not pd.read_parquet(first.cohort_dir / "csf.parquet").equals(
        pd.read_parquet(other.cohort_dir / "csf.parquet"))


def test_scoring_cohort_replaces_a_csf_file_of_another_format(configs_dir, tmp_path):
    out = tmp_path / "cohort"
    _scoring(configs_dir, out, n=20, csf_format="parquet")
    outcome = _scoring(configs_dir, out, n=20, csf_format="csv")
    assert outcome.removed == ["csf.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["alsfrs.csv", "csf.csv", "patients.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def _log_values(text: pd.Series) -> np.ndarray:
    quantified = text[~text.str.startswith("<")]
    return np.log(quantified.astype(float).to_numpy())


def test_scoring_cohort_draws_like_the_msc_arm(configs_dir):
    """Same distributions as the training cohort's MSC arm: a model trained there applies."""
    from csf_responder.simulate import scoring_blocks

    config = _config(configs_dir, "n_msc=3000", "n_control=0")
    trial = simulate_trial(config)
    block = next(scoring_blocks(config, 6000, block_size=6000))
    csf = block.csf.to_pandas()
    for timepoint in config.design.csf_days:
        for analyte in ("TGF-beta1", "MCP-1"):
            train = trial.csf[(trial.csf["analyte"] == analyte)
                              & (trial.csf["timepoint"] == timepoint)]["value"]
            score = csf.loc[csf["timepoint"] == timepoint, f"{analyte} (pg/mL)"]
            a, b = _log_values(train), _log_values(score)
            se = np.sqrt(a.var() / a.size + b.var() / b.size)
            assert abs(a.mean() - b.mean()) < 4 * se, (analyte, timepoint)
            assert abs(a.std() / b.std() - 1) < 0.06, (analyte, timepoint)
        vegf_train = trial.csf[(trial.csf["analyte"] == "VEGF")
                               & (trial.csf["timepoint"] == timepoint)]["value"]
        vegf_score = csf.loc[csf["timepoint"] == timepoint, "VEGF (pg/mL)"]
        assert abs(vegf_train.str.startswith("<").mean()
                   - vegf_score.str.startswith("<").mean()) < 0.04
    # the lead-in: baseline scores and their decline over the lead-in
    visits = block.alsfrs.to_pandas()
    lead = trial.alsfrs[trial.alsfrs["day"] <= 0]
    for table in (lead, visits):
        assert set(table.groupby("subject_id").size()) == {len(config.design.lead_in_visit_days)}
    base = (lead[lead["day"] == 0]["alsfrs_r"], visits[visits["day"] == 0]["alsfrs_r"])
    assert abs(base[0].mean() - base[1].mean()) < 0.3
    drop = [t.groupby("subject_id")["alsfrs_r"].agg(lambda s: s.iloc[0] - s.iloc[-1]).mean()
            for t in (lead.sort_values(["subject_id", "day"]),
                      visits.sort_values(["subject_id", "day"]))]
    assert abs(drop[0] - drop[1]) < 0.3, drop
    patients = block.patients.to_pandas()
    assert abs((patients["onset_site"] == "bulbar").mean()
               - (trial.patients["onset_site"] == "bulbar").mean()) < 0.03
    assert abs(np.log(patients["onset_months"]).mean()
               - np.log(trial.patients["onset_months"]).mean()) < 0.05


def test_simulate_cli_writes_a_scoring_cohort(configs_dir, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    out = tmp_path / "scoring"
    config = str(configs_dir / "simulate.yaml")
    result = runner.invoke(app, ["simulate", "--scoring", "--n", "30", "--format", "parquet",
                                 "--out", str(out), "--config", config])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["alsfrs.csv", "csf.parquet",
                                                     "patients.csv"]
    assert "30" in result.output and "oracle truth" in result.output
    assert len(pd.read_csv(out / "patients.csv")) == 30
    for args, message in ((["--scoring", "--truth", str(tmp_path / "t.csv")], "--truth"),
                          (["--scoring", "--n-msc", "3"], "--n-msc"),
                          (["--n", "3"], "only with --scoring"),
                          (["--format", "parquet"], "only with --scoring")):
        result = runner.invoke(app, ["simulate", *args, "--out", str(tmp_path / "x"),
                                     "--config", config])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_scoring_noise_analytes_change_nothing_else():
    from csf_responder.simulate import scoring_blocks

    plain = next(scoring_blocks(simulation_config(noise=()), 200))
    noisy = next(scoring_blocks(simulation_config(), 200))
    assert plain.patients.equals(noisy.patients) and plain.alsfrs.equals(noisy.alsfrs)
    assert noisy.csf.select(plain.csf.column_names).equals(plain.csf)
    names = [f"{a['name']} ({a['reported_unit']})" for a in NOISE_ANALYTES]
    assert noisy.csf.column_names == [*plain.csf.column_names, *names]
