"""A simulated phase 2 trial, and the oracle probability of response of each patient.

Generating model (one draw per patient; all parameters in ``configs/simulate.yaml``)
-------------------------------------------------------------------------------------
Covariates
    age ~ N, clipped; sex and onset site ~ Bernoulli; ALSFRS-R at baseline
    ``a`` ~ N, clipped.
CSF (log pg/mL)
    Baseline log concentrations are multivariate normal around each analyte's median,
    TGF-beta1 and MCP-1 inversely correlated. After the first injection each analyte
    moves by ``msc_log_change`` (MSC arm; zero without treatment) plus individual
    variation. The lab measures each sample with log-normal assay noise and reports
    values below the LLOQ as ``<LLOQ``, in the analyte's reported unit.
Natural progression (points/month)
    log rate = log median + effects of standardised baseline MCP-1 (faster) and VEGF
    (slower) + bulbar onset + N(0, rate_log_sd). Symptom onset lies
    ``(48 - a) / (rate * exp(N(0, onset_rate_log_sd)))`` months before baseline, which
    makes the pre-slope (delta-FS) prognostic. After baseline the rate is multiplied by
    ``follow_up_rate_multiplier`` and an individual drift ``exp(N(0, period_drift_log_sd))``,
    and by ``late_rate_multiplier`` after ``late_phase_start_months`` (the published
    control curve flattens after month 4).
Treatment benefit (MSC arm)
    The fraction of decline prevented is
    ``b = max_fraction * expit(intercept + axis_slope * axis + noise_sd * N(0, 1))``, where
    ``axis`` is a unit-variance mix of the baseline log TGF-beta1/MCP-1 ratio and of its
    change after the first injection (weight ``axis_change_weight``). After the late-phase
    start only ``late_fraction`` of the benefit remains (cells leave the CSF). With
    ``benefit.relative_to: own_rate`` (default) ``b`` is a fraction of the patient's own
    decline, so the benefit in points grows with the progression rate (rate features
    modify the treatment effect on the points scale); with ``typical_rate`` it is a
    fraction of a typical patient's decline (``rate_median``), added to the patient's
    natural course: the benefit in points then depends on ``b`` alone. With ``L(t, b)``
    the points lost per unit rate (:func:`_follow_up_loss`), the true score at ``t``
    months after baseline is ``a - rate * drift * L(t, b)`` (own) or
    ``a - rate * drift * L(t, 0) + rate_median * (L(t, 0) - L(t, b))`` (typical).
Potential outcomes
    Every patient, control or not, has ``benefit_if_msc``: the ``b`` they would have under
    MSC, from the same draws (a control's change after injection, drawn around 0, is
    shifted by each analyte's ``msc_log_change``). ``latent.benefit`` is the realised one
    (0 in controls). :func:`true_benefit` turns it into each patient's true expected
    benefit in points (change) and points/month (follow-up slope), MSC minus control.
Visits
    ALSFRS-R total = round(true score + N(0, visit_noise_sd)), clipped to 0-48, at the
    scheduled days plus jitter; some patients drop out before the last visit.

Planted signal and planted noise
--------------------------------
Informative (the benefit axis)
    The baseline log TGF-beta1/MCP-1 ratio and its change after the first injection
    (the pipeline's ``log_ratio_tgf_beta1_mcp1_baseline`` and
    ``change_log_ratio_tgf_beta1_mcp1``) are the only CSF quantities that move the
    benefit, hence the responder label; TGF-beta1 and MCP-1 alone carry part of them.
Prognostic
    Baseline MCP-1 and VEGF, bulbar onset (and, through the rate, the lead-in slope and
    delta-FS) set the natural decline rate, which the slope improvement largely cancels.
Noise
    Analytes with ``role: noise`` enter no equation. They are measured like the others
    (median, spread, change after injection, unit, LLOQ, assay noise) but drawn from a
    random stream of their own (``[seed, NOISE_STREAM]``), so adding them leaves every
    other value of the cohort, and the oracle, unchanged. Angiogenin enters no equation
    either (noise in effect), but is drawn in the cohort's stream, which keeps the phase 2
    cohort as it was.

The oracle
----------
:func:`oracle_probabilities` gives, for every patient, the probability of being a good
responder given only what the pipeline observes (covariates, onset, lead-in visits,
CSF as reported), by importance sampling: the CSF latents are drawn from their Gaussian
posterior given the quantified values, the other latents from the prior, each draw is
weighted by the likelihood of the censored CSF values, the lead-in visits (rounding and
the 0/48 bounds are exact) and the onset time, and the follow-up is simulated forward.
Noise analytes are left out: independent of every latent, they leave the posterior as
it is.

The scoring cohort
------------------
:func:`scoring_blocks` draws NEW patients to score, from the MSC arm's distributions of
the same config (so a model trained on the phase 2 cohort applies), in blocks of
patients: ``patients`` without ``arm`` (not randomised yet), ALSFRS-R visits at the
lead-in and baseline only, and every CSF sample of the design in the wide layout (one
row per sample, the unit in each analyte's header). Fully vectorised, it makes a million
patients in seconds; there is no truth file (the oracle costs milliseconds per patient).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats
from scipy.special import expit, log_ndtr, ndtr

from csf_responder.config import SimAnalyte, SimulationConfig
from csf_responder.labels import MONTH_DAYS, derive_labels, lead_in_summary

__all__ = ["SCORING_ID_PREFIX", "ScoringBlock", "SimulatedTrial", "oracle_probabilities",
           "scoring_blocks", "scoring_csf_headers", "simulate_trial", "trial_summary",
           "true_benefit"]

ALSFRS_MAX = 48

#: Extra entropy of the random stream of the noise analytes (``role: noise``), which is
#: independent of the cohort's stream (``seed`` alone).
NOISE_STREAM = 1
#: Extra entropy of the scoring cohort's streams (``[seed, SCORING_STREAM, block]``, and
#: ``NOISE_STREAM`` appended for its noise analytes): independent of the training cohort's.
SCORING_STREAM = 2
#: Subject ids of a scoring cohort: ``SC0000001``..., never those of a trial (``PT0001``).
SCORING_ID_PREFIX = "SC"
#: Plates of a scoring cohort (``SCPLATE00001``...): never a training plate's name, whose
#: offset the ``median`` plate correction would otherwise apply to them.
SCORING_PLATE_PREFIX = "SCPLATE"
#: Samples per assay plate, as in :func:`simulate_trial`.
SAMPLES_PER_PLATE = 40


def _visits(alsfrs: pd.DataFrame) -> pd.DataFrame:
    """ALSFRS-R visits as the labels module reads them (the score in ``score``)."""
    return alsfrs.rename(columns={"alsfrs_r": "score"})


@dataclass(frozen=True)
class SimulatedTrial:
    """The cohort tables in the input contract, plus the latent truth (never written there)."""

    patients: pd.DataFrame
    alsfrs: pd.DataFrame
    csf: pd.DataFrame
    latent: pd.DataFrame


# ----------------------------------------------------------------------- helpers
def _cohort_analytes(config: SimulationConfig) -> list[SimAnalyte]:
    """Analytes drawn with the cohort's latents (``role: cohort``), in config order."""
    return [a for a in config.analytes if a.role == "cohort"]


def _csf_prior(config: SimulationConfig, arm_msc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean and covariance of (baseline logs, changes) of the cohort analytes,
    length 2 x n_analytes."""
    analytes = _cohort_analytes(config)
    names = [a.name for a in analytes]
    mu = np.log([a.median_pg_ml for a in analytes])
    sd = np.array([a.log_sd for a in analytes])
    corr = np.eye(len(names))
    i, j = names.index("TGF-beta1"), names.index("MCP-1")
    corr[i, j] = corr[j, i] = config.csf_tgf_mcp_correlation
    change_mean = np.array([a.msc_log_change if arm_msc else 0.0 for a in analytes])
    change_sd = np.array([a.log_change_sd for a in analytes])
    mean = np.concatenate([mu, change_mean])
    cov = np.zeros((2 * len(names), 2 * len(names)))
    cov[: len(names), : len(names)] = corr * np.outer(sd, sd)
    cov[len(names):, len(names):] = np.diag(change_sd**2)
    return mean, cov


def _noise_latents(analytes: list[SimAnalyte], msc: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Baseline logs and changes after injection, (n, len(analytes)) each, of the noise
    analytes: independent of each other and of everything else."""
    mu = np.array([np.log(a.median_pg_ml) for a in analytes])
    sd = np.array([a.log_sd for a in analytes])
    change_mean = np.where(msc[:, None], [a.msc_log_change for a in analytes], 0.0)
    change_sd = np.array([a.log_change_sd for a in analytes])
    shape = (msc.size, len(analytes))
    return rng.normal(mu, sd, shape), rng.normal(change_mean, change_sd, shape)


def _progression_rate(config: SimulationConfig, base_logs: np.ndarray, bulbar: np.ndarray,
                      eta: np.ndarray) -> np.ndarray:
    """Natural decline rate (points/month) from baseline CSF logs of the cohort analytes
    (..., n_analytes)."""
    p = config.progression
    analytes = _cohort_analytes(config)
    names = [a.name for a in analytes]
    mu = np.log([a.median_pg_ml for a in analytes])
    sd = np.array([a.log_sd for a in analytes])
    std = (base_logs - mu) / sd
    log_rate = (np.log(p.rate_median)
                + p.mcp1_log_effect * std[..., names.index("MCP-1")]
                + p.vegf_log_effect * std[..., names.index("VEGF")]
                + p.bulbar_log_effect * (bulbar - config.clinical.p_bulbar)
                + p.rate_log_sd * eta)
    return np.exp(log_rate)


def _benefit(config: SimulationConfig, base_logs: np.ndarray, changes: np.ndarray,
             xi: np.ndarray) -> np.ndarray:
    """Fraction of decline prevented by MSC, from the CSF TGF-beta1/MCP-1 axis (logs and
    changes of the cohort analytes, (..., n_analytes))."""
    analytes = _cohort_analytes(config)
    names = [a.name for a in analytes]
    i, j = names.index("TGF-beta1"), names.index("MCP-1")
    tgf, mcp = analytes[i], analytes[j]
    rho = config.csf_tgf_mcp_correlation
    base_ratio = ((base_logs[..., i] - np.log(tgf.median_pg_ml))
                  - (base_logs[..., j] - np.log(mcp.median_pg_ml)))
    base_sd = np.sqrt(tgf.log_sd**2 + mcp.log_sd**2 - 2 * rho * tgf.log_sd * mcp.log_sd)
    change_ratio = ((changes[..., i] - tgf.msc_log_change) - (changes[..., j] - mcp.msc_log_change))
    change_sd = np.sqrt(tgf.log_change_sd**2 + mcp.log_change_sd**2)
    w = config.benefit.axis_change_weight
    axis = np.sqrt(1 - w) * base_ratio / base_sd + np.sqrt(w) * change_ratio / change_sd
    b = config.benefit
    return b.max_fraction * expit(b.intercept + b.axis_slope * axis + b.noise_sd * xi)


def _follow_up_loss(config: SimulationConfig, months: np.ndarray, benefit: np.ndarray
                    ) -> np.ndarray:
    """Points lost from baseline to ``months`` per unit of natural rate (broadcasts)."""
    p, late = config.progression, config.progression.late_phase_start_months
    early = np.minimum(months, late)
    after = np.maximum(months - late, 0.0)
    lf = config.benefit.late_fraction
    return p.follow_up_rate_multiplier * (
        (1 - benefit) * early + p.late_rate_multiplier * (1 - benefit * lf) * after)


def _follow_up_true(config: SimulationConfig, baseline: np.ndarray, rate: np.ndarray,
                    months: np.ndarray, benefit: np.ndarray) -> np.ndarray:
    """True ALSFRS-R ``months`` after baseline (broadcasts), from the true baseline score,
    the follow-up rate (natural rate x drift) and the fraction of decline prevented, per
    ``benefit.relative_to``."""
    if config.benefit.relative_to == "own_rate":
        return baseline - rate * _follow_up_loss(config, months, benefit)
    natural = _follow_up_loss(config, months, np.zeros_like(benefit))
    return (baseline - rate * natural
            + config.progression.rate_median * (natural - _follow_up_loss(config, months, benefit)))


def _observe(true_score: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(true_score + noise), 0, ALSFRS_MAX)


def _format_value(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


# --------------------------------------------------------------------- simulate
def simulate_trial(config: SimulationConfig) -> SimulatedTrial:
    """Simulate one trial cohort; deterministic given ``config`` (its ``seed`` included)."""
    rng = np.random.default_rng(config.seed)
    n = config.n_msc + config.n_control
    d, c, p = config.design, config.clinical, config.progression
    msc = rng.permutation(np.r_[np.ones(config.n_msc, bool), np.zeros(config.n_control, bool)])
    ids = np.array([f"PT{i + 1:04d}" for i in range(n)])
    age = np.rint(np.clip(rng.normal(c.age_mean, c.age_sd, n), *c.age_range))
    male = rng.random(n) < c.p_male
    bulbar = (rng.random(n) < c.p_bulbar).astype(float)
    baseline = np.clip(rng.normal(c.alsfrs_baseline_mean, c.alsfrs_baseline_sd, n),
                       *c.alsfrs_baseline_range)

    n_an = len(_cohort_analytes(config))
    latents = np.empty((n, 2 * n_an))
    for arm_msc in (True, False):
        mean, cov = _csf_prior(config, arm_msc)
        rows = msc == arm_msc
        latents[rows] = rng.multivariate_normal(mean, cov, size=int(rows.sum()),
                                                method="cholesky")
    base_logs, changes = latents[:, :n_an], latents[:, n_an:]
    rate = _progression_rate(config, base_logs, bulbar, rng.standard_normal(n))
    # potential outcome under MSC of every patient, from the same draws: a control's
    # change after injection (drawn around 0) shifted as the MSC arm's is
    msc_shift = np.array([a.msc_log_change for a in _cohort_analytes(config)])
    benefit_if_msc = _benefit(config, base_logs,
                              np.where(msc[:, None], changes, changes + msc_shift),
                              rng.standard_normal(n))
    benefit = np.where(msc, benefit_if_msc, 0.0)
    onset = (ALSFRS_MAX - baseline) / (rate * np.exp(p.onset_rate_log_sd * rng.standard_normal(n)))
    drift = np.exp(p.period_drift_log_sd * rng.standard_normal(n))

    # ALSFRS-R visits
    lead_days = np.asarray(d.lead_in_visit_days, dtype=float)
    fu_months = np.asarray(d.follow_up_visit_months, dtype=float)
    fu_days = np.rint(fu_months * MONTH_DAYS)
    jitter = d.visit_jitter_days
    lead_obs = lead_days + np.where(lead_days == 0, 0, rng.integers(-jitter, jitter + 1,
                                                                     (n, lead_days.size)))
    fu_obs = fu_days + rng.integers(-jitter, jitter + 1, (n, fu_days.size))
    lead_true = baseline[:, None] - rate[:, None] * lead_obs / MONTH_DAYS
    fu_true = _follow_up_true(config, baseline[:, None], (rate * drift)[:, None],
                              fu_obs / MONTH_DAYS, benefit[:, None])
    noise = rng.normal(0, p.visit_noise_sd, (n, lead_days.size + fu_days.size))
    scores = _observe(np.hstack([lead_true, fu_true]), noise)
    days = np.hstack([lead_obs, fu_obs])
    dropout_p = np.where(msc, d.dropout_by_last_visit["MSC"], d.dropout_by_last_visit["control"])
    drops = rng.random(n) < dropout_p
    first_missing = np.where(drops, rng.integers(0, fu_days.size, n), fu_days.size)
    present = np.hstack([np.ones((n, lead_days.size), bool),
                         np.arange(fu_days.size)[None, :] < first_missing[:, None]])
    alsfrs = pd.DataFrame({
        "subject_id": np.repeat(ids, days.shape[1])[present.ravel()],
        "day": days.ravel()[present.ravel()].astype(int),
        "alsfrs_r": scores.ravel()[present.ravel()].astype(int),
    })

    # noise analytes: their own stream, so that they change nothing else in the cohort
    noise_rng = np.random.default_rng([config.seed, NOISE_STREAM])
    noise = [a for a in config.analytes if a.role == "noise"]
    noise_base, noise_change = _noise_latents(noise, msc, noise_rng)
    column = {a.name: k for k, a in enumerate(_cohort_analytes(config))}
    column.update({a.name: k for k, a in enumerate(noise)})

    # CSF samples, as the lab reports them
    has_csf = msc | d.csf_in_controls
    records = []
    sample = 0
    for idx in np.flatnonzero(has_csf):
        for t, (timepoint, _day) in enumerate(d.csf_days.items()):
            plate = f"PLATE{1 + sample // SAMPLES_PER_PLATE:02d}"
            sample += 1
            for analyte in config.analytes:
                k = column[analyte.name]
                if analyte.role == "noise":
                    true_log = noise_base[idx, k] + (noise_change[idx, k] if t > 0 else 0.0)
                    error = noise_rng.standard_normal()
                else:
                    true_log = base_logs[idx, k] + (changes[idx, k] if t > 0 else 0.0)
                    error = rng.standard_normal()
                measured = np.exp(true_log + analyte.assay_log_sd * error)
                reported = measured / analyte.pg_ml_per_reported_unit
                text = (f"<{analyte.lloq:g}" if reported < analyte.lloq
                        else _format_value(reported))
                records.append((ids[idx], timepoint, analyte.name, text,
                                analyte.reported_unit, f"{analyte.lloq:g}", plate))
    csf = pd.DataFrame(records, columns=["subject_id", "timepoint", "analyte", "value", "unit",
                                         "lloq", "plate"])
    patients = pd.DataFrame({
        "subject_id": ids,
        "arm": np.where(msc, "MSC", "control"),
        "age": age.astype(int),
        "sex": np.where(male, "male", "female"),
        "onset_site": np.where(bulbar == 1, "bulbar", "spinal"),
        "onset_months": np.round(onset, 1),
    })
    latent = pd.DataFrame({"subject_id": ids, "rate": rate, "drift": drift,
                           "benefit": benefit, "alsfrs_true_baseline": baseline,
                           "benefit_if_msc": benefit_if_msc})
    return SimulatedTrial(patients, alsfrs, csf, latent)


# -------------------------------------------------------------- scoring cohort
@dataclass(frozen=True)
class ScoringBlock:
    """A block of consecutive patients of a scoring cohort, as Arrow tables in the input
    contract: ``patients`` (no ``arm``), ``alsfrs`` (lead-in and baseline visits) and
    ``csf`` (wide layout), each sorted by subject like the others."""

    patients: pa.Table
    alsfrs: pa.Table
    csf: pa.Table


def scoring_csf_headers(config: SimulationConfig) -> list[str]:
    """The wide CSF file's analyte headers, with the reported unit: ``TGF-beta1 (pg/mL)``."""
    return [f"{a.name} ({a.reported_unit})" for a in config.analytes]


def _padded(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array (no Python loop)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _reported_text(reported: np.ndarray, lloq: float) -> pa.Array:
    """Values as the lab writes them, like :func:`simulate_trial`: 3 decimals below 10,
    1 above, ``<LLOQ`` below the limit."""
    rounded = np.where(reported < 10, np.round(reported, 3), np.round(reported, 1))
    text = pc.cast(pa.array(rounded), pa.string())
    return pc.if_else(pa.array(reported < lloq), pa.scalar(f"<{lloq:g}"), text)


def _scoring_block(config: SimulationConfig, block: int, start: int, m: int, *,
                   id_width: int, plate_width: int) -> ScoringBlock:
    """Patients ``start`` ... ``start + m - 1`` (0-based) of a scoring cohort."""
    rng = np.random.default_rng([config.seed, SCORING_STREAM, block])
    d, c, p = config.design, config.clinical, config.progression
    age = np.rint(np.clip(rng.normal(c.age_mean, c.age_sd, m), *c.age_range))
    male = rng.random(m) < c.p_male
    bulbar = (rng.random(m) < c.p_bulbar).astype(float)
    baseline = np.clip(rng.normal(c.alsfrs_baseline_mean, c.alsfrs_baseline_sd, m),
                       *c.alsfrs_baseline_range)
    n_an = len(_cohort_analytes(config))
    mean, cov = _csf_prior(config, arm_msc=True)
    latents = rng.multivariate_normal(mean, cov, size=m, method="cholesky")
    base_logs, changes = latents[:, :n_an], latents[:, n_an:]
    rate = _progression_rate(config, base_logs, bulbar, rng.standard_normal(m))
    onset = (ALSFRS_MAX - baseline) / (rate * np.exp(p.onset_rate_log_sd * rng.standard_normal(m)))

    # ALSFRS-R at the lead-in and baseline visits only; a jittered lead-in visit stays
    # before baseline
    lead_days = np.asarray(d.lead_in_visit_days, dtype=float)
    jitter = d.visit_jitter_days
    days = lead_days + np.where(lead_days == 0, 0, rng.integers(-jitter, jitter + 1,
                                                                 (m, lead_days.size)))
    days = np.where(lead_days < 0, np.minimum(days, -1), days)
    true = baseline[:, None] - rate[:, None] * days / MONTH_DAYS
    scores = _observe(true, rng.normal(0, p.visit_noise_sd, true.shape))

    # CSF at every timepoint of the design, as the lab reports it; noise analytes from a
    # stream of their own (as in simulate_trial)
    timepoints = list(d.csf_days)
    n_t = len(timepoints)
    assay = rng.standard_normal((m, n_t, n_an))
    noise = [a for a in config.analytes if a.role == "noise"]
    noise_rng = np.random.default_rng([config.seed, SCORING_STREAM, block, NOISE_STREAM])
    noise_base, noise_change = _noise_latents(noise, np.ones(m, bool), noise_rng)
    noise_assay = noise_rng.standard_normal((m, n_t, len(noise)))
    column = {a.name: k for k, a in enumerate(_cohort_analytes(config))}
    column.update({a.name: k for k, a in enumerate(noise)})
    after = (np.arange(n_t) > 0)[None, :]  # the change applies after the first injection
    values = {}
    for analyte, header in zip(config.analytes, scoring_csf_headers(config), strict=True):
        k = column[analyte.name]
        if analyte.role == "noise":
            base, change, error = noise_base[:, k], noise_change[:, k], noise_assay[:, :, k]
        else:
            base, change, error = base_logs[:, k], changes[:, k], assay[:, :, k]
        true_log = base[:, None] + np.where(after, change[:, None], 0.0)
        reported = np.exp(true_log + analyte.assay_log_sd * error) / analyte.pg_ml_per_reported_unit
        values[header] = _reported_text(reported.ravel(), analyte.lloq)

    ids = _padded(SCORING_ID_PREFIX, np.arange(start + 1, start + m + 1), id_width)
    sample = start * n_t + np.arange(m * n_t)  # as simulate_trial numbers its samples
    patients = pa.table({
        "subject_id": ids,
        "age": age.astype(np.int64),
        "sex": pc.if_else(pa.array(male), "male", "female"),
        "onset_site": pc.if_else(pa.array(bulbar == 1), "bulbar", "spinal"),
        "onset_months": np.round(onset, 1),
    })
    alsfrs = pa.table({
        "subject_id": ids.take(np.repeat(np.arange(m), lead_days.size)),
        "day": days.ravel().astype(np.int64),
        "alsfrs_r": scores.ravel().astype(np.int64),
    })
    csf = pa.table({
        "subject_id": ids.take(np.repeat(np.arange(m), n_t)),
        "timepoint": pa.array(timepoints).take(np.tile(np.arange(n_t), m)),
        "plate": _padded(SCORING_PLATE_PREFIX, 1 + sample // SAMPLES_PER_PLATE, plate_width),
        **values,
    })
    return ScoringBlock(patients, alsfrs, csf)


def scoring_blocks(config: SimulationConfig, n: int, *, block_size: int = 100_000
                   ) -> Iterator[ScoringBlock]:
    """A scoring cohort of ``n`` new patients, ``block_size`` patients at a time.

    The patients come from the MSC arm's distributions of ``config`` (covariates, CSF
    at baseline and after the first injection, natural progression), so that a model
    trained on :func:`simulate_trial`'s cohort applies; they are not randomised
    (``patients`` has no ``arm``) and have only their lead-in and baseline visits. Ids
    are ``SC`` and at least 7 digits, in order; every table is sorted by subject.
    Deterministic given ``config.seed``, ``n`` and ``block_size`` (block ``b`` draws
    from the stream ``[seed, SCORING_STREAM, b]``); peak memory grows with
    ``block_size``, not with ``n``.
    """
    if n < 1 or block_size < 1:
        raise ValueError("n and block_size must be at least 1")
    id_width = max(7, len(str(n)))
    n_plates = -(-n * len(config.design.csf_days) // SAMPLES_PER_PLATE)
    plate_width = max(5, len(str(n_plates)))
    for block, start in enumerate(range(0, n, block_size)):
        yield _scoring_block(config, block, start, min(block_size, n - start),
                             id_width=id_width, plate_width=plate_width)


# ------------------------------------------------------------------------ oracle
def _log_interval_prob(y: np.ndarray, mean: np.ndarray, sd: float) -> np.ndarray:
    """log P(clip(round(mean + N(0, sd))) == y), exact for rounding and the 0/48 bounds."""
    upper = np.where(y >= ALSFRS_MAX, np.inf, (y + 0.5 - mean) / sd)
    lower = np.where(y <= 0, -np.inf, (y - 0.5 - mean) / sd)
    prob = ndtr(upper) - ndtr(lower)
    return np.log(np.maximum(prob, 1e-300))


def oracle_probabilities(
    trial: SimulatedTrial,
    config: SimulationConfig,
    *,
    draws: int,
    cutoff: float,
    horizon_months: float,
    seed: int,
) -> pd.DataFrame:
    """Probability of being a good responder given what the pipeline observes.

    Returns
    -------
    DataFrame
        ``subject_id`` and ``p_responder`` (NaN where the lead-in slope is not negative,
        so no label can exist), one row per patient.
    """
    rng = np.random.default_rng(seed)
    d, c, p = config.design, config.clinical, config.progression
    analytes = _cohort_analytes(config)
    n_an = len(analytes)
    index = {a.name: k for k, a in enumerate(analytes)}
    sd_assay = np.array([max(a.assay_log_sd, 1e-3) for a in analytes])
    log_lloq = np.log([a.lloq * a.pg_ml_per_reported_unit for a in analytes])
    fu_months = np.asarray([m for m in d.follow_up_visit_months if m <= horizon_months + 1e-9])
    fu_days = np.rint(fu_months * MONTH_DAYS)
    jitter = d.visit_jitter_days
    var_noise = p.visit_noise_sd

    lead_slopes = dict(zip(trial.patients["subject_id"], lead_in_summary(
        _visits(trial.alsfrs), subjects=trial.patients["subject_id"],
        lead_in_days=int(-min(d.lead_in_visit_days)) + jitter, baseline_tolerance_days=0,
    )["leadin_slope"], strict=True))
    # plain arrays and lists, looked up per patient (pandas per patient costs more than
    # the Monte Carlo itself)
    visit_day = trial.alsfrs["day"].to_numpy()
    visit_score = trial.alsfrs["alsfrs_r"].to_numpy()
    visits = trial.alsfrs.groupby("subject_id", sort=False).indices
    timepoints = list(d.csf_days)
    samples = [(index.get(a, -1), timepoints.index(tp), str(v))
               for a, tp, v in zip(trial.csf["analyte"], trial.csf["timepoint"],
                                   trial.csf["value"], strict=True)]
    csf_rows = trial.csf.groupby("subject_id", sort=False).indices
    priors = {arm_msc: _csf_prior(config, arm_msc) for arm_msc in (True, False)}
    out = []
    for row in trial.patients.itertuples(index=False):
        rows = visits.get(row.subject_id)
        lead_rows = rows[visit_day[rows] <= 0] if rows is not None else None
        if lead_rows is None or len(lead_rows) < 2:
            out.append(np.nan)
            continue
        lead_slope = lead_slopes[row.subject_id]
        if not lead_slope < 0:
            out.append(np.nan)
            continue
        arm_msc = row.arm == "MSC"
        bulbar = 1.0 if row.onset_site == "bulbar" else 0.0

        # CSF latents: Gaussian posterior given quantified values; censored ones weight
        mean, cov = priors[arm_msc]
        H_rows, y_obs, r_obs, cens_rows, cens_limits, cens_sd = [], [], [], [], [], []
        for i in csf_rows.get(row.subject_id, ()):
            k, t, value = samples[i]
            if k < 0:
                continue  # a noise analyte: independent of everything, it tells nothing
            h = np.zeros(2 * n_an)
            h[k] = 1.0
            if t > 0:
                h[n_an + k] = 1.0
            if value.startswith("<"):
                cens_rows.append(h)
                cens_limits.append(log_lloq[k])
                cens_sd.append(sd_assay[k])
            else:
                pg = float(value) * analytes[k].pg_ml_per_reported_unit
                H_rows.append(h)
                y_obs.append(np.log(pg))
                r_obs.append(sd_assay[k] ** 2)
        if H_rows:
            H = np.array(H_rows)
            S = H @ cov @ H.T + np.diag(r_obs)
            gain = np.linalg.solve(S, H @ cov).T
            mean = mean + gain @ (np.array(y_obs) - H @ mean)
            cov = cov - gain @ H @ cov
        cov = (cov + cov.T) / 2 + 1e-10 * np.eye(cov.shape[0])
        x = rng.multivariate_normal(mean, cov, size=draws, method="eigh")
        log_w = np.zeros(draws)
        if cens_rows:
            z = (np.array(cens_limits)[None, :] - x @ np.array(cens_rows).T) / np.array(cens_sd)
            log_w += log_ndtr(z).sum(axis=1)
        base_logs, changes = x[:, :n_an], x[:, n_an:]

        # progression latents from the prior, weighted by lead-in visits and onset
        a = np.clip(rng.normal(c.alsfrs_baseline_mean, c.alsfrs_baseline_sd, draws),
                    *c.alsfrs_baseline_range)
        rate = _progression_rate(config, base_logs, bulbar, rng.standard_normal(draws))
        lead_day = visit_day[lead_rows].astype(float)
        lead_score = visit_score[lead_rows].astype(float)
        t_lead = lead_day / MONTH_DAYS
        expected = a[:, None] - rate[:, None] * t_lead[None, :]
        log_w += _log_interval_prob(lead_score[None, :], expected, var_noise).sum(axis=1)
        if np.isfinite(row.onset_months) and row.onset_months > 0:
            mu_onset = np.log(ALSFRS_MAX - a) - np.log(rate)
            log_w += stats.norm.logpdf(np.log(row.onset_months), mu_onset, p.onset_rate_log_sd)
        w = np.exp(log_w - log_w.max())
        w /= w.sum()

        # forward: follow-up visits to the horizon, follow-up slope, label
        drift = np.exp(p.period_drift_log_sd * rng.standard_normal(draws))
        benefit = (_benefit(config, base_logs, changes, rng.standard_normal(draws))
                   if arm_msc else np.zeros(draws))
        days = fu_days[None, :] + rng.integers(-jitter, jitter + 1, (draws, fu_days.size))
        true = _follow_up_true(config, a[:, None], (rate * drift)[:, None], days / MONTH_DAYS,
                               benefit[:, None])
        scores = _observe(true, rng.normal(0, p.visit_noise_sd, true.shape))
        baseline_score = float(lead_score[np.argmax(lead_day)])
        t = np.hstack([np.zeros((draws, 1)), days / MONTH_DAYS])
        y = np.hstack([np.full((draws, 1), baseline_score), scores])
        tc = t - t.mean(axis=1, keepdims=True)
        slope = (tc * (y - y.mean(axis=1, keepdims=True))).sum(axis=1) / (tc**2).sum(axis=1)
        responder = (1 - slope / lead_slope) >= cutoff
        out.append(float(np.clip(np.sum(w * responder), 0.0, 1.0)))  # float rounding
    return pd.DataFrame({"subject_id": trial.patients["subject_id"], "p_responder": out})


# ------------------------------------------------------------------ true benefit
def true_benefit(trial: SimulatedTrial, config: SimulationConfig, *, horizon_months: float
                 ) -> pd.DataFrame:
    """Each patient's true expected benefit of MSC, from the latents (both arms).

    Expected means noise-free: true scores at the scheduled days (no visit noise,
    rounding, clipping, jitter or dropout), under MSC (``latent.benefit_if_msc``) minus
    under control (no benefit), for the patient's own rate and drift. Positive = MSC
    helps.

    Returns
    -------
    DataFrame
        One row per patient of ``trial.latent``: ``subject_id``, ``true_benefit_slope``
        (points/month: OLS slope of ALSFRS-R over the baseline visit, day 0, and the
        scheduled follow-up visits up to ``horizon_months``; what the label's follow-up
        slope estimates) and ``true_benefit_change`` (points: change from baseline at the
        scheduled day of ``horizon_months``).
    """
    fu_months = np.asarray([m for m in config.design.follow_up_visit_months
                            if m <= horizon_months + 1e-9], dtype=float)
    if fu_months.size == 0:
        raise ValueError(f"no scheduled follow-up visit up to {horizon_months} months: no "
                         "follow-up slope")
    latent = trial.latent
    # baseline (day 0), the scheduled follow-up visits, then the horizon's scheduled day
    t = np.r_[0.0, np.rint(np.r_[fu_months, horizon_months] * MONTH_DAYS)] / MONTH_DAYS
    rate = (latent["rate"] * latent["drift"]).to_numpy()[:, None]
    benefit = latent["benefit_if_msc"].to_numpy()[:, None]
    zero = np.zeros_like(benefit)
    gain = (_follow_up_true(config, zero, rate, t[None, :], benefit)
            - _follow_up_true(config, zero, rate, t[None, :], zero))
    visits, tc = gain[:, :-1], t[:-1] - t[:-1].mean()
    return pd.DataFrame({
        "subject_id": latent["subject_id"].to_numpy(),
        "true_benefit_slope": (visits * tc).sum(axis=1) / (tc**2).sum(),
        "true_benefit_change": gain[:, -1],
    })


# --------------------------------------------------------------------- summaries
def trial_summary(
    patients: pd.DataFrame,
    alsfrs: pd.DataFrame,
    *,
    horizons_months: tuple[float, ...],
    cutoff: float,
    lead_in_days: int,
    tolerance_days: int,
) -> pd.DataFrame:
    """The published phase 2 figures, computed on a cohort, per arm and horizon.

    Returns
    -------
    DataFrame
        Rows (arm, horizon_months) with ``change_mean``, ``change_sd``, ``change_n``
        (ALSFRS-R change from baseline at the horizon visit), ``responder_rate``,
        ``responder_n`` (good responders at ``cutoff``) and ``slope_change_mean``,
        ``slope_change_sd`` (follow-up minus lead-in slope, points/month).
    """
    rows = []
    base = alsfrs[alsfrs["day"] == 0].set_index("subject_id")["alsfrs_r"]
    for horizon in horizons_months:
        labels = derive_labels(
            _visits(alsfrs), higher_is_better=True,
            subjects=patients["subject_id"], cutoff=cutoff, horizon_months=horizon,
            lead_in_days=lead_in_days, min_visits_lead_in=2, min_visits_follow_up=2,
            horizon_tolerance_days=tolerance_days,
        ).merge(patients[["subject_id", "arm"]], on="subject_id")
        target = horizon * MONTH_DAYS
        at = alsfrs[(alsfrs["day"] - target).abs() <= tolerance_days]
        at = at.drop_duplicates("subject_id").set_index("subject_id")["alsfrs_r"]
        change = (at - base.reindex(at.index)).dropna()
        for arm, group in labels.groupby("arm"):
            arm_change = change.reindex(group["subject_id"]).dropna()
            labelled = group[group["responder"].notna()]
            slope_change = labelled["followup_slope"] - labelled["leadin_slope"]
            rows.append({
                "arm": arm, "horizon_months": horizon,
                "change_mean": arm_change.mean(), "change_sd": arm_change.std(),
                "change_n": len(arm_change),
                "responder_rate": labelled["responder"].astype(float).mean(),
                "responder_n": len(labelled),
                "slope_change_mean": slope_change.mean(), "slope_change_sd": slope_change.std(),
            })
    return pd.DataFrame(rows)
