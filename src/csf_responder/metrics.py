"""Performance metrics with bootstrap intervals, decision curves and sample-size criteria.

Labels ``y`` have shape (n_patients,) and values in {0, 1}. Probabilities are either one
vector of shape (n_patients,) or the out-of-fold matrix ``oof`` of shape
(n_repeats, n_patients) from :func:`csf_responder.validation.repeated_cv`. A patient is
predicted positive when ``p >= threshold``. A metric that is undefined for the data
(PPV without predicted positives, AUC with one class, calibration slope under complete
separation) is NaN, never a warning or an exception.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from numpy.typing import ArrayLike
from scipy import special, stats

from csf_responder.validation import MetricCI

__all__ = [
    "METRICS", "anticipated_r2_cs", "bootstrap_metrics", "classification_metrics",
    "cv_metrics", "decision_curve", "permutation_p_value", "riley_sample_size",
]

#: Names of the metrics, in the order they are returned.
METRICS = ("roc_auc", "pr_auc", "brier", "calibration_intercept", "calibration_slope",
           "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "mcc")

_CLIP = 1e-6  # probabilities are clipped to [_CLIP, 1 - _CLIP] before the logit
_CHUNK = 1000  # bootstrap resamples evaluated at once (bounds memory)


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


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float, NaN where ``den`` is 0 (no warning)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; NaN (not a warning) where every value is NaN."""
    defined = ~np.isnan(a)
    return _divide(np.where(defined, a, 0.0).sum(axis), defined.sum(axis))


def _auc(y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``P`` (m, n): Mann-Whitney form, ties count half."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = stats.rankdata(P, axis=1)
    return _divide(ranks[:, y == 1].sum(axis=1) - n_pos * (n_pos + 1) / 2, n_pos * n_neg)


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


def _metric_rows(y: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of ``probs`` (m, n); arrays of shape (m,)."""
    pred = probs >= threshold
    tp = (pred & (y == 1)).sum(axis=1)
    fp = (pred & (y == 0)).sum(axis=1)
    fn = int(y.sum()) - tp
    tn = int(y.size - y.sum()) - fp
    sens, spec = _divide(tp, tp + fn), _divide(tn, tn + fp)
    intercept, slope = _calibration(y, probs)
    mcc_den = np.sqrt((tp + fp).astype(float) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "roc_auc": _auc(y, probs),
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


def cv_metrics(y: ArrayLike, oof: ArrayLike, *, threshold: float) -> dict[str, float]:
    """Mean over repeats of :func:`classification_metrics` of each repeat.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
        Out-of-fold probabilities, one row per repeat of cross-validation.
    threshold : float

    Returns
    -------
    dict of str to float
        Keys :data:`METRICS`; repeats where a metric is undefined are skipped (NaN mean).
    """
    y, P = _check(y, oof)
    return {name: float(_nanmean(v, axis=0)) for name, v in _metric_rows(y, P, threshold).items()}


def _percentile_ci(estimate: float, boot: np.ndarray, ci_level: float) -> MetricCI:
    """Percentile interval over the resamples where the metric is defined."""
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return MetricCI(estimate, np.nan, np.nan)
    alpha = (1 - ci_level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return MetricCI(estimate, float(low), float(high))


def bootstrap_metrics(
    y: ArrayLike,
    oof: ArrayLike,
    *,
    threshold: float,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
    reference_oof: ArrayLike | None = None,
) -> dict[str, MetricCI]:
    """Cross-validated metrics with stratified percentile-bootstrap intervals.

    Patients are resampled with replacement within each class (so every resample has both
    classes), and :func:`cv_metrics` is recomputed on the resampled columns of ``oof``.
    The resamples are drawn exactly as in :func:`~csf_responder.validation.auc_with_ci`,
    so with the same ``seed`` the ``roc_auc`` interval is the same.

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
    reference_oof : array-like of shape (n_repeats, n_patients), optional
        Another model's out-of-fold probabilities for the same patients. Adds ``delta_auc``
        = AUC(model) - AUC(reference) with a paired interval (same resamples for both).

    Returns
    -------
    dict of str to MetricCI
        Keys :data:`METRICS` (and ``delta_auc``). The estimate is :func:`cv_metrics` on
        all patients; the interval is taken over the resamples where the metric is defined
        (e.g. a calibration slope is undefined in a resample that is perfectly separated).
    """
    y, P = _check(y, oof)
    R = None if reference_oof is None else _check(y, reference_oof)[1]
    if R is not None and R.shape != P.shape:
        raise ValueError(f"reference_oof has shape {R.shape}, oof has shape {P.shape}")
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be at least 1")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.stack([np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
                    for _ in range(n_bootstrap)])
    y_boot = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]  # the same in every row
    parts = []
    for start in range(0, n_bootstrap, _CHUNK):  # (n_repeats * chunk, n_patients) at once
        cols = idx[start:start + _CHUNK]
        rows = _metric_rows(y_boot, P[:, cols].reshape(-1, y.size), threshold)
        if R is not None:
            rows["delta_auc"] = rows["roc_auc"] - _auc(y_boot, R[:, cols].reshape(-1, y.size))
        parts.append({k: _nanmean(v.reshape(P.shape[0], -1), axis=0) for k, v in rows.items()})
    estimates = cv_metrics(y, P, threshold=threshold)
    if R is not None:
        estimates["delta_auc"] = float(_nanmean(_auc(y, P) - _auc(y, R), axis=0))
    return {name: _percentile_ci(estimate, np.concatenate([part[name] for part in parts]),
                                 ci_level)
            for name, estimate in estimates.items()}


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
