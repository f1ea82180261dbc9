"""Metrics, bootstrap intervals, decision curves and sample size: hand-checked numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import special
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from csf_responder.metrics import (
    METRICS,
    anticipated_r2_cs,
    bootstrap_metrics,
    classification_metrics,
    cv_metrics,
    decision_curve,
    permutation_p_value,
    riley_sample_size,
)
from csf_responder.validation import auc_with_ci

# Six patients; at threshold 0.5: TP = 2 (0.9, and 0.5 itself counts as positive),
# FP = 1 (0.7), FN = 0, TN = 3.
Y6 = np.array([1, 1, 0, 0, 0, 0])
P6 = np.array([0.9, 0.5, 0.7, 0.4, 0.2, 0.1])


def _simulated(n: int, seed: int, *, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a 3-repeat out-of-fold matrix with some signal."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    return y, special.expit(signal * (y - 0.5) + rng.normal(0, 1, (3, n)))


def test_threshold_metrics_by_hand():
    m = classification_metrics(Y6, P6, threshold=0.5)
    assert m["sensitivity"] == pytest.approx(2 / 2)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(3 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 3 / 4) / 2)
    # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 6 / sqrt(3 * 2 * 4 * 3)
    assert m["mcc"] == pytest.approx(6 / np.sqrt(72))
    # 0.9 outranks all 4 negatives, 0.5 outranks 3 of them: 7 of 8 pairs
    assert m["roc_auc"] == pytest.approx(7 / 8)
    assert list(m) == list(METRICS)


def test_brier_by_hand():
    # squared errors 0.01 + 0.25 + 0.49 + 0.16 + 0.04 + 0.01 = 0.96, over 6 patients
    assert classification_metrics(Y6, P6, threshold=0.5)["brier"] == pytest.approx(0.16)


def test_undefined_threshold_metrics_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(Y6, P6, threshold=0.95)  # nobody predicted positive
    assert np.isnan(m["ppv"]) and np.isnan(m["mcc"])
    assert m["sensitivity"] == 0 and m["npv"] == pytest.approx(4 / 6)


def test_one_class_gives_nan_not_an_exception():
    y = np.zeros(6, int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, P6, threshold=0.5)
        cv = cv_metrics(y, np.vstack([P6, P6]), threshold=0.5)
        boot = bootstrap_metrics(y, P6[None], threshold=0.5, n_bootstrap=20, ci_level=0.95,
                                 seed=0)
    for name in ("roc_auc", "pr_auc", "calibration_intercept", "calibration_slope",
                 "sensitivity", "balanced_accuracy", "mcc"):
        assert np.isnan(m[name]) and np.isnan(cv[name]) and np.isnan(boot[name].estimate)
    assert m["specificity"] == pytest.approx(3 / 6) and m["ppv"] == 0  # 3 false positives
    assert m["brier"] == pytest.approx(np.mean(P6**2))


def test_calibration_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(0)
    lp = rng.normal(-0.5, 1.5, 20_000)
    y = (rng.random(lp.size) < special.expit(lp)).astype(int)
    calibrated = classification_metrics(y, special.expit(lp), threshold=0.5)
    assert calibrated["calibration_slope"] == pytest.approx(1, abs=0.05)
    assert calibrated["calibration_intercept"] == pytest.approx(0, abs=0.05)
    overconfident = classification_metrics(y, special.expit(2 * lp), threshold=0.5)
    assert overconfident["calibration_slope"] == pytest.approx(0.5, abs=0.03)


def test_calibration_slope_matches_an_unpenalised_logistic_fit():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = special.expit(1.5 * (y - 0.5) + rng.normal(0, 1.2, 60))
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(special.logit(p)[:, None], y)
    m = classification_metrics(y, p, threshold=0.5)
    assert m["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-5)
    # calibration-in-the-large solves sum(y) = sum(expit(a + logit(p)))
    assert special.expit(m["calibration_intercept"] + special.logit(p)).sum() == pytest.approx(
        y.sum(), rel=1e-8)


def test_calibration_slope_is_nan_under_perfect_separation():
    m = classification_metrics(Y6, np.array([0.9, 0.8, 0.7, 0.4, 0.2, 0.1]), threshold=0.5)
    assert np.isnan(m["calibration_slope"]) and np.isfinite(m["calibration_intercept"])


def test_pr_auc_equals_sklearn_average_precision_with_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    p = np.round(rng.random(50) * 0.6 + 0.4 * y, 1)  # many ties
    m = classification_metrics(y, p, threshold=0.5)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))


def test_cv_metrics_average_the_repeats():
    y, oof = _simulated(20, seed=3)
    per_repeat = [classification_metrics(y, row, threshold=0.5) for row in oof]
    cv = cv_metrics(y, oof, threshold=0.5)
    for name in METRICS:
        assert cv[name] == pytest.approx(np.nanmean([m[name] for m in per_repeat]))


def test_bootstrap_interval_brackets_estimate_and_narrows_with_n():
    def width(n: int) -> float:
        y, oof = _simulated(n, seed=4)
        ci = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=300, ci_level=0.95, seed=0)
        for name in ("roc_auc", "brier", "sensitivity", "calibration_intercept"):
            assert ci[name].low <= ci[name].estimate <= ci[name].high
        assert ci["brier"].estimate == pytest.approx(cv_metrics(y, oof, threshold=0.5)["brier"])
        return ci["roc_auc"].high - ci["roc_auc"].low

    assert width(400) < width(40) / 2


def test_bootstrap_auc_interval_is_that_of_auc_with_ci():
    y, oof = _simulated(33, seed=5)
    ours = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=200, ci_level=0.9, seed=7)
    theirs = auc_with_ci(y, oof, n_bootstrap=200, ci_level=0.9, seed=7)
    assert (ours["roc_auc"].low, ours["roc_auc"].high) == pytest.approx((theirs.low, theirs.high))


def test_delta_auc_against_itself_is_exactly_zero():
    y, oof = _simulated(33, seed=6)
    ci = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=200, ci_level=0.95, seed=0,
                           reference_oof=oof.copy())["delta_auc"]
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_paired_delta_interval_is_narrower_than_the_auc_interval():
    """With a reference close to the model, pairing cancels the shared patient sampling.

    Unpaired resamples would give a delta interval about sqrt(2) times the AUC's width.
    """
    y, oof = _simulated(40, seed=8, signal=2.0)
    reference = oof + np.random.default_rng(9).normal(0, 0.05, oof.shape)
    ci = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=300, ci_level=0.95, seed=0,
                           reference_oof=reference)
    delta, auc = ci["delta_auc"], ci["roc_auc"]
    assert delta.low <= delta.estimate <= delta.high
    assert delta.high - delta.low < (auc.high - auc.low) / 2


def test_decision_curve_by_hand_and_reference_strategies():
    curve = decision_curve(Y6, P6, thresholds=[0.0, 0.5])
    assert list(curve.columns) == ["threshold", "net_benefit", "treat_all", "treat_none"]
    assert curve["treat_all"].iloc[0] == pytest.approx(Y6.mean())  # prevalence at t = 0
    # t = 0.5: TP = 2, FP = 1 of 6, odds 1 -> 2/6 - 1/6; treat all: 2/6 - 4/6
    assert curve["net_benefit"].iloc[1] == pytest.approx(1 / 6)
    assert curve["treat_all"].iloc[1] == pytest.approx(-2 / 6)
    assert (curve["treat_none"] == 0).all()


def test_decision_curve_of_a_perfect_model_is_the_prevalence():
    thresholds = np.linspace(0, 0.95, 20)
    curve = decision_curve(Y6, Y6.astype(float), thresholds=thresholds)
    np.testing.assert_allclose(curve["net_benefit"], Y6.mean())


def test_decision_curve_averages_repeats():
    other = P6[::-1].copy()
    both = decision_curve(Y6, np.vstack([P6, other]), thresholds=[0.3, 0.6])["net_benefit"]
    single = [decision_curve(Y6, row, thresholds=[0.3, 0.6])["net_benefit"] for row in (P6, other)]
    np.testing.assert_allclose(both, (single[0] + single[1]) / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        decision_curve(Y6, P6, thresholds=[1.0])


def test_riley_sample_size_reproduces_the_pmsampsize_example():
    """pmsampsize example (Riley et al. BMJ 2020;368:m441): R2cs 0.288, 24 parameters, 17.4%.

    By hand: (1) 24 / (-0.1 ln(1 - 0.288 / 0.9)) = 622.3 -> 623;
    max R2cs = 1 - exp(2 (0.174 ln 0.174 + 0.826 ln 0.826)) = 0.6032,
    S = 0.288 / (0.288 + 0.05 * 0.6032) = 0.9052, (2) 24 / ((S - 1) ln(1 - 0.288 / S)) -> 662;
    (3) (1.96 / 0.05)^2 * 0.174 * 0.826 = 220.9 -> 221. Minimum 662.
    """
    n = riley_sample_size(n_parameters=24, prevalence=0.174, r2_cs=0.288)
    assert (n["criterion_1"], n["criterion_2"], n["criterion_3"]) == (623, 662, 221)
    assert n["minimum"] == 662
    assert n["max_r2_cs"] == pytest.approx(0.6032, abs=1e-4)
    assert n["shrinkage_criterion_2"] == pytest.approx(0.9052, abs=1e-4)
    with pytest.raises(ValueError, match="r2_cs"):
        riley_sample_size(n_parameters=24, prevalence=0.174, r2_cs=0.7)


def test_anticipated_r2_cs_matches_a_large_simulation():
    """The cstat2rsq simulation (Riley et al. Stat Med 2021;40:859) with 200,000 patients."""
    auc, phi, n = 0.8, 0.4, 200_000
    rng = np.random.default_rng(0)
    y = (np.arange(n) < phi * n).astype(int)
    lp = rng.normal(np.sqrt(2) * 0.8416212335729143 * y, 1.0)  # Phi^-1(0.8) = 0.8416
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(lp[:, None], y)
    q = fit.predict_proba(lp[:, None])[:, 1]
    ll_model = np.sum(y * np.log(q) + (1 - y) * np.log(1 - q))
    ll_null = n * (phi * np.log(phi) + (1 - phi) * np.log(1 - phi))
    simulated = 1 - np.exp(2 * (ll_null - ll_model) / n)
    assert anticipated_r2_cs(auc, phi) == pytest.approx(simulated, abs=0.005)
    assert anticipated_r2_cs(0.5, phi) == pytest.approx(0, abs=1e-12)
    assert anticipated_r2_cs(0.7, phi) < anticipated_r2_cs(0.8, phi)


def test_permutation_p_value_counts_ties_as_extreme():
    # two of four null values are >= 0.8: (1 + 2) / (1 + 4)
    assert permutation_p_value(0.8, [0.5, 0.8, 0.9, 0.1]) == pytest.approx(3 / 5)
    assert permutation_p_value(1.0, np.zeros(99)) == pytest.approx(1 / 100)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        cv_metrics(Y6, np.ones((2, 5)) / 2, threshold=0.5)
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics(np.array([0, 2, 1]), np.ones(3) / 2, threshold=0.5)
