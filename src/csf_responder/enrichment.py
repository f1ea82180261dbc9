"""Trial-enrichment planning: how many patients to randomise and to screen when only
patients whose enrichment score reaches a threshold are enrolled.

The rule "enrol a screened patient when ``score >= t``" is evaluated on a screening
population of m patients (a cohort's patients of both arms, or a larger simulated pool).
Each patient carries the enrichment score the rule thresholds (predicted benefit or
predicted probability of good response) and the outcome predicted by fitted models under
control, ``mu0``, and under treatment, ``mu1`` (ALSFRS-R change at 6 months in points,
higher is better). An outcome scatters around its model prediction with ``residual_sd``
(one SD, or one per arm).

Trial model. A trial randomises n patients per arm (1:1), each drawn with replacement
from the enrolled part of the pool; a patient's outcome is ``mu_arm + N(0, sd_arm^2)``;
the trial is analysed with a two-sided two-sample t-test at ``alpha``. With equal arms
the pooled-variance and Welch t statistics coincide, ``t = (mean1 - mean0) /
sqrt((s0^2 + s1^2) / n)``; the test uses the pooled 2n - 2 degrees of freedom. Under this
model a single outcome in arm a has variance ``sd_a^2 + var(mu_a)`` over the enrolled,
which is what the closed form (:func:`two_sample_n`) needs.

Only the sampling of patients and outcomes is simulated: the fitted models are taken as
true, so the uncertainty of ``mu0`` and ``mu1`` (of the fitted models) is not propagated
into the sample sizes, and the effect's interval reflects the finite pool only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from csf_responder.metrics import MetricCI

__all__ = [
    "enrichment_table", "power_column", "power_curve", "simulated_sample_size",
    "threshold_grid", "two_sample_n",
]

#: Fewest patients of the pool above a threshold for its sample sizes to be computed.
MIN_ENROLLED = 5
_TILE_TRIALS, _TILE_PATIENTS = 250, 1000  # a tile of simulated draws: arrays of 2 MB
_BOOT_CELLS = 4_000_000  # (resample, patient) cells of the effect's bootstrap at once


def _arm_sds(residual_sd: float | Sequence[float]) -> tuple[float, float]:
    """``(sd0, sd1)`` from one SD or a pair; ValueError unless finite and positive."""
    sds = np.asarray(residual_sd, dtype=float)
    if sds.ndim == 0:
        sds = np.repeat(sds, 2)
    if sds.shape != (2,):
        raise ValueError("residual_sd must be one SD or a pair (sd0, sd1)")
    if not (np.isfinite(sds).all() and (sds > 0).all()):
        raise ValueError("residual_sd must be finite and positive")
    return float(sds[0]), float(sds[1])


def _patients(**arrays: ArrayLike) -> list[np.ndarray]:
    """The per-patient arrays as float 1-D of one length; ValueError if not finite."""
    checked = []
    for name, values in arrays.items():
        a = np.asarray(values, dtype=float)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite (no NaN)")
        checked.append(a)
    if len({a.size for a in checked}) != 1:
        raise ValueError(f"{', '.join(arrays)} must have one value per patient each")
    return checked


def _check_probability(value: float, name: str) -> float:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    return float(value)


def power_column(name: str, power: float) -> str:
    """Column of :func:`enrichment_table` for ``name`` at ``power``.

    ``power_column("total_screened", 0.8)`` is ``"total_screened_80"`` (the power in
    percent, ``97.5`` for 0.975).
    """
    return f"{name}_{100 * power:g}"


def two_sample_n(delta: float, sd: float, *, power: float, alpha: float = 0.05,
                 t_test: bool = False) -> float:
    """Patients per arm of a two-sided two-sample z-test (or t-test) with equal allocation.

    ``n = 2 sd^2 (z_{1 - alpha/2} + z_{power})^2 / delta^2`` (e.g. Chow S-C, Shao J, Wang
    H, Lokhnygina Y. Sample Size Calculations in Clinical Research, 3rd ed. CRC Press
    2017, section 3.2.1; Julious SA. Sample sizes for clinical trials with Normal data.
    Stat Med 2004;23:1921-1986), where ``z_q`` is the standard normal q-quantile. With
    ``t_test``, Guenther's correction for the t-test adds ``z_{1 - alpha/2}^2 / 4``
    (Guenther WC. Sample size formulas for normal theory t tests. Am Stat 1981;35:243-4),
    which matters for the small trials an enriched design allows (about 1 per arm).

    Parameters
    ----------
    delta : float
        Expected difference of the arms' mean outcomes (its sign does not matter: the test
        is two-sided).
    sd : float
        SD of a single outcome, the same in both arms (with unequal SDs, the root of their
        mean variance gives the same n).
    power : float
        Target power, in (0, 1).
    alpha : float
        Two-sided significance level.

    Returns
    -------
    float
        n per arm, not rounded up; ``inf`` when ``delta`` is 0.
    """
    _check_probability(power, "power")
    _check_probability(alpha, "alpha")
    if not (np.isfinite(sd) and sd >= 0 and np.isfinite(delta)):
        raise ValueError("delta must be finite and sd finite and non-negative")
    if delta == 0:
        return math.inf
    z_alpha = stats.norm.ppf(1 - alpha / 2)
    z = z_alpha + stats.norm.ppf(power)
    return float(2 * sd**2 * z**2 / delta**2 + (z_alpha**2 / 4 if t_test else 0.0))


def _stream(entropy: int, *key: int) -> np.random.Generator:
    """The generator of one tile's draws: the stream ``key`` of the seed ``entropy``."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def power_curve(mu0: ArrayLike, mu1: ArrayLike, residual_sd: float | Sequence[float], *,
                n_max: int, rng: np.random.Generator | int, alpha: float = 0.05,
                n_trials: int = 1000) -> np.ndarray:
    """Simulated power of the trial for every n per arm up to ``n_max``.

    Each of ``n_trials`` trials draws ``n_max`` patients per arm once (with replacement
    from the pool, and their outcomes); the trial of size n uses its first n patients of
    each arm (common random numbers), so one set of draws serves every n and the curve is
    smooth in n. Cumulative sums of the outcomes and of their squares give every n's
    t statistic at once.

    The draws come in tiles of 250 trials by 1000 patients, each from its own stream of
    the seed, and the cumulative sums are carried from tile to tile, so the memory stays
    near 20 MB whatever ``n_max`` and ``n_trials``, and trial i's j-th patient of an arm
    does not depend on ``n_max``. That patient is the pool's patient ``floor(u k)`` for a
    uniform u: pools given in the same order (say by decreasing score) and the same
    integer seed share their draws, which makes comparisons between pools (thresholds)
    less noisy.

    Parameters
    ----------
    mu0, mu1 : array-like of shape (k,)
        Predicted outcome under control and under treatment of each enrolled patient.
    residual_sd : float or (float, float)
        SD of an outcome around its prediction, one for both arms or ``(sd0, sd1)``.
    n_max : int
        Largest n per arm.
    rng : int or numpy Generator
        Seed of the draws (non-negative), or a generator to take one from.
    alpha : float
        Two-sided significance level.
    n_trials : int
        Simulated trials.

    Returns
    -------
    ndarray of shape (n_max + 1,)
        Entry n is the fraction of trials with n patients per arm whose test rejects;
        NaN for n < 2. Its Monte Carlo SE is ``sqrt(p (1 - p) / n_trials)``.
    """
    mu0, mu1 = _patients(mu0=mu0, mu1=mu1)
    sd0, sd1 = _arm_sds(residual_sd)
    _check_probability(alpha, "alpha")
    n_max, n_trials = int(n_max), int(n_trials)
    if n_max < 2 or n_trials < 1:
        raise ValueError("n_max must be at least 2 and n_trials at least 1")
    entropy = int(rng.integers(2**63)) if isinstance(rng, np.random.Generator) else int(rng)
    # outcomes are centred on the pool's mean control prediction: the sums of squares
    # then lose no precision to a large common offset
    centre = float(mu0.mean())
    arms = ((mu0 - centre, sd0), (mu1 - centre, sd1))
    crit = np.full(n_max + 1, np.inf)
    crit[2:] = stats.t.ppf(1 - alpha / 2, 2 * np.arange(2, n_max + 1) - 2)
    rejections = np.zeros(n_max + 1)
    for c, first_trial in enumerate(range(0, n_trials, _TILE_TRIALS)):
        rows = min(_TILE_TRIALS, n_trials - first_trial)
        carry = [(np.zeros((rows, 1)), np.zeros((rows, 1))) for _ in arms]
        for b, first in enumerate(range(0, n_max, _TILE_PATIENTS)):
            cols = min(_TILE_PATIENTS, n_max - first)
            n = np.arange(first + 1, first + cols + 1, dtype=float)
            means, variances = [], []
            for a, (mu, sd) in enumerate(arms):
                # drawn patient-major, so a narrower tile is a prefix of a wider one
                u = _stream(entropy, c, b, a, 0).random((cols, rows)).T
                pick = np.minimum((u * mu.size).astype(np.intp), mu.size - 1)
                y = mu[pick] + sd * _stream(entropy, c, b, a, 1).standard_normal((cols, rows)).T
                total = np.cumsum(y, axis=1) + carry[a][0]
                squares = np.cumsum(np.square(y, out=y), axis=1) + carry[a][1]
                carry[a] = (total[:, -1:].copy(), squares[:, -1:].copy())
                mean = total / n
                # (sum y^2 - n mean^2) / (n - 1), clipped at 0 against rounding
                squares -= total * mean
                np.maximum(squares, 0.0, out=squares)
                squares /= np.maximum(n - 1, 1)
                means.append(mean)
                variances.append(squares)
            se = np.sqrt((variances[0] + variances[1]) / n)
            with np.errstate(invalid="ignore"):  # inf * 0 at n = 1: no test
                reject = np.abs(means[1] - means[0]) > crit[first + 1:first + cols + 1] * se
            rejections[first + 1:first + cols + 1] += reject.sum(axis=0)
    curve = rejections / n_trials
    curve[:2] = np.nan
    return curve


def _first_reaching(curve: np.ndarray, power: float) -> int | None:
    """Smallest n whose simulated power reaches ``power``; None if none does."""
    reached = np.flatnonzero(np.nan_to_num(curve, nan=0.0) >= power)
    return int(reached[0]) if reached.size else None


def simulated_sample_size(mu0: ArrayLike, mu1: ArrayLike,
                          residual_sd: float | Sequence[float], *,
                          power: float | Sequence[float], n_max: int,
                          rng: np.random.Generator | int, alpha: float = 0.05,
                          n_trials: int = 1000) -> int | None | tuple[int | None, ...]:
    """Smallest n per arm whose simulated power reaches ``power``.

    One simulation (:func:`power_curve`) answers every target power: n is the first n per
    arm at which the simulated power reaches the target.

    Parameters
    ----------
    mu0, mu1, residual_sd, n_max, rng, alpha, n_trials
        As in :func:`power_curve`.
    power : float or sequence of float
        Target power(s).

    Returns
    -------
    int or None, or a tuple of them
        One per target (a tuple when ``power`` is a sequence); None when the target is not
        reached by ``n_max`` patients per arm (e.g. no effect: the power stays at alpha).
    """
    targets = [_check_probability(p, "power") for p in np.atleast_1d(power)]
    curve = power_curve(mu0, mu1, residual_sd, n_max=n_max, rng=rng, alpha=alpha,
                        n_trials=n_trials)
    sizes = tuple(_first_reaching(curve, p) for p in targets)
    return sizes[0] if np.ndim(power) == 0 else sizes


def threshold_grid(score: ArrayLike, n: int = 20) -> np.ndarray:
    """Thresholds at ``n`` evenly spaced quantiles of ``score`` above the 0th (everyone
    enrolled: the unenriched trial, which the table always has), up to the 90th
    percentile (about 90% screened out).

    Returns
    -------
    ndarray
        The distinct thresholds, ascending (fewer than ``n`` when scores are tied).
    """
    (score,) = _patients(score=score)
    if n < 1:
        raise ValueError("n must be at least 1")
    return np.unique(np.quantile(score, np.linspace(0.0, 0.9, n + 1)[1:]))


def _bootstrap_mean_ci(values: np.ndarray, *, n_bootstrap: int, ci_level: float,
                       rng: np.random.Generator) -> MetricCI:
    """Mean of ``values`` with its percentile interval over patient resamples."""
    estimate = float(values.mean())
    if n_bootstrap < 1:
        return MetricCI(estimate, np.nan, np.nan)
    chunk = max(1, _BOOT_CELLS // values.size)
    boot = np.concatenate([
        values[rng.integers(0, values.size, (min(chunk, n_bootstrap - s), values.size))]
        .mean(axis=1) for s in range(0, n_bootstrap, chunk)])
    alpha = (1 - ci_level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return MetricCI(estimate, float(low), float(high))


def enrichment_table(
    score: ArrayLike,
    mu0: ArrayLike,
    mu1: ArrayLike,
    residual_sd: float | Sequence[float],
    *,
    thresholds: ArrayLike,
    seed: int,
    powers: Sequence[float] = (0.8, 0.9),
    alpha: float = 0.05,
    n_trials: int = 1000,
    ci_level: float = 0.95,
    n_bootstrap: int = 1000,
    n_max_factor: float = 3.0,
    n_max_cap: int = 5000,
) -> pd.DataFrame:
    """Sample sizes of an enriched trial ("enrol if ``score >= t``") for each threshold t,
    against the unenriched trial (everyone enrolled).

    Parameters
    ----------
    score : array-like of shape (m,)
        Enrichment score of each patient of the screening pool.
    mu0, mu1 : array-like of shape (m,)
        Predicted outcome of each patient under control and under treatment.
    residual_sd : float or (float, float)
        SD of an outcome around its prediction, one for both arms or ``(sd0, sd1)``.
    thresholds : array-like
        Thresholds t (finite); rows come in ascending t after the unenriched row.
    seed : int
        Seeds the bootstrap (each row its own resamples) and the simulations (the same
        draws for every row, see :func:`power_curve`).
    powers : sequence of float
        Target powers; each gets its own sample-size columns.
    alpha : float
        Two-sided significance level.
    n_trials : int
        Simulated trials per threshold (:func:`power_curve`).
    ci_level : float
        Coverage of the effect's interval.
    n_bootstrap : int
        Patient resamples of the enrolled pool for the effect's interval (0: none).
    n_max_factor, n_max_cap : float, int
        A row simulates up to ``min(n_max_cap, ceil(n_max_factor * n))`` patients per arm,
        n the closed-form size at the largest power (``n_max_cap`` without an effect).

    Returns
    -------
    DataFrame
        One row per threshold, the first the unenriched trial (``threshold`` = -inf):

        - ``threshold``, ``fraction_screened_out`` (share of the pool with score < t),
          ``n_enrolled_pool`` (patients of the pool enrolled);
        - ``effect`` (mean of ``mu1 - mu0`` over the enrolled), ``effect_ci_low``,
          ``effect_ci_high`` (percentile bootstrap of the enrolled);
        - ``outcome_sd``: SD of one outcome, ``sqrt(mean over arms of (sd_a^2 +
          var(mu_a)))`` over the enrolled; ``standardized_effect`` = effect / outcome_sd;
        - per power p (suffix from :func:`power_column`, ``_80`` for 0.8):
          ``n_per_arm_{p}_closed`` (:func:`two_sample_n`, rounded up; inf without
          effect), ``n_per_arm_{p}_simulated`` (NaN if not reached by the row's n_max),
          ``total_randomised_{p}`` (2n, simulated), ``total_screened_{p}`` (2n / (1 -
          fraction screened out)), ``randomised_ratio_{p}`` and ``screened_ratio_{p}``
          (each over the unenriched row's);
        - ``n_max`` (largest n per arm simulated) and ``note`` (why sizes are missing,
          else empty).

        Rows with fewer than ``MIN_ENROLLED`` patients enrolled have NaN sizes.
        ``attrs`` records ``powers``, ``alpha``, ``n_trials`` and ``ci_level``.
    """
    score, mu0, mu1 = _patients(score=score, mu0=mu0, mu1=mu1)
    targets = sorted({_check_probability(p, "power") for p in powers})
    if not targets:
        raise ValueError("powers must hold at least one target power")
    _check_probability(alpha, "alpha")
    _check_probability(ci_level, "ci_level")
    t = np.asarray(thresholds, dtype=float).ravel()
    if not np.isfinite(t).all():
        raise ValueError("thresholds must be finite (the unenriched row is added)")
    t = np.r_[-np.inf, np.sort(t)]
    sd0, sd1 = _arm_sds(residual_sd)
    boot_seeds, sim_seed = np.random.SeedSequence(seed).spawn(2)
    boot_seeds = boot_seeds.spawn(t.size)
    # every row simulates from the same seed with its pool in decreasing score: the rows
    # share their random numbers (see power_curve), so their differences are less noisy
    sim_seed = int(sim_seed.generate_state(1, np.uint64)[0])
    order = np.argsort(-score, kind="stable")
    score, mu0, mu1 = score[order], mu0[order], mu1[order]

    rows = []
    for i, threshold in enumerate(t):
        enrolled = score >= threshold
        k = int(enrolled.sum())
        row = {"threshold": threshold, "fraction_screened_out": 1 - k / score.size,
               "n_enrolled_pool": k}
        if k == 0:
            rows.append({**row, "effect": np.nan, "effect_ci_low": np.nan,
                         "effect_ci_high": np.nan, "outcome_sd": np.nan,
                         "note": "no patient of the pool enrolled"})
            continue
        m0, m1 = mu0[enrolled], mu1[enrolled]
        ci = _bootstrap_mean_ci(m1 - m0, n_bootstrap=n_bootstrap, ci_level=ci_level,
                                rng=np.random.default_rng(boot_seeds[i]))
        outcome_sd = math.sqrt((sd0**2 + m0.var() + sd1**2 + m1.var()) / 2)
        row.update(effect=ci.estimate, effect_ci_low=ci.low, effect_ci_high=ci.high,
                   outcome_sd=outcome_sd, standardized_effect=ci.estimate / outcome_sd)
        if k < MIN_ENROLLED:
            rows.append({**row, "note": f"fewer than {MIN_ENROLLED} patients enrolled"})
            continue
        closed = [two_sample_n(ci.estimate, outcome_sd, power=p, alpha=alpha, t_test=True)
                  for p in targets]
        n_max = n_max_cap if not np.isfinite(closed[-1]) else \
            min(n_max_cap, max(4, math.ceil(n_max_factor * closed[-1])))
        curve = power_curve(m0, m1, (sd0, sd1), n_max=n_max, alpha=alpha,
                            n_trials=n_trials, rng=sim_seed)
        missing = []
        for p, n_closed in zip(targets, closed, strict=True):
            n_sim = _first_reaching(curve, p)
            row[power_column("n_per_arm", p) + "_closed"] = float(math.ceil(n_closed)) \
                if np.isfinite(n_closed) else math.inf
            row[power_column("n_per_arm", p) + "_simulated"] = \
                np.nan if n_sim is None else float(n_sim)
            if n_sim is None:
                missing.append(f"{100 * p:g}%")
        row["n_max"] = n_max
        note = "" if not missing else (
            f"simulated power below {' and '.join(missing)} at {n_max} per arm")
        if ci.estimate <= 0:
            reason = "no effect" if ci.estimate == 0 else "effect favours control"
            note = f"{reason} among the enrolled" + (f"; {note}" if note else "")
        rows.append({**row, "note": note})

    table = pd.DataFrame(rows)
    for p in targets:
        for column in ("_closed", "_simulated"):
            name = power_column("n_per_arm", p) + column
            if name not in table:
                table[name] = np.nan
        n = table[power_column("n_per_arm", p) + "_simulated"]
        randomised = 2 * n
        with np.errstate(divide="ignore"):
            screened = randomised / (1 - table["fraction_screened_out"])
        table[power_column("total_randomised", p)] = randomised
        table[power_column("total_screened", p)] = screened
        table[power_column("randomised_ratio", p)] = randomised / randomised.iloc[0]
        table[power_column("screened_ratio", p)] = screened / screened.iloc[0]
    if "n_max" not in table:
        table["n_max"] = np.nan
    head = ["threshold", "fraction_screened_out", "n_enrolled_pool", "effect",
            "effect_ci_low", "effect_ci_high", "outcome_sd", "standardized_effect"]
    sizes = [power_column(name, p) + suffix for p in targets
             for name, suffix in (("n_per_arm", "_closed"), ("n_per_arm", "_simulated"),
                                  ("total_randomised", ""), ("total_screened", ""),
                                  ("randomised_ratio", ""), ("screened_ratio", ""))]
    table = table.reindex(columns=[*head, *sizes, "n_max", "note"])
    table["note"] = table["note"].fillna("")
    table["n_max"] = table["n_max"].astype("Int64")
    table.attrs = {"powers": tuple(targets), "alpha": alpha, "n_trials": n_trials,
                   "ci_level": ci_level}
    return table
