"""Trial-enrichment planning: closed-form and simulated sample sizes, the enrichment table
and its figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from csf_responder import enrichment, figures
from csf_responder.enrichment import (
    enrichment_table,
    power_column,
    power_curve,
    simulated_sample_size,
    threshold_grid,
    two_sample_n,
)

POWERS = (0.8, 0.9)


def _outcome_sd(mu0: np.ndarray, mu1: np.ndarray, sd0: float, sd1: float) -> float:
    """SD of one outcome pooled over arms, as the trial model has it."""
    return math.sqrt((sd0**2 + mu0.var() + sd1**2 + mu1.var()) / 2)


def _pool(m: int, *, seed: int = 0, slope: float = 6.0, saturate: float = 1.0):
    """Score ~ U(0, 1); benefit rises with the score up to ``saturate``, flat beyond."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, m)
    mu0 = -6 + rng.normal(0, 1.5, m)
    mu1 = mu0 + slope * np.minimum(score, saturate)
    return score, mu0, mu1


# --------------------------------------------------------------------------- closed form

@pytest.mark.parametrize(("delta", "sd", "power", "expected"), [
    (0.5, 1.0, 0.8, 62.79),  # 2 (1.95996 + 0.84162)^2 / 0.25
    (0.5, 1.0, 0.9, 84.06),  # 2 (1.95996 + 1.28155)^2 / 0.25
    (-3.0, 6.0, 0.8, 62.79),  # only the standardised effect counts, not its sign
    (1.0, 1.0, 0.8, 15.70),
])
def test_two_sample_n_matches_textbook_values(delta, sd, power, expected):
    assert two_sample_n(delta, sd, power=power) == pytest.approx(expected, abs=0.01)


def test_two_sample_n_for_a_t_test_adds_guenthers_correction():
    z = 1.959964
    assert two_sample_n(0.5, 1.0, power=0.8, t_test=True) == pytest.approx(
        62.79 + z**2 / 4, abs=0.01)


def test_two_sample_n_grows_with_stricter_alpha():
    assert two_sample_n(0.5, 1.0, power=0.8, alpha=0.01) == pytest.approx(93.43, abs=0.01)


def test_two_sample_n_without_effect_is_infinite():
    assert two_sample_n(0.0, 4.0, power=0.8) == math.inf


@pytest.mark.parametrize("bad", [{"power": 1.0}, {"power": 0.8, "alpha": 0.0}])
def test_two_sample_n_rejects_probabilities_outside_0_1(bad):
    with pytest.raises(ValueError):
        two_sample_n(0.5, 1.0, **bad)


# --------------------------------------------------------------------------- simulation

@pytest.mark.parametrize("effect", [0.35, 0.5, 0.7])
def test_simulated_n_agrees_with_closed_form_on_a_homogeneous_pool(effect):
    mu0 = np.full(50, -5.0)
    mu1 = mu0 + effect  # residual SD 1: effect is the standardised effect
    n_max = math.ceil(2 * two_sample_n(effect, 1.0, power=0.9))
    simulated = simulated_sample_size(mu0, mu1, 1.0, power=POWERS, n_max=n_max, rng=11,
                                      n_trials=4000)
    for power, n_sim in zip(POWERS, simulated, strict=True):
        closed = two_sample_n(effect, 1.0, power=power)
        assert n_sim == pytest.approx(closed, rel=0.10), (power, n_sim, closed)


@pytest.mark.parametrize(("shift", "residual_sd"), [(2.0, 3.5), (3.0, 4.0), (3.5, (3.0, 5.0))])
def test_simulated_n_agrees_with_closed_form_on_a_heterogeneous_pool(shift, residual_sd):
    rng = np.random.default_rng(5)
    mu0 = -6 + rng.normal(0, 2.0, 300)
    mu1 = mu0 + shift * rng.gamma(2.0, 0.5, 300)  # benefit varies, skewed
    sds = np.broadcast_to(residual_sd, (2,))
    sd = _outcome_sd(mu0, mu1, *sds)
    delta = float((mu1 - mu0).mean())
    n_max = math.ceil(2 * two_sample_n(delta, sd, power=0.9))
    simulated = simulated_sample_size(mu0, mu1, residual_sd, power=POWERS, n_max=n_max,
                                      rng=12, n_trials=4000)
    for power, n_sim in zip(POWERS, simulated, strict=True):
        closed = two_sample_n(delta, sd, power=power)
        assert n_sim == pytest.approx(closed, rel=0.10), (power, n_sim, closed)


def test_simulated_power_at_the_closed_form_n_is_the_target():
    n_trials = 4000
    curve = power_curve(np.zeros(40), np.full(40, 0.5), 1.0, n_max=100, rng=3,
                        n_trials=n_trials)
    for power in POWERS:
        n = math.ceil(two_sample_n(0.5, 1.0, power=power))
        monte_carlo_se = math.sqrt(power * (1 - power) / n_trials)
        # the t-test loses about 0.3 points of power to the z-test at n of 60 to 90
        assert abs(curve[n] - power) < 3 * monte_carlo_se + 0.005, (n, curve[n])


def test_power_curve_holds_alpha_without_effect_across_tiles():
    """No effect: every n rejects in about alpha of trials, also beyond the first tile of
    1000 patients, where the cumulative sums are carried over."""
    mu = np.random.default_rng(0).normal(-5, 2, 200)
    curve = power_curve(mu, mu, 3.0, n_max=2500, rng=4, n_trials=1000)
    assert np.isnan(curve[:2]).all()
    assert curve.shape == (2501,)
    assert np.nanmean(curve) == pytest.approx(0.05, abs=0.01)
    assert np.nanmax(np.abs(curve[2:] - 0.05)) < 0.035  # 1000 trials: SE 0.007


def test_power_curve_does_not_depend_on_n_max():
    """Common random numbers: trial i's first n patients are the same whatever n_max."""
    mu0 = np.random.default_rng(0).normal(-5, 2, 80)
    short = power_curve(mu0, mu0 + 1, 3.0, n_max=300, rng=9, n_trials=600)
    long = power_curve(mu0, mu0 + 1, 3.0, n_max=1600, rng=9, n_trials=600)
    np.testing.assert_array_equal(short[2:], long[2:301])


def test_power_curve_from_a_generator_is_reproducible():
    first = power_curve(np.zeros(20), np.ones(20), 2.0, n_max=50,
                        rng=np.random.default_rng(1), n_trials=300)
    second = power_curve(np.zeros(20), np.ones(20), 2.0, n_max=50,
                         rng=np.random.default_rng(1), n_trials=300)
    np.testing.assert_array_equal(first, second)


def test_simulated_sample_size_without_effect_is_none():
    mu = np.linspace(-8, -2, 30)
    assert simulated_sample_size(mu, mu, 4.0, power=0.8, n_max=400, rng=0,
                                 n_trials=300) is None
    assert simulated_sample_size(mu, mu, 4.0, power=POWERS, n_max=400, rng=0,
                                 n_trials=300) == (None, None)


def test_simulated_sample_size_is_none_when_n_max_is_too_small():
    n = simulated_sample_size(np.zeros(10), np.full(10, 0.5), 1.0, power=0.8, n_max=30,
                              rng=0, n_trials=300)
    assert n is None


@pytest.mark.parametrize("bad", [
    {"mu1": np.zeros(9)}, {"mu1": np.r_[np.zeros(9), np.nan]}, {"residual_sd": 0.0},
    {"residual_sd": (1.0, 2.0, 3.0)}, {"n_max": 1},
])
def test_power_curve_rejects_bad_input(bad):
    kwargs = {"mu0": np.zeros(10), "mu1": np.ones(10), "residual_sd": 1.0, "n_max": 20,
              "rng": 0, **bad}
    with pytest.raises(ValueError):
        power_curve(**kwargs)


# --------------------------------------------------------------------------- thresholds

def test_threshold_grid_spans_the_unenriched_trial_to_the_90th_percentile():
    score = np.random.default_rng(0).normal(size=500)
    grid = threshold_grid(score)
    assert grid.size == 20
    assert grid[0] == pytest.approx(np.quantile(score, 0.045))  # the first step above all
    assert grid[-1] == pytest.approx(np.quantile(score, 0.9))
    assert (np.diff(grid) > 0).all()


def test_threshold_grid_drops_tied_thresholds():
    grid = threshold_grid(np.r_[np.zeros(50), np.arange(1, 51)], n=20)
    assert grid.size < 20
    assert len(set(grid)) == grid.size


# --------------------------------------------------------------------------- table

@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Benefit rises with the score up to its median, then stays flat."""
    score, mu0, mu1 = _pool(400, saturate=0.5)
    return enrichment_table(score, mu0, mu1, 3.5, thresholds=threshold_grid(score, 10),
                            seed=7, n_trials=600, n_bootstrap=300)


def test_table_first_row_is_the_unenriched_trial(table):
    first = table.iloc[0]
    assert first["threshold"] == -np.inf
    assert first["fraction_screened_out"] == 0
    assert first["n_enrolled_pool"] == 400
    for p in POWERS:
        assert first[power_column("randomised_ratio", p)] == 1
        assert first[power_column("screened_ratio", p)] == 1
        assert first[power_column("total_screened", p)] == \
            first[power_column("total_randomised", p)]
    assert len(table) == 11


def test_table_has_the_documented_columns(table):
    for p in POWERS:
        for name in ("n_per_arm_{}_closed", "n_per_arm_{}_simulated", "total_randomised_{}",
                     "total_screened_{}", "randomised_ratio_{}", "screened_ratio_{}"):
            assert name.format(f"{100 * p:g}") in table
    assert {"threshold", "fraction_screened_out", "n_enrolled_pool", "effect",
            "effect_ci_low", "effect_ci_high", "outcome_sd", "n_max", "note"} <= set(table)
    assert table.attrs["powers"] == POWERS


def test_table_effect_and_sizes_follow_the_benefit(table):
    """Benefit rises with the score: the effect rises with t, n per arm falls, and once the
    benefit is flat (above the median) the patients to screen rise."""
    assert (np.diff(table["fraction_screened_out"]) >= 0).all()
    assert (np.diff(table["effect"]) >= -1e-12).all()
    assert table["effect"].iloc[-1] > table["effect"].iloc[0] + 0.5
    for p in POWERS:
        closed = table[power_column("n_per_arm", p) + "_closed"].to_numpy()
        simulated = table[power_column("n_per_arm", p) + "_simulated"].to_numpy()
        assert (np.diff(closed[1:]) <= 1).all()  # falls, then flat (within rounding up)
        assert simulated[-1] < 0.7 * simulated[0]
        assert pd.Series(simulated).corr(table["threshold"].clip(lower=-1), "spearman") < -0.8
        np.testing.assert_allclose(simulated, closed, rtol=0.2)
        screened = table[power_column("total_screened", p)].to_numpy()
        assert screened[-1] > 2 * np.min(screened)
        randomised = table[power_column("total_randomised", p)].to_numpy()
        np.testing.assert_allclose(screened, randomised / (1 - table["fraction_screened_out"]))
        np.testing.assert_allclose(table[power_column("randomised_ratio", p)],
                                   randomised / randomised[0])


def test_table_sizes_follow_the_closed_form_of_its_outcome_sd(table):
    for row in table.itertuples():
        expected = math.ceil(two_sample_n(row.effect, row.outcome_sd, power=0.8, t_test=True))
        assert row.n_per_arm_80_closed == expected


def test_table_ci_contains_the_effect(table):
    assert (table["effect_ci_low"] <= table["effect"]).all()
    assert (table["effect"] <= table["effect_ci_high"]).all()
    # the benefit varies among everyone, and is constant (3 points) above the median score
    assert table["effect_ci_high"].iloc[0] - table["effect_ci_low"].iloc[0] > 0.1
    flat = table["fraction_screened_out"] > 0.55
    np.testing.assert_allclose(table.loc[flat, ["effect_ci_low", "effect_ci_high"]], 3.0)


def test_table_is_reproducible_with_its_seed(table):
    score, mu0, mu1 = _pool(400, saturate=0.5)
    kwargs = {"thresholds": threshold_grid(score, 10), "n_trials": 600, "n_bootstrap": 300}
    pd.testing.assert_frame_equal(enrichment_table(score, mu0, mu1, 3.5, seed=7, **kwargs),
                                  table)
    other = enrichment_table(score, mu0, mu1, 3.5, seed=8, **kwargs)
    assert not other["effect_ci_low"].equals(table["effect_ci_low"])


def test_table_does_not_depend_on_the_order_of_patients():
    score, mu0, mu1 = _pool(120, seed=2)
    shuffle = np.random.default_rng(0).permutation(120)
    kwargs = {"thresholds": [0.2, 0.6], "seed": 3, "n_trials": 300, "n_bootstrap": 0}
    a = enrichment_table(score, mu0, mu1, 3.5, **kwargs)
    b = enrichment_table(score[shuffle], mu0[shuffle], mu1[shuffle], 3.5, **kwargs)
    pd.testing.assert_frame_equal(a, b)


def test_table_without_effect_gives_no_finite_size():
    score, mu0, _ = _pool(60)
    table = enrichment_table(score, mu0, mu0, 4.0, thresholds=[0.3, 0.7], seed=0,
                             n_trials=200, n_bootstrap=100, n_max_cap=300)
    for p in POWERS:
        assert (table[power_column("n_per_arm", p) + "_closed"] == np.inf).all()
        assert table[power_column("n_per_arm", p) + "_simulated"].isna().all()
        assert table[power_column("total_screened", p)].isna().all()
    assert (table["n_max"] == 300).all()
    assert table["note"].str.startswith("no effect among the enrolled").all()


def test_table_leaves_thresholds_with_too_few_patients_without_sizes():
    score, mu0, mu1 = _pool(40)
    table = enrichment_table(score, mu0, mu1, 3.5, thresholds=[np.sort(score)[-3], 2.0],
                             seed=0, n_trials=200, n_bootstrap=100)
    few, none = table.iloc[1], table.iloc[2]
    assert few["n_enrolled_pool"] == 3 < enrichment.MIN_ENROLLED
    assert np.isfinite(few["effect"])
    assert none["n_enrolled_pool"] == 0
    assert np.isnan(none["effect"])
    for row in (few, none):
        assert np.isnan(row["n_per_arm_80_closed"]) and np.isnan(row["total_screened_90"])
        assert row["note"]
    assert table.iloc[0]["note"] == ""


def test_table_n_max_follows_factor_and_cap():
    score, mu0, mu1 = _pool(200)
    kwargs = {"thresholds": [0.5], "seed": 0, "n_trials": 200, "n_bootstrap": 0}
    table = enrichment_table(score, mu0, mu1, 3.5, n_max_factor=2.0, **kwargs)
    closed = [two_sample_n(r.effect, r.outcome_sd, power=0.9, t_test=True)
              for r in table.itertuples()]
    assert list(table["n_max"]) == [math.ceil(2.0 * n) for n in closed]
    capped = enrichment_table(score, mu0, mu1, 3.5, n_max_cap=20, **kwargs)
    assert (capped["n_max"] == 20).all()


@pytest.mark.parametrize("bad", [
    {"thresholds": [np.nan]}, {"powers": ()}, {"powers": (1.2,)}, {"residual_sd": -1.0},
    {"score": np.zeros(5)},
])
def test_table_rejects_bad_input(bad):
    score, mu0, mu1 = _pool(20)
    kwargs = {"score": score, "mu0": mu0, "mu1": mu1, "residual_sd": 3.0,
              "thresholds": [0.5], "seed": 0, **bad}
    with pytest.raises(ValueError):
        enrichment_table(**kwargs)


# --------------------------------------------------------------------------- figure

def test_enrichment_plot_writes_a_png(tmp_path, table):
    path = figures.enrichment_plot(table, path=tmp_path / "sub" / "enrichment.png",
                                   title="Enrichment by predicted benefit", power=0.9)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 300 < width < 900 and 250 < height < 700


def test_enrichment_plot_without_any_size_still_draws(tmp_path):
    score, mu0, _ = _pool(30)
    table = enrichment_table(score, mu0, mu0, 4.0, thresholds=[0.5], seed=0, n_trials=100,
                             n_bootstrap=0, n_max_cap=50)
    assert figures.enrichment_plot(table, path=tmp_path / "none.png", title="No effect").exists()


def test_enrichment_plot_needs_the_power_in_the_table(tmp_path, table):
    with pytest.raises(ValueError, match="total_screened_95"):
        figures.enrichment_plot(table, path=tmp_path / "x.png", title="t", power=0.95)
