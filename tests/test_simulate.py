"""The simulator: determinism, the input contract, the published figures, the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from csf_responder.config import SimulationConfig, TrainConfig, load_config, load_yaml
from csf_responder.contracts import check_cohort
from csf_responder.io import read_cohort, write_cohort
from csf_responder.labels import derive_labels
from csf_responder.simulate import oracle_probabilities, simulate_trial, trial_summary
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
