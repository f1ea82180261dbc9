"""Performance metrics with bootstrap intervals, decision curves and sample-size criteria.

Labels ``y`` have shape (n_patients,) and values in {0, 1}. Probabilities are either one
vector of shape (n_patients,) or the out-of-fold matrix ``oof`` of shape
(n_repeats, n_patients) from :func:`csf_responder.validation.repeated_cv`. A patient is
predicted positive when ``p >= threshold``. A metric that is undefined for the data
(PPV without predicted positives, AUC with one class, calibration slope under complete
separation) is NaN, never a warning or an exception.

Fold-aware AUC. Pooling the out-of-fold predictions of all test folds and computing one
ROC AUC per repeat is biased below 0.5 under the null at small N: with stratified folds
the class balance of a training fold is the complement of that of its test fold, so
fold-level offsets of the predictions (e.g. a model that predicts the training
prevalence) anti-correlate with the labels (Parker BJ, Gunter S, Bedo J. Stratification
bias in low signal microarray studies. BMC Bioinformatics 2007;8:326; Airola A, Pahikkala
T, Waegeman W, De Baets B, Salakoski T. An experimental comparison of cross-validation
techniques for estimating the area under the ROC curve. Comput Stat Data Anal
2011;55:1828-1844). Given ``folds``, the test-fold index of every patient in every
repeat (same shape as ``oof``), ``roc_auc`` (and ``delta_auc``) is instead the AUC over
the (positive, negative) pairs that sit in the same test fold: sum over folds of the
Mann-Whitney U over sum over folds of n_pos * n_neg, a pair-weighted average of the
per-fold AUCs, which is 0.5 in expectation under the null. Only the AUC is fold-aware;
the other metrics (PR AUC, Brier score, calibration, threshold metrics) stay on the
pooled out-of-fold predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from numpy.typing import ArrayLike
from scipy import special, stats

__all__ = [
    "METRICS", "MetricCI", "anticipated_r2_cs", "bootstrap_delta_auc", "bootstrap_metrics",
    "classification_metrics", "cv_auc", "cv_metrics", "decision_curve",
    "permutation_p_value", "proportion_ci", "riley_sample_size",
]

#: Names of the metrics, in the order they are returned.
METRICS = ("roc_auc", "pr_auc", "brier", "calibration_intercept", "calibration_slope",
           "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "mcc")

_CLIP = 1e-6  # probabilities are clipped to [_CLIP, 1 - _CLIP] before the logit
_CHUNK = 1000  # bootstrap resamples evaluated at once (bounds memory)


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.2f} ({self.low:.2f}-{self.high:.2f})"


def proportion_ci(successes: int, total: int, *, ci_level: float) -> MetricCI:
    """A proportion with its Wilson score interval (NaN when ``total`` is 0)."""
    if total == 0:
        return MetricCI(np.nan, np.nan, np.nan)
    p = successes / total
    z = stats.norm.ppf(1 - (1 - ci_level) / 2)
    centre = (p + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z * np.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return MetricCI(p, max(0.0, centre - half), min(1.0, centre + half))


def _check(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int (n,) and probabilities as float (n_rows, n); ValueError if they clash."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be a 1-D array of 0/1 labels")
    p = np.asarray(p, dtype=float)
    if p.ndim not in (1, 2) or p.shape[-1] != y.size:
        raise ValueError(f"probabilities of shape {p.shape} do not match {y.size} labels")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite (no NaN)")
    return y.astype(int), np.atleast_2d(p)


def _check_folds(folds: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Test-fold indices as int of ``shape`` (that of the checked probabilities), or None."""
    if folds is None:
        return None
    f = np.atleast_2d(np.asarray(folds))
    if f.shape != shape:
        raise ValueError(f"folds has shape {f.shape}, the probabilities have shape {shape}")
    if not (np.issubdtype(f.dtype, np.integer)
            or (np.issubdtype(f.dtype, np.floating) and np.isfinite(f).all()
                and (f == np.round(f)).all())):
        raise ValueError("folds must hold integer test-fold indices")
    return f.astype(int)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float, NaN where ``den`` is 0 (no warning)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; NaN (not a warning) where every value is NaN."""
    defined = ~np.isnan(a)
    return _divide(np.where(defined, a, 0.0).sum(axis), defined.sum(axis))


def _auc(y: np.ndarray, P: np.ndarray, folds: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC of each row of ``P`` (m, n): Mann-Whitney form, ties count half.

    Without ``folds`` the AUC of the pooled row. With ``folds`` (m, n), the test-fold index
    of each entry, the within-fold pairs AUC: sum over folds g of U_g over sum over folds
    of n_pos_g * n_neg_g, where U_g = (sum of the positives' ranks among the entries of
    fold g) - n_pos_g (n_pos_g + 1) / 2. A fold without a positive or without a negative
    contributes no pairs (U_g = 0); a row without any within-fold pair is NaN.
    """
    if folds is None:
        n_pos = int(y.sum())
        n_neg = y.size - n_pos
        ranks = stats.rankdata(P, axis=1)
        return _divide(ranks[:, y == 1].sum(axis=1) - n_pos * (n_pos + 1) / 2, n_pos * n_neg)
    positive = y == 1
    u = np.zeros(P.shape[0])
    pairs = np.zeros(P.shape[0])
    for g in np.unique(folds):
        in_g = folds == g
        ranks = stats.rankdata(np.where(in_g, P, np.nan), axis=1, nan_policy="omit")
        pos_g = in_g & positive
        n_pos = pos_g.sum(axis=1)
        n_neg = in_g.sum(axis=1) - n_pos
        u += np.where(pos_g, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2
        pairs += n_pos * n_neg
    return _divide(u, pairs)


def _average_precision(y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Average precision of each row, ties handled as ``sklearn.metrics.average_precision_score``.

    AP = sum over distinct thresholds of (recall step) x precision; a positive's precision
    is the one at the end of its block of tied scores.
    """
    n_pos, n = int(y.sum()), y.size
    if n_pos in (0, n):
        return np.full(P.shape[0], np.nan)
    order = np.argsort(-P, axis=1, kind="stable")
    scores = np.take_along_axis(P, order, axis=1)
    hits = y[order]
    tp = np.cumsum(hits, axis=1)
    is_end = np.ones(P.shape, dtype=bool)
    is_end[:, :-1] = scores[:, :-1] != scores[:, 1:]
    end = np.where(is_end, np.arange(n), n - 1)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]  # end of each tie block
    precision = np.take_along_axis(tp, end, axis=1) / (end + 1)
    return (hits * precision).sum(axis=1) / n_pos


def _newton_logistic(y: np.ndarray, X: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Unpenalised logistic MLE of ``y ~ offset + X @ beta`` for a batch of problems.

    ``X`` has shape (m, n, k) and ``offset`` (m, n); returns beta of shape (m, k), NaN for
    a problem that has not converged. Newton-Raphson from beta = 0 with step halving, so
    the log-likelihood never decreases (it is concave; the MLE must exist).
    """
    Xt = X.transpose(0, 2, 1)

    def loglik(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = offset + (X @ beta[..., None])[..., 0]
        return (y * eta - np.logaddexp(0.0, eta)).sum(axis=1), eta

    beta = np.zeros((X.shape[0], X.shape[2]))
    ll, eta = loglik(beta)
    converged = np.zeros(X.shape[0], dtype=bool)
    for _ in range(50):
        mu = special.expit(eta)
        grad = Xt @ (y - mu)[..., None]
        hess = (Xt * (mu * (1 - mu))[:, None, :]) @ X
        step = np.linalg.solve(hess, grad)[..., 0]
        scale = np.ones(X.shape[0])
        for _ in range(30):
            candidate = beta + scale[:, None] * step
            new_ll, eta = loglik(candidate)
            worse = new_ll < ll - 1e-12 * np.abs(ll)
            if not worse.any():
                break
            scale[worse] /= 2
        beta, ll = candidate, new_ll
        converged = np.abs(step).max(axis=1) < 1e-8
        if converged.all():
            break
    return np.where(converged[:, None], beta, np.nan)


def _calibration(y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibration intercept and slope of each row of ``P`` (m, n).

    Intercept: ``a`` in logit P(y=1) = a + logit(p) (calibration-in-the-large).
    Slope: ``b`` in logit P(y=1) = a + b logit(p). The slope is NaN under (quasi-)complete
    separation, where its MLE does not exist; both are NaN with one class only.
    """
    m = P.shape[0]
    if y.min() == y.max():
        return np.full(m, np.nan), np.full(m, np.nan)
    lp = special.logit(np.clip(P, _CLIP, 1 - _CLIP))
    intercept = _newton_logistic(y, np.ones((m, y.size, 1)), lp)[:, 0]
    pos, neg = lp[:, y == 1], lp[:, y == 0]
    separated = (neg.max(axis=1) <= pos.min(axis=1)) | (pos.max(axis=1) <= neg.min(axis=1))
    slope = np.full(m, np.nan)
    fit = lp[~separated]
    if fit.size:  # slope = 1 + beta_1 with logit(p) as offset: Newton starts at slope 1
        design = np.stack([np.ones_like(fit), fit], axis=2)
        slope[~separated] = 1.0 + _newton_logistic(y, design, fit)[:, 1]
    return intercept, slope


def _metric_rows(y: np.ndarray, probs: np.ndarray, threshold: float,
                 folds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of ``probs`` (m, n); arrays of shape (m,).

    ``folds`` (m, n), the test-fold indices, makes ``roc_auc`` the within-fold pairs AUC
    (see :func:`_auc`); every other metric uses the pooled row.
    """
    pred = probs >= threshold
    tp = (pred & (y == 1)).sum(axis=1)
    fp = (pred & (y == 0)).sum(axis=1)
    fn = int(y.sum()) - tp
    tn = int(y.size - y.sum()) - fp
    sens, spec = _divide(tp, tp + fn), _divide(tn, tn + fp)
    intercept, slope = _calibration(y, probs)
    mcc_den = np.sqrt((tp + fp).astype(float) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "roc_auc": _auc(y, probs, folds),
        "pr_auc": _average_precision(y, probs),
        "brier": ((probs - y) ** 2).mean(axis=1),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
        "mcc": _divide(tp * tn - fp * fn, mcc_den),
    }


def classification_metrics(y: ArrayLike, p: ArrayLike, *, threshold: float) -> dict[str, float]:
    """Discrimination, calibration and threshold metrics of one vector of probabilities.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
        Observed class, 1 = good responder.
    p : array-like of shape (n_patients,)
        Predicted probability of class 1.
    threshold : float
        A patient is predicted positive when ``p >= threshold``.

    Returns
    -------
    dict of str to float
        Keys :data:`METRICS`: ``roc_auc``; ``pr_auc`` (average precision); ``brier``;
        ``calibration_intercept`` (logistic recalibration with logit(p) as offset) and
        ``calibration_slope`` (logistic regression of y on logit(p)), both unpenalised
        with p clipped to [1e-6, 1 - 1e-6]; ``balanced_accuracy``, ``sensitivity``,
        ``specificity``, ``ppv``, ``npv`` and ``mcc`` at ``threshold``. NaN where
        undefined (unlike scikit-learn, which reports 0 for an undefined MCC).
    """
    y, P = _check(y, p)
    if np.ndim(p) != 1:
        raise ValueError("p must be 1-D; use cv_metrics for out-of-fold matrices")
    return {name: float(values[0]) for name, values in _metric_rows(y, P, threshold).items()}


def cv_metrics(y: ArrayLike, oof: ArrayLike, *, threshold: float,
               folds: ArrayLike | None = None) -> dict[str, float]:
    """Mean over repeats of :func:`classification_metrics` of each repeat.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
        Out-of-fold probabilities, one row per repeat of cross-validation.
    threshold : float
    folds : array-like of int, same shape as ``oof``, optional
        Test-fold index of each patient in each repeat. With it, ``roc_auc`` of a repeat
        is the within-fold pairs AUC (see :func:`cv_auc`), which avoids the pooling bias
        below 0.5 of stratified cross-validation at small N (Parker et al. 2007, BMC
        Bioinformatics 8:326; Airola et al. 2011, Comput Stat Data Anal 55:1828-1844).
        The other metrics always use the pooled out-of-fold predictions.

    Returns
    -------
    dict of str to float
        Keys :data:`METRICS`; repeats where a metric is undefined are skipped (NaN mean).
    """
    y, P = _check(y, oof)
    F = _check_folds(folds, P.shape)
    return {name: float(_nanmean(v, axis=0))
            for name, v in _metric_rows(y, P, threshold, F).items()}


def cv_auc(y: ArrayLike, oof: ArrayLike, folds: ArrayLike | None = None) -> float:
    """Cross-validated ROC AUC: the mean over repeats of each repeat's AUC.

    Without ``folds``, the AUC of each repeat's pooled out-of-fold predictions, which is
    biased below 0.5 under the null at small N with stratified folds (Parker BJ et al.
    BMC Bioinformatics 2007;8:326; Airola A et al. Comput Stat Data Anal
    2011;55:1828-1844). With ``folds``, the within-fold pairs AUC: over all (positive,
    negative) pairs in the same test fold, the fraction ranked concordantly (ties count
    half), i.e. sum over folds of the Mann-Whitney U over sum over folds of
    n_pos * n_neg, a pair-weighted average of the per-fold AUCs. Equal to
    ``cv_metrics(...)["roc_auc"]``; cheap enough for a permutation test.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    folds : array-like of int, same shape as ``oof``, optional
        Test-fold index of each patient in each repeat.

    Returns
    -------
    float
        NaN if no repeat has a (positive, negative) pair to compare.
    """
    y, P = _check(y, oof)
    return float(_nanmean(_auc(y, P, _check_folds(folds, P.shape)), axis=0))


def _percentile_ci(estimate: float, boot: np.ndarray, ci_level: float) -> MetricCI:
    """Percentile interval over the resamples where the metric is defined."""
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return MetricCI(estimate, np.nan, np.nan)
    alpha = (1 - ci_level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return MetricCI(estimate, float(low), float(high))


def _stratified_resamples(y: np.ndarray, n_bootstrap: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient indices of each resample (n_bootstrap, n) and the resampled labels (n,).

    Patients are drawn with replacement within each class, positives first, so every
    resample has both classes (if ``y`` has) and the same labels ``y_boot``.
    """
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be at least 1")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([pos[rng.integers(0, pos.size, (n_bootstrap, pos.size))],
                          neg[rng.integers(0, neg.size, (n_bootstrap, neg.size))]], axis=1)
    y_boot = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]  # the same in every row
    return idx, y_boot


def _check_reference(y: np.ndarray, P: np.ndarray, reference_oof: ArrayLike) -> np.ndarray:
    """The reference model's probabilities as (n_repeats, n); ValueError if not like ``P``."""
    R = _check(y, reference_oof)[1]
    if R.shape != P.shape:
        raise ValueError(f"reference_oof has shape {R.shape}, oof has shape {P.shape}")
    return R


def bootstrap_metrics(
    y: ArrayLike,
    oof: ArrayLike,
    *,
    threshold: float,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
    folds: ArrayLike | None = None,
    reference_oof: ArrayLike | None = None,
) -> dict[str, MetricCI]:
    """Cross-validated metrics with stratified percentile-bootstrap intervals.

    Patients are resampled with replacement within each class (so every resample has both
    classes), and :func:`cv_metrics` is recomputed on the resampled columns of ``oof``
    (and of ``folds``). The interval reflects which patients were sampled, the dominant
    source of uncertainty at small N; the models are not refitted.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients)
    threshold : float
        Decision threshold of the threshold metrics.
    n_bootstrap : int
        Number of resamples.
    ci_level : float
        Coverage of the interval, e.g. 0.95.
    seed : int
    folds : array-like of int, same shape as ``oof``, optional
        Test-fold index of each patient in each repeat. With it, ``roc_auc`` and
        ``delta_auc`` are within-fold pairs AUCs (see :func:`cv_auc`; Parker et al. 2007,
        BMC Bioinformatics 8:326; Airola et al. 2011, Comput Stat Data Anal
        55:1828-1844); a patient drawn twice is a tie with itself (counts half), and a
        fold without both classes in a resample contributes no pairs. The other metrics
        always use the pooled out-of-fold predictions.
    reference_oof : array-like of shape (n_repeats, n_patients), optional
        Another model's out-of-fold probabilities for the same patients (and the same
        ``folds``). Adds ``delta_auc`` = AUC(model) - AUC(reference) with a paired
        interval (same resamples for both); :func:`bootstrap_delta_auc` computes only it.

    Returns
    -------
    dict of str to MetricCI
        Keys :data:`METRICS` (and ``delta_auc``). The estimate is :func:`cv_metrics` on
        all patients; the interval is taken over the resamples where the metric is defined
        (e.g. a calibration slope is undefined in a resample that is perfectly separated).
    """
    y, P = _check(y, oof)
    F = _check_folds(folds, P.shape)
    R = None if reference_oof is None else _check_reference(y, P, reference_oof)
    idx, y_boot = _stratified_resamples(y, n_bootstrap, seed)
    parts = []
    for start in range(0, n_bootstrap, _CHUNK):  # (n_repeats * chunk, n_patients) at once
        cols = idx[start:start + _CHUNK]
        F_cols = None if F is None else F[:, cols].reshape(-1, y.size)
        rows = _metric_rows(y_boot, P[:, cols].reshape(-1, y.size), threshold, F_cols)
        if R is not None:
            rows["delta_auc"] = rows["roc_auc"] - _auc(y_boot, R[:, cols].reshape(-1, y.size),
                                                       F_cols)
        parts.append({k: _nanmean(v.reshape(P.shape[0], -1), axis=0) for k, v in rows.items()})
    estimates = cv_metrics(y, P, threshold=threshold, folds=F)
    if R is not None:
        estimates["delta_auc"] = float(_nanmean(_auc(y, P, F) - _auc(y, R, F), axis=0))
    return {name: _percentile_ci(estimate, np.concatenate([part[name] for part in parts]),
                                 ci_level)
            for name, estimate in estimates.items()}


def bootstrap_delta_auc(
    y: ArrayLike,
    oof: ArrayLike,
    reference_oof: ArrayLike,
    *,
    folds: ArrayLike | None = None,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> MetricCI:
    """AUC of a model minus that of a reference, with a paired stratified bootstrap interval.

    The same resamples and numbers as ``bootstrap_metrics(..., reference_oof=...)
    ["delta_auc"]`` for the same ``seed``, but only the AUCs are computed.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof, reference_oof : array-like of shape (n_repeats, n_patients)
        Out-of-fold probabilities of the model and of the reference, from the same splits.
    folds : array-like of int, same shape as ``oof``, optional
        Test-fold index of each patient in each repeat (shared by both models); with it
        both AUCs are within-fold pairs AUCs (see :func:`cv_auc`).
    n_bootstrap : int
    ci_level : float
    seed : int

    Returns
    -------
    MetricCI
        Estimate: the mean over repeats of AUC(model) - AUC(reference) on all patients;
        percentile interval over the resamples where it is defined.
    """
    y, P = _check(y, oof)
    F = _check_folds(folds, P.shape)
    R = _check_reference(y, P, reference_oof)
    idx, y_boot = _stratified_resamples(y, n_bootstrap, seed)
    parts = []
    for start in range(0, n_bootstrap, _CHUNK):
        cols = idx[start:start + _CHUNK]
        F_cols = None if F is None else F[:, cols].reshape(-1, y.size)
        delta = (_auc(y_boot, P[:, cols].reshape(-1, y.size), F_cols)
                 - _auc(y_boot, R[:, cols].reshape(-1, y.size), F_cols))
        parts.append(_nanmean(delta.reshape(P.shape[0], -1), axis=0))
    estimate = float(_nanmean(_auc(y, P, F) - _auc(y, R, F), axis=0))
    return _percentile_ci(estimate, np.concatenate(parts), ci_level)


def decision_curve(y: ArrayLike, p: ArrayLike, *, thresholds: ArrayLike) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none (Vickers & Elkin 2006).

    NB(t) = TP/n - FP/n * t / (1 - t), with a patient treated when ``p >= t``
    (Vickers AJ, Elkin EB. Med Decis Making 2006;26:565-574).

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    p : array-like of shape (n_patients,) or (n_repeats, n_patients)
        Probabilities; with out-of-fold repeats the net benefit is averaged over repeats.
    thresholds : array-like of shape (n_thresholds,)
        Threshold probabilities in [0, 1).

    Returns
    -------
    DataFrame
        One row per threshold: ``threshold``, ``net_benefit``, ``treat_all``,
        ``treat_none`` (always 0).
    """
    y, P = _check(y, p)
    t = np.asarray(thresholds, dtype=float)
    if t.ndim != 1 or ((t < 0) | (t >= 1)).any():
        raise ValueError("thresholds must be a 1-D array of values in [0, 1)")
    treated = P[:, :, None] >= t  # (n_repeats, n_patients, n_thresholds)
    tp = (treated & (y == 1)[None, :, None]).sum(axis=1) / y.size
    fp = (treated & (y == 0)[None, :, None]).sum(axis=1) / y.size
    odds = t / (1 - t)
    prevalence = y.mean()
    return pd.DataFrame({
        "threshold": t,
        "net_benefit": (tp - fp * odds).mean(axis=0),
        "treat_all": prevalence - (1 - prevalence) * odds,
        "treat_none": np.zeros(t.size),
    })


def riley_sample_size(
    *,
    n_parameters: int,
    prevalence: float,
    r2_cs: float,
    shrinkage: float = 0.9,
    optimism: float = 0.05,
    margin: float = 0.05,
) -> dict[str, float]:
    """Minimum sample size to develop a model for a binary outcome (Riley et al. 2020).

    Riley RD, Ensor J, Snell KIE, et al. Calculating the sample size required for
    developing a clinical prediction model. BMJ 2020;368:m441; the same formulas as the R
    package pmsampsize (``pmsampsize_bin``).

    1. Expected uniform shrinkage >= ``shrinkage``:
       n = P / ((S - 1) ln(1 - R2cs / S)).
    2. Apparent minus adjusted Nagelkerke R2 <= ``optimism``: criterion 1 with
       S = R2cs / (R2cs + optimism * max R2cs), max R2cs = 1 - exp(2 lnL_null / n),
       lnL_null / n = phi ln(phi) + (1 - phi) ln(1 - phi).
    3. Overall risk within +/- ``margin`` (95%): n = (1.96 / margin)^2 phi (1 - phi).

    Parameters
    ----------
    n_parameters : int
        Candidate predictor parameters P.
    prevalence : float
        Anticipated outcome proportion phi.
    r2_cs : float
        Anticipated Cox-Snell R2 (see :func:`anticipated_r2_cs`).
    shrinkage, optimism, margin : float

    Returns
    -------
    dict of str to float
        ``criterion_1``, ``criterion_2``, ``criterion_3`` and ``minimum`` (their maximum),
        each rounded up to whole patients; ``max_r2_cs``; ``shrinkage_criterion_2`` (S of
        criterion 2); ``events_per_parameter`` at the minimum.
    """
    phi = prevalence
    if not 0 < phi < 1:
        raise ValueError("prevalence must lie in (0, 1)")
    max_r2 = 1 - np.exp(2 * (phi * np.log(phi) + (1 - phi) * np.log(1 - phi)))
    if not 0 < r2_cs < min(max_r2, shrinkage):
        raise ValueError(f"r2_cs must lie in (0, {min(max_r2, shrinkage):.3f})")

    def shrinkage_n(s: float) -> int:
        return int(np.ceil(n_parameters / ((s - 1) * np.log(1 - r2_cs / s))))

    s2 = r2_cs / (r2_cs + optimism * max_r2)
    n1, n2 = shrinkage_n(shrinkage), shrinkage_n(s2)
    n3 = int(np.ceil((1.96 / margin) ** 2 * phi * (1 - phi)))
    minimum = max(n1, n2, n3)
    return {"criterion_1": n1, "criterion_2": n2, "criterion_3": n3, "minimum": minimum,
            "max_r2_cs": float(max_r2), "shrinkage_criterion_2": float(s2),
            "events_per_parameter": minimum * phi / n_parameters}


def anticipated_r2_cs(auc: float, prevalence: float) -> float:
    """Cox-Snell R2 anticipated from a C-statistic, as in pmsampsize's ``cstat2rsq``.

    Riley RD, Van Calster B, Collins GS. A note on estimating the Cox-Snell R2 from a
    reported C statistic (AUROC) to inform sample size calculations for developing a
    prediction model with a binary outcome. Stat Med 2021;40:859-864. The linear
    predictor is N(0, 1) in non-events and N(mu, 1) in events, mu = sqrt(2) Phi^-1(C),
    which has AUC C. pmsampsize fits a logistic model to 10^6 simulated patients; here the
    large-sample limit is computed deterministically: under this model the true log-odds
    are logit(phi) + mu x - mu^2 / 2, so the expected log-likelihood per patient is an
    integral over normals, evaluated by Gauss-Hermite quadrature (101 nodes).

    Parameters
    ----------
    auc : float
        Anticipated C-statistic, in [0.5, 1).
    prevalence : float
        Anticipated outcome proportion phi, in (0, 1).

    Returns
    -------
    float
        R2cs = 1 - exp(2 (lnL_null - lnL_model) / n).
    """
    if not (0.5 <= auc < 1 and 0 < prevalence < 1):
        raise ValueError("auc must lie in [0.5, 1) and prevalence in (0, 1)")
    phi = prevalence
    mu = np.sqrt(2) * stats.norm.ppf(auc)
    nodes, weights = hermegauss(101)
    weights = weights / np.sqrt(2 * np.pi)
    intercept = np.log(phi / (1 - phi)) - mu**2 / 2
    ll_events = weights @ special.log_expit(intercept + mu * (mu + nodes))
    ll_nonevents = weights @ special.log_expit(-(intercept + mu * nodes))
    ll_model = phi * ll_events + (1 - phi) * ll_nonevents
    ll_null = phi * np.log(phi) + (1 - phi) * np.log(1 - phi)
    return float(1 - np.exp(2 * (ll_null - ll_model)))


def permutation_p_value(observed: float, null: ArrayLike) -> float:
    """One-sided permutation p-value, (1 + #(null >= observed)) / (1 + len(null)).

    Phipson B, Smyth GK. Permutation p-values should never be zero. Stat Appl Genet Mol
    Biol 2010;9:39.

    Parameters
    ----------
    observed : float
        The statistic on the real labels (larger = better).
    null : array-like of shape (n_permutations,)
        The statistic on permuted labels.
    """
    null = np.asarray(null, dtype=float).ravel()
    return float((1 + np.count_nonzero(null >= observed)) / (1 + null.size))
