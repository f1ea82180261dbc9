"""Metrics, bootstrap intervals, decision curves and sample size: hand-checked numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import special
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from csf_responder.metrics import (
    METRICS,
    MetricCI,
    anticipated_r2_cs,
    bootstrap_delta_auc,
    bootstrap_metrics,
    classification_metrics,
    cv_auc,
    cv_metrics,
    decision_curve,
    permutation_p_value,
    proportion_ci,
    riley_sample_size,
)

# Six patients; at threshold 0.5: TP = 2 (0.9, and 0.5 itself counts as positive),
# FP = 1 (0.7), FN = 0, TN = 3.
Y6 = np.array([1, 1, 0, 0, 0, 0])
P6 = np.array([0.9, 0.5, 0.7, 0.4, 0.2, 0.1])


def _simulated(n: int, seed: int, *, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a 3-repeat out-of-fold matrix with some signal."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    return y, special.expit(signal * (y - 0.5) + rng.normal(0, 1, (3, n)))


def _stratified_folds(y: np.ndarray, n_splits: int, n_repeats: int, seed: int) -> np.ndarray:
    """Test-fold index of each patient in each repeat of stratified K-fold."""
    folds = np.empty((n_repeats, y.size), int)
    for r in range(n_repeats):
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed + r)
        for k, (_, test) in enumerate(splitter.split(np.zeros(y.size), y)):
            folds[r, test] = k
    return folds


def _pair_count_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Fraction of (positive, negative) pairs ranked concordantly, ties counting half."""
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _pair_weighted_auc(y: np.ndarray, p: np.ndarray, folds: np.ndarray,
                       auc=roc_auc_score) -> float:
    """sum_f AUC_f n_pos_f n_neg_f / sum_f n_pos_f n_neg_f, AUC_f computed by ``auc``."""
    num = den = 0.0
    for g in np.unique(folds):
        yf, pf = y[folds == g], p[folds == g]
        pairs = yf.sum() * (yf.size - yf.sum())
        if pairs:
            num += auc(yf, pf) * pairs
            den += pairs
    return num / den if den else np.nan


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


@pytest.mark.parametrize("with_folds", [False, True])
def test_bootstrap_auc_interval_is_that_of_a_plain_loop_over_stratified_resamples(with_folds):
    """The resamples are drawn within each class from ``default_rng(seed)`` (every
    resample's positives, then every resample's negatives); per resample the AUC is
    recomputed by counting pairs (per fold and pair-weighted with folds: duplicated
    patients are ties, folds missing a class in the resample contribute no pairs)."""
    y, oof = _simulated(33, seed=5)
    folds = _stratified_folds(y, 5, oof.shape[0], seed=1) if with_folds else None
    ours = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=200, ci_level=0.9, seed=7,
                             folds=folds)["roc_auc"]
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = (pos[rng.integers(0, pos.size, (200, pos.size))],   # all positives' draws,
             neg[rng.integers(0, neg.size, (200, neg.size))])   # then all negatives'
    boot = []
    for b in range(200):
        idx = np.concatenate([draws[0][b], draws[1][b]])
        if with_folds:
            boot.append(np.nanmean([_pair_weighted_auc(y[idx], row[idx], f[idx],
                                                       auc=_pair_count_auc)
                                    for row, f in zip(oof, folds, strict=True)]))
        else:
            boot.append(np.mean([_pair_count_auc(y[idx], row[idx]) for row in oof]))
    assert (ours.low, ours.high) == pytest.approx(tuple(np.quantile(boot, [0.05, 0.95])))
    assert ours.estimate == pytest.approx(cv_auc(y, oof, folds))


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


def test_fold_aware_auc_is_the_pair_weighted_mean_of_per_fold_aucs():
    rng = np.random.default_rng(10)
    y = rng.permutation(np.r_[np.ones(17, int), np.zeros(26, int)])
    oof = np.round(special.expit(0.8 * (y - 0.5) + rng.normal(0, 1, (4, y.size))), 1)  # ties
    folds = _stratified_folds(y, 5, 4, seed=3)
    folds[1] = rng.integers(0, 6, y.size)  # unbalanced folds, some may lack a class
    expected = np.mean([_pair_weighted_auc(y, row, f) for row, f in zip(oof, folds, strict=True)])
    assert cv_auc(y, oof, folds) == pytest.approx(expected, rel=1e-12)
    assert cv_metrics(y, oof, threshold=0.5, folds=folds)["roc_auc"] == pytest.approx(expected)
    # differs from the pooled AUC, which is what one fold for everybody gives back
    pooled = np.mean([roc_auc_score(y, row) for row in oof])
    assert cv_auc(y, oof) == pytest.approx(pooled)
    assert cv_auc(y, oof, np.zeros_like(folds)) == pytest.approx(pooled)
    assert abs(expected - pooled) > 1e-3
    # every non-AUC metric stays on the pooled predictions
    with_folds = cv_metrics(y, oof, threshold=0.5, folds=folds)
    without = cv_metrics(y, oof, threshold=0.5)
    assert {k: v for k, v in with_folds.items() if k != "roc_auc"} == pytest.approx(
        {k: v for k, v in without.items() if k != "roc_auc"}, nan_ok=True)


def test_prevalence_model_artefact_is_removed_by_the_fold_aware_auc():
    """A model predicting the training prevalence: constant within each test fold.

    12 patients, 5 positive, 3 stratified-like folds of 4: (2 pos, 2 neg), (2, 2), (1, 3).
    Training prevalences: 3/8, 3/8, 4/8, so the fold with fewest positives gets the
    highest prediction. Pooled: 4 positives at 3/8 tie with 4 negatives (4 * 4 * 0.5 = 8),
    the positive at 4/8 beats 4 negatives and ties 3 (4 + 1.5): 13.5 / 35 < 0.5. Within
    each fold everything ties: exactly 0.5.
    """
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0])
    folds = np.repeat([0, 1, 2], 4)
    p = np.array([y[folds != g].mean() for g in folds])
    assert set(p) == {3 / 8, 4 / 8}
    assert cv_auc(y, p) == pytest.approx(13.5 / 35)
    assert cv_auc(y, p, folds) == 0.5
    ci = bootstrap_metrics(y, p[None], threshold=0.5, n_bootstrap=200, ci_level=0.95, seed=0,
                           folds=folds[None])["roc_auc"]
    assert (ci.estimate, ci.low, ci.high) == (0.5, 0.5, 0.5)


def test_fold_aware_auc_is_unbiased_under_the_null_where_the_pooled_one_is_not():
    """Random labels, a real stratified 5-fold split, and a prevalence model with noise:
    the prediction is the training-fold prevalence plus label-independent noise. Within a
    fold the ranking is random, so the within-fold pairs AUC is 0.5 in expectation; the
    pooled AUC inherits the fold offsets, which anti-correlate with the labels
    (Parker et al. 2007)."""
    rng = np.random.default_rng(0)
    n, pooled, aware = 30, [], []
    for draw in range(200):
        y = rng.permutation(np.r_[np.ones(12, int), np.zeros(18, int)])
        folds = _stratified_folds(y, 5, 1, seed=draw)[0]
        p = np.array([y[folds != g].mean() for g in folds]) + rng.normal(0, 0.02, n)
        pooled.append(cv_auc(y, p))
        aware.append(cv_auc(y, p, folds))
    se = np.std(aware) / np.sqrt(len(aware))  # about 0.008
    assert abs(np.mean(aware) - 0.5) < 4 * se
    assert np.mean(pooled) < 0.46  # about 0.42
    assert np.mean(pooled) < np.mean(aware) - 0.04


def test_fold_aware_auc_without_any_within_fold_pair_is_nan_without_warnings():
    y = np.array([1, 1, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(cv_auc(y, [0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]))
        assert cv_auc(y, [0.9, 0.8, 0.2, 0.1], [0, 1, 0, 1]) == 1.0
    with pytest.raises(ValueError, match="folds has shape"):
        cv_auc(y, [0.9, 0.8, 0.2, 0.1], [0, 1, 0])
    with pytest.raises(ValueError, match="integer"):
        cv_auc(y, [0.9, 0.8, 0.2, 0.1], [0, 0.5, 0, 1])


def test_bootstrap_of_a_perfect_within_fold_ranking_is_one_one():
    """Positives above negatives inside each fold, but a fold offset makes the pooled AUC < 1."""
    y = np.r_[np.ones(12, int), np.zeros(17, int)]
    folds = _stratified_folds(y, 5, 5, seed=0)
    oof = y + folds * 2.0  # fold g: negatives at 2g, positives at 2g + 1
    oof = oof / oof.max()
    ci = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=300, ci_level=0.95, seed=0,
                           folds=folds)
    assert (ci["roc_auc"].estimate, ci["roc_auc"].low, ci["roc_auc"].high) == (1.0, 1.0, 1.0)
    assert cv_auc(y, oof) < 0.9


@pytest.mark.parametrize("with_folds", [False, True])
def test_bootstrap_delta_auc_is_that_of_bootstrap_metrics(with_folds):
    y, oof = _simulated(29, seed=11, signal=1.5)
    reference = _simulated(29, seed=12, signal=0.5)[1]
    folds = _stratified_folds(y, 5, oof.shape[0], seed=4) if with_folds else None
    full = bootstrap_metrics(y, oof, threshold=0.5, n_bootstrap=1500, ci_level=0.9, seed=3,
                             folds=folds, reference_oof=reference)
    only = bootstrap_delta_auc(y, oof, reference, folds=folds, n_bootstrap=1500, ci_level=0.9,
                               seed=3)
    assert only == full["delta_auc"]  # exactly: same resamples, same arithmetic
    assert only.estimate == pytest.approx(cv_auc(y, oof, folds) - cv_auc(y, reference, folds))
    assert only.low < only.estimate < only.high
    other_seed = bootstrap_delta_auc(y, oof, reference, folds=folds, n_bootstrap=1500,
                                     ci_level=0.9, seed=4)
    assert (other_seed.low, other_seed.high) != (only.low, only.high)
    with pytest.raises(ValueError, match="reference_oof has shape"):
        bootstrap_delta_auc(y, oof, reference[:2], n_bootstrap=10, ci_level=0.9, seed=0)


def test_proportion_ci_is_the_wilson_interval():
    # 5 of 10, 95%: centre 0.5, half-width z sqrt(0.025 + z^2/400) / (1 + z^2/10) = 0.2634
    ci = proportion_ci(5, 10, ci_level=0.95)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.5, 0.2366, 0.7634), abs=1e-4)
    assert proportion_ci(0, 10, ci_level=0.95).low == 0.0
    assert proportion_ci(10, 10, ci_level=0.95).high == pytest.approx(1.0)
    assert np.isnan(proportion_ci(0, 0, ci_level=0.95).estimate)
    assert str(MetricCI(0.5, 0.25, 0.75)) == "0.50 (0.25-0.75)"


def test_metrics_does_not_import_validation():
    import subprocess
    import sys

    code = ("import sys, csf_responder.metrics as m; "
            "assert 'csf_responder.validation' not in sys.modules; "
            "assert m.MetricCI.__module__ == 'csf_responder.metrics'")
    subprocess.run([sys.executable, "-c", code], check=True)
