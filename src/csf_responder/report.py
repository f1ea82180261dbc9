"""A self-contained HTML report of one training run, in TRIPOD+AI order.

:func:`render_report` turns a :class:`ReportInputs` (plain values: counts, definitions,
settings, metrics with intervals and PNG figures) into one HTML page; :func:`write_report`
writes it atomically. The page needs nothing but itself: every figure is a base64
``data:image/png`` URI, the style sheet and the one script are inline, and a
Content-Security-Policy forbids anything else, so it opens offline, attached to an e-mail
or from the MLflow artifact store alike. Every value that comes from data or
configuration (cohort, arm, feature and family names, exclusion reasons, captions) is
HTML-escaped.

Sections follow the TRIPOD+AI items that apply to an internally validated development
study (Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for
reporting clinical prediction models that use regression or machine learning methods.
BMJ 2024;385:e078378): title and summary (items 1-2), source of data and participants
(5-6, 20), data preparation (7), outcome (8), predictors (9), sample size (10), missing
data (11), analytical methods (12-16), model development (21-22), performance (23),
explanations and limitations (25-26). See :data:`SECTIONS`.

The inline script, once the page has loaded, writes on ``<body>`` how many ``<img>``
decoded (``complete`` and ``naturalWidth > 0``): ``data-images-loaded``,
``data-images-total`` and ``data-images-broken`` (the ids of the others), so a headless
browser can check that every figure renders.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Literal

from csf_responder.metrics import MetricCI

__all__ = [
    "EFFECT_SECTIONS", "FIGURE_SECTIONS", "METRIC_LABELS", "SECTIONS", "Counts",
    "EffectReportInputs", "FamilyRow", "LabelDefinition", "ReportInputs", "SampleSize",
    "ValidationSettings", "format_ci", "render_effect_report", "render_report",
    "write_report",
]

#: (id, heading, TRIPOD+AI items) of every section, in the order of the report.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("summary", "Summary", "1-2"),
    ("participants", "Source of data and participants", "5-6, 20"),
    ("data-preparation", "Data preparation", "7"),
    ("outcome", "Outcome", "8"),
    ("predictors", "Predictors", "9"),
    ("sample-size", "Sample size", "10"),
    ("missing-data", "Missing data", "11"),
    ("methods", "Analytical methods", "12-16"),
    ("development", "Model development", "21-22"),
    ("performance", "Performance", "23"),
    ("explanations", "Explanations", "22, 25"),
    ("limitations", "Limitations", "26"),
)

#: Sections that may hold figures (keys of :attr:`ReportInputs.figures`).
FIGURE_SECTIONS = tuple(section for section, _, _ in SECTIONS)

#: Rows of the performance table: metric key -> label for the reader.
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC AUC (0.5 = chance, 1 = perfect)",
    "pr_auc": "PR AUC (chance = responder rate)",
    "brier": "Brier score (lower is better)",
    "calibration_intercept": "Calibration intercept (0 = ideal)",
    "calibration_slope": "Calibration slope (1 = ideal)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "Positive predictive value",
    "npv": "Negative predictive value",
    "mcc": "Matthews correlation coefficient",
    "delta_auc_vs_clinical": "ROC AUC minus that of the clinical-only model",
}

#: Optimism-corrected metrics of the final model: key -> label.
OPTIMISM_LABELS: dict[str, str] = {
    "roc_auc": "Optimism-corrected ROC AUC",
    "calibration_slope": "Optimism-corrected calibration slope",
    "brier": "Optimism-corrected Brier score",
}

_CENSORING = {
    "lloq_sqrt2": "set to LLOQ/&radic;2",
    "lloq_half": "set to LLOQ/2",
    "lloq": "set to the LLOQ",
    "censored_normal": ("replaced by their expected value below the LLOQ under a normal "
                        "distribution of the log concentration, left-censored at the LLOQ and "
                        "fitted on the training folds only"),
}
_PLATE = {
    "none": "No plate correction: concentrations are used as measured.",
    "median": ("Per-plate median centring of each log concentration, with the plate medians "
               "fitted on the training folds only."),
    "bridge": ("Bridging-sample correction: each plate is shifted by the difference between "
               "its bridging samples and their reference, fitted on the training folds only."),
}
_PNG = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every complete PNG

ImageSource = bytes | str | os.PathLike


@dataclass(frozen=True)
class Counts:
    """How many patients and rows the cohort had and lost.

    ``patients_per_arm`` and ``labelled_per_arm``: arm -> patients, and those with a
    responder label; ``excluded``: reason -> patients without a label (e.g. too few
    visits); ``rejected_rows``: input file -> rows that broke the input contract.
    """

    patients_per_arm: Mapping[str, int]
    labelled_per_arm: Mapping[str, int]
    excluded: Mapping[str, int] = field(default_factory=dict)
    rejected_rows: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelDefinition:
    """The responder label: ``source`` ("slope": from the functional-score slopes, or the
    name of a 0/1 column), ``cutoff`` (the fraction by which the slope must improve over
    the lead-in) and ``horizon_months`` (end of the follow-up window); ``description``, if
    given, replaces the generated sentence."""

    source: str
    cutoff: float
    horizon_months: float
    description: str | None = None


@dataclass(frozen=True)
class ValidationSettings:
    """How the families were validated: ``outer_splits`` x ``repeats`` stratified outer
    folds, ``inner_splits`` folds of the hyperparameter search in each, ``n_bootstrap``
    patient-level resamples per interval at ``ci_level``, ``n_optimism`` Harrell bootstrap
    resamples (0: no optimism correction), ``permutation_test`` with ``n_permutations``,
    and the probability ``threshold`` from which a patient is called a responder."""

    outer_splits: int
    repeats: int
    inner_splits: int
    n_bootstrap: int
    ci_level: float
    n_optimism: int
    permutation_test: bool
    n_permutations: int
    threshold: float


@dataclass(frozen=True)
class FamilyRow:
    """One validated model family or reference.

    ``role``: "model" (CSF and clinical predictors) or "reference" (e.g. clinical-only,
    prevalence-only); ``hyperparameters``: those the search chose for the final model;
    ``metrics``: metric key of :data:`METRIC_LABELS` -> cross-validated value with its
    interval (missing keys show as "n/a"); ``optimism_corrected``: key of
    :data:`OPTIMISM_LABELS` -> the final model's optimism-corrected value;
    ``permutation_p``: permutation-test p-value of the AUC, None when not run.
    """

    name: str
    role: Literal["model", "reference"]
    hyperparameters: Mapping[str, object]
    metrics: Mapping[str, MetricCI]
    optimism_corrected: Mapping[str, float] = field(default_factory=dict)
    permutation_p: float | None = None


@dataclass(frozen=True)
class SampleSize:
    """Riley et al. (2020) minimum sample size of the best family's model (see
    :func:`csf_responder.metrics.riley_sample_size`) against the labelled patients."""

    riley_minimum_n: int
    n_parameters: int
    n_labelled: int
    anticipated_r2_cs: float | None = None


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows; plain values, no model objects.

    Attributes
    ----------
    title, date : str
        Heading of the report and the date (and time) of the run.
    cohort : str
        Cohort name (as in the run name).
    data_digest, config_digest, git_commit : str
        Provenance: digest of the raw cohort files, of the resolved configuration, and
        the commit of the code (with "-dirty" if it had uncommitted changes).
    counts : Counts
    label : LabelDefinition
    censoring : str
        Handling of values below the LLOQ: "lloq_sqrt2", "lloq_half", "lloq",
        "censored_normal" (described) or any text (shown as is).
    plate_correction : str
        "none", "median", "bridge" (described) or any text.
    analytes : sequence of str
        Panel analytes the model uses.
    features : sequence of str
        Every candidate model feature (levels, log ratios, changes, clinical covariates).
    validation : ValidationSettings
    families : sequence of FamilyRow
        Every validated family and reference, in the order of the tables.
    best_family : str
        Name of the family that was registered (one of ``families``).
    sample_size : SampleSize
    responder_rate : mapping of str to MetricCI
        Arm -> proportion of good responders among its labelled patients, with interval.
    figures : mapping of str to sequence of (caption, PNG)
        Section id of :data:`FIGURE_SECTIONS` -> (caption, PNG as bytes or a path).
    treated_arm, control_arm : str
        Arm the model is developed in, and the arm without stem cells.
    missing_data : str
        How missing predictor values were handled (plain text).
    simulated : bool
        The cohort comes from ``csf-responder simulate``: the report says so everywhere
        it matters.
    """

    title: str
    date: str
    cohort: str
    data_digest: str
    config_digest: str
    git_commit: str
    counts: Counts
    label: LabelDefinition
    censoring: str
    plate_correction: str
    analytes: Sequence[str]
    features: Sequence[str]
    validation: ValidationSettings
    families: Sequence[FamilyRow]
    best_family: str
    sample_size: SampleSize
    responder_rate: Mapping[str, MetricCI]
    figures: Mapping[str, Sequence[tuple[str, ImageSource]]] = field(default_factory=dict)
    treated_arm: str = "MSC"
    control_arm: str = "control"
    missing_data: str = ("Missing predictor values are imputed with the median of the "
                         "training patients, fitted inside every cross-validation fold so "
                         "that no test patient informs the imputed values; the final model's "
                         "medians come from all labelled patients. Patients without a "
                         "responder label are not imputed: they are excluded.")
    simulated: bool = False


# ----------------------------------------------------------------------------- formatting


def _finite(value: object) -> bool:
    """A real, finite number (numpy scalars included)."""
    if value is None or isinstance(value, bool | str):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; "n/a" when missing or not finite."""
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def format_ci(value: MetricCI | None, *, digits: int = 2, percent: bool = False) -> str:
    """A value with its interval for clinicians: "0.72 (0.55-0.88)".

    A negative bound turns the dash into "to" ("-0.05 (-0.20 to 0.10)"); ``percent``
    gives "40% (28-53%)"; a missing estimate is "n/a", a missing interval is left out.
    """
    if value is None or not _finite(value.estimate):
        return "n/a"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    digits = 0 if percent else digits
    estimate = f"{value.estimate * scale:.{digits}f}{unit}"
    if not (_finite(value.low) and _finite(value.high)):
        return estimate
    low, high = value.low * scale, value.high * scale
    dash = " to " if min(low, high) < 0 else "-"
    return f"{estimate} ({low:.{digits}f}{dash}{high:.{digits}f}{unit})"


def _p_value(p: float | None) -> str:
    if not _finite(p):
        return "not run"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def _parameter(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _e(value: object) -> str:
    """HTML-escape anything that comes from data or configuration."""
    return escape(str(value), quote=True)


# ----------------------------------------------------------------------------- figures


def _png_bytes(source: ImageSource) -> bytes:
    data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    what = "(bytes)" if isinstance(source, bytes | bytearray) else str(source)
    if not data.startswith(_PNG):
        raise ValueError(f"figure {what} is not a PNG image")
    if not data.rstrip(b"\x00").endswith(_IEND):  # browsers draw a truncated PNG in part
        raise ValueError(f"figure {what} is a truncated PNG image (no IEND chunk)")
    return data


class _Figures:
    """Numbers the figures across the report and embeds them as data URIs."""

    def __init__(self, figures: Mapping[str, Sequence[tuple[str, ImageSource]]],
                 sections: Sequence[str] = FIGURE_SECTIONS):
        unknown = sorted(set(figures) - set(sections))
        if unknown:
            raise ValueError(f"figures for unknown sections {unknown}; "
                             f"known: {list(sections)}")
        self._figures = figures
        self._count = 0

    def html(self, section: str, *, empty: str | None = None) -> str:
        entries = self._figures.get(section, ())
        if not entries:
            return f'<p class="note">{empty}</p>' if empty else ""
        parts = []
        for caption, source in entries:
            self._count += 1
            uri = "data:image/png;base64," + base64.b64encode(_png_bytes(source)).decode("ascii")
            parts.append(
                f'<figure><img id="figure-{self._count}" src="{uri}" alt="{_e(caption)}">'
                f"<figcaption><b>Figure {self._count}.</b> {_e(caption)}</figcaption></figure>")
        return "\n".join(parts)


# ----------------------------------------------------------------------------- sections


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table; the cells must already be escaped or formatted."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _label_sentence(label: LabelDefinition) -> str:
    if label.description:
        return _e(label.description)
    if label.source == "slope":
        return (f"A patient is a <b>good responder</b> when the slope of the functional score "
                f"(ALSFRS-R for ALS) over the follow-up to <b>{label.horizon_months:g} "
                f"months</b> after the first injection improves by at least "
                f"<b>{label.cutoff:.0%}</b> over the slope of the lead-in period before it "
                f"(the definition of Oh et al. 2018).")
    return (f"The responder label is the 0/1 column <code>{_e(label.source)}</code> of the "
            f"patients file (cutoff {label.cutoff:g}, horizon "
            f"{label.horizon_months:g} months, as configured).")


def _summary(r: ReportInputs, best: FamilyRow, ci: str) -> str:
    n, riley = r.sample_size.n_labelled, r.sample_size.riley_minimum_n
    corrected = best.optimism_corrected.get("roc_auc")
    delta = best.metrics.get("delta_auc_vs_clinical")
    lines = [
        f"Development and internal validation of a model predicting which "
        f"<b>{_e(r.treated_arm)}</b> patients are good responders "
        f"({r.label.cutoff:.0%} slope improvement at {r.label.horizon_months:g} months), "
        f"from cerebrospinal-fluid cytokines and clinical data, in cohort "
        f"<b>{_e(r.cohort)}</b>.",
        f"{n} labelled {_e(r.treated_arm)} patients; "
        f"{len(r.families)} model families and references compared by "
        f"{r.validation.repeats}&times;{r.validation.outer_splits}-fold nested "
        f"cross-validation.",
        f"Best family <b>{_e(best.name)}</b>: ROC AUC "
        f"<b>{format_ci(best.metrics.get('roc_auc'))}</b> ({ci} CI)"
        + (f", optimism-corrected {_number(corrected)}" if _finite(corrected) else "")
        + (f"; ROC AUC minus that of the clinical-only model {format_ci(delta)}"
           if delta is not None else "") + ".",
        f"Good responders: {_rates(r)}.",
        f"Sample size: {n} labelled patients against a Riley minimum of {riley}"
        + (" &mdash; <b>below the minimum</b>." if n < riley else "."),
    ]
    warnings = []
    if r.simulated:
        warnings.append("<b>Simulated data.</b> This cohort was generated by "
                        "<code>csf-responder simulate</code>; the numbers below describe the "
                        "simulator, not patients.")
    provenance = _table(("Provenance", ""), [
        ("Date", _e(r.date)), ("Cohort", _e(r.cohort)),
        ("Data digest", f"<code>{_e(r.data_digest)}</code>"),
        ("Configuration digest", f"<code>{_e(r.config_digest)}</code>"),
        ("Code (git commit)", f"<code>{_e(r.git_commit)}</code>"),
    ], cls="provenance")
    return ("".join(f'<div class="warning">{w}</div>' for w in warnings)
            + "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>" + provenance)


def _rates(r: ReportInputs) -> str:
    if not r.responder_rate:
        return "not available"
    return "; ".join(f"{_e(arm)} {format_ci(rate, percent=True)}"
                     for arm, rate in r.responder_rate.items())


def _participants(r: ReportInputs) -> str:
    c = r.counts
    arms = list(dict.fromkeys([*c.patients_per_arm, *c.labelled_per_arm]))
    rows = [(_e(arm), str(c.patients_per_arm.get(arm, 0)), str(c.labelled_per_arm.get(arm, 0)))
            for arm in arms]
    rows.append(("<b>Total</b>", f"<b>{sum(c.patients_per_arm.values())}</b>",
                 f"<b>{sum(c.labelled_per_arm.values())}</b>"))
    parts = [
        f"<p>Cohort <b>{_e(r.cohort)}</b>: patients with ALS in a trial of repeated "
        f"intrathecal bone-marrow mesenchymal stem-cell (BM-MSC) injections, arm "
        f"<b>{_e(r.treated_arm)}</b>, against a <b>{_e(r.control_arm)}</b> arm without stem "
        f"cells. The model is developed in the {_e(r.treated_arm)} arm only.</p>",
        _table(("Arm", "Patients", "With a responder label"), rows),
    ]
    if c.excluded:
        parts.append("<h3>Patients without a label, by reason</h3>")
        parts.append(_table(("Reason", "Patients"),
                            [(_e(k), str(v)) for k, v in c.excluded.items()]))
    else:
        parts.append('<p class="note">No patient was excluded from labelling.</p>')
    return "\n".join(parts)


def _data_preparation(r: ReportInputs) -> str:
    censoring = _CENSORING.get(r.censoring, _e(r.censoring))
    plate = _PLATE.get(r.plate_correction, f"Plate correction: {_e(r.plate_correction)}.")
    rejected = r.counts.rejected_rows
    parts = [
        "<p>Input files are checked against the input contract; a row that breaks a rule is "
        "rejected (and listed in the run's rejects table), never silently repaired.</p>",
        _table(("File", "Rejected rows"), [(_e(k), str(v)) for k, v in rejected.items()])
        if rejected else '<p class="note">No input row was rejected.</p>',
        f"<p><b>Censoring below the lower limit of quantification (LLOQ).</b> Cytokine "
        f"concentrations below the assay's LLOQ are {censoring}; values above the upper limit "
        f"(ULOQ) are set to the ULOQ; then concentrations are log-transformed.</p>",
        f"<p><b>Plate effects.</b> {plate}</p>",
    ]
    return "\n".join(parts)


def _outcome(r: ReportInputs) -> str:
    rows = [(_e(arm), format_ci(rate, percent=True)) for arm, rate in r.responder_rate.items()]
    control = r.responder_rate.get(r.control_arm)
    floor = (f"<p><b>Noise floor.</b> {format_ci(control, percent=True)} of the "
             f"{_e(r.control_arm)} patients, who received no stem cells, meet the same "
             f"definition: that is how often &ldquo;response&rdquo; happens without "
             f"treatment (natural variability of the slopes, measurement noise).</p>"
             if control is not None else
             f'<p class="note">No responder rate is available for the {_e(r.control_arm)} '
             f"arm, so the rate of &ldquo;response&rdquo; without treatment is unknown.</p>")
    return "\n".join([
        f"<p>{_label_sentence(r.label)}</p>",
        _table(("Arm", f"Good responders ({_ci_label(r)} CI)"), rows)
        if rows else '<p class="note">No responder rates.</p>',
        floor,
    ])


def _ci_label(r: ReportInputs) -> str:
    return f"{r.validation.ci_level:.0%}"


def _predictors(r: ReportInputs) -> str:
    features = "".join(f"<li><code>{_e(f)}</code></li>" for f in r.features)
    return "\n".join([
        f"<p><b>Analytes</b> ({len(r.analytes)}), measured in cerebrospinal fluid (CSF) "
        f"sampled at the intrathecal injections of the {_e(r.treated_arm)} arm: "
        + ", ".join(f"<b>{_e(a)}</b>" for a in r.analytes) + ".</p>",
        f"<p><b>Candidate features</b> ({len(r.features)}): log concentrations, log ratios "
        f"of analytes, changes from baseline to week 4 and clinical covariates, as named "
        f"below.</p>",
        f'<ul class="columns">{features}</ul>',
    ])


def _sample_size(r: ReportInputs) -> str:
    s = r.sample_size
    r2 = (f" (anticipated Cox-Snell R&sup2; {_number(s.anticipated_r2_cs, 3)}, from the "
          f"cross-validated AUC and the responder rate)"
          if _finite(s.anticipated_r2_cs) else "")
    parts = [
        f"<p>The minimum sample size of Riley et al. (BMJ 2020;368:m441) for a model with "
        f"<b>{s.n_parameters}</b> candidate parameters is <b>{s.riley_minimum_n}</b> "
        f"patients{r2}. This analysis has <b>{s.n_labelled}</b> labelled "
        f"{_e(r.treated_arm)} patients.</p>",
    ]
    if s.n_labelled < s.riley_minimum_n:
        parts.append(
            f'<div class="warning"><b>Below the minimum sample size</b> ({s.n_labelled} of '
            f"{s.riley_minimum_n} patients). Expect an over-fitted model whose predictions are "
            f"too extreme, and wide intervals; treat the results as exploratory.</div>")
    return "\n".join(parts)


def _methods(r: ReportInputs) -> str:
    v = r.validation
    models = [f for f in r.families if f.role == "model"]
    references = [f for f in r.families if f.role == "reference"]
    optimism = (f"The final model, refitted on all labelled patients, has its apparent ROC "
                f"AUC, calibration slope and Brier score corrected for optimism with "
                f"{v.n_optimism} bootstrap resamples (Harrell)."
                if v.n_optimism else "No optimism correction was run.")
    permutation = (f"A permutation test repeats the whole nested procedure on "
                   f"{v.n_permutations} shuffled label sets for a p-value of each family's "
                   f"AUC." if v.permutation_test else
                   "No permutation test was run (validation.permutation_test: false).")
    return "\n".join([
        "<ul>",
        "<li><b>Model families</b>: "
        + (", ".join(f"<b>{_e(f.name)}</b>" for f in models) or "none")
        + "; <b>references</b>: "
        + (", ".join(f"<b>{_e(f.name)}</b>" for f in references) or "none")
        + ". Each family is a pipeline of feature construction, imputation, scaling and a "
          "classifier, fitted as a whole inside every fold.</li>",
        f"<li><b>Nested cross-validation</b>: {v.repeats} repeats of stratified "
        f"{v.outer_splits}-fold outer cross-validation; the hyperparameters are chosen by a "
        f"{v.inner_splits}-fold search inside each outer training fold.</li>",
        f"<li><b>Intervals</b>: {_ci_label(r)} intervals from {v.n_bootstrap} patient-level "
        f"bootstrap resamples of the out-of-fold predictions.</li>",
        "<li><b>ROC AUC</b> from pairs of patients in the same test fold (fold-pair AUC), "
        "which is unbiased under the null at small N; the other metrics from the pooled "
        "out-of-fold predictions.</li>",
        f"<li>{optimism}</li>",
        f"<li>{permutation}</li>",
        f"<li><b>Classification threshold</b>: a predicted probability of good response of "
        f"{v.threshold:g} or more calls a patient a responder (sensitivity, specificity, "
        f"predictive values, MCC). No resampling or reweighting for class imbalance.</li>",
        "<li><b>Model output</b>: the probability that a patient is a good responder.</li>",
        "</ul>",
    ])


def _development(r: ReportInputs) -> str:
    rows = []
    for f in r.families:
        params = ", ".join(f"<code>{_e(k)}</code> = {_e(_parameter(v))}"
                           for k, v in f.hyperparameters.items()) or "(none tuned)"
        name = f"<b>{_e(f.name)}</b>" + (" (best)" if f.name == r.best_family else "")
        rows.append((name, _e(f.role), params))
    return "\n".join([
        f"<p>The registered model is the best family, <b>{_e(r.best_family)}</b>, refitted "
        f"with the hyperparameters below on all {r.sample_size.n_labelled} labelled "
        f"patients.</p>",
        _table(("Family", "Role", "Hyperparameters chosen for the final model"), rows),
    ])


def _performance(r: ReportInputs) -> str:
    header = ["Metric"] + [
        f"{_e(f.name)}" + ("<br><small>(reference)</small>" if f.role == "reference" else "")
        + ("<br><small>(best)</small>" if f.name == r.best_family else "")
        for f in r.families]
    rows = [[label] + [format_ci(f.metrics.get(key)) for f in r.families]
            for key, label in METRIC_LABELS.items()]
    rows += [[label] + [_number(f.optimism_corrected.get(key)) for f in r.families]
             for key, label in OPTIMISM_LABELS.items()]
    rows.append(["Permutation p-value of the ROC AUC"]
                + [_p_value(f.permutation_p) for f in r.families])
    return "\n".join([
        f"<p>Each cell: cross-validated estimate ({_ci_label(r)} CI). Optimism-corrected "
        f"values are those of the final model (no interval). Threshold-dependent metrics at a "
        f"probability of {r.validation.threshold:g}.</p>",
        _table(header, rows, cls="metrics"),
    ])


def _limitations(r: ReportInputs) -> str:
    s = r.sample_size
    control = r.responder_rate.get(r.control_arm)
    items = [
        f"<b>Prognosis and treatment benefit are mixed.</b> The model is developed in the "
        f"{_e(r.treated_arm)} arm only, so it predicts who does well <i>on</i> treatment, "
        f"not who does well <i>because of</i> it: some predicted responders would have "
        f"responded without stem cells"
        + (f" ({format_ci(control, percent=True)} of the {_e(r.control_arm)} arm did)"
           if control is not None else "") + ".",
        f"<b>CSF only in the treated arm.</b> Cerebrospinal fluid is sampled at the "
        f"intrathecal injections, so the {_e(r.control_arm)} arm has no cytokines: whether a "
        f"cytokine predicts benefit of treatment (rather than the course of the disease) "
        f"cannot be tested.",
        f"<b>Small sample.</b> {s.n_labelled} labelled patients"
        + (f", below the Riley minimum of {s.riley_minimum_n}"
           if s.n_labelled < s.riley_minimum_n else "")
        + ": intervals are wide and the model may not transport.",
        "<b>Internal validation only.</b> No external (other centre, later period) "
        "validation; performance in new patients is likely lower.",
        "<b>Fairness not assessed.</b> Performance is not reported by sex, age or site of "
        "onset (TRIPOD+AI item 14); at this sample size such subgroups would be too small "
        "to estimate it.",
    ]
    if r.simulated:
        items.insert(0, "<b>Simulated data.</b> The cohort was generated by the project's "
                        "simulator; nothing here describes real patients.")
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


# ----------------------------------------------------------------------------- page

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
max-width:62rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#1b1b1b}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:1px solid #ccc;padding-bottom:.2rem}h3{font-size:1rem}
.tripod{color:#666;font-size:.8rem;font-weight:normal;margin-left:.5rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2}table.metrics td:not(:first-child){white-space:nowrap}
.warning{background:#fff4e5;border-left:4px solid #e67e00;padding:.5rem .8rem;margin:.6rem 0}
.note{color:#555;font-style:italic}ul.columns{columns:3 14rem;font-size:.85rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#333}nav ol{columns:2 16rem;font-size:.9rem}
code{font-size:.85em}.provenance td:first-child{font-weight:bold}
@media print{nav{display:none}h2{break-after:avoid}figure{break-inside:avoid}}
"""

# After `load`, count the images that decoded; a headless browser reads the attributes.
_SCRIPT = """
(function () {
  function check() {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    document.body.setAttribute("data-images-loaded", String(images.length - broken.length));
    document.body.setAttribute("data-images-total", String(images.length));
    document.body.setAttribute("data-images-broken",
      broken.map(function (i) { return i.id; }).join(" "));
  }
  if (document.readyState === "complete") { check(); }
  else { window.addEventListener("load", check); }
})();
"""

_EXPLANATIONS = ("<p>SHAP values of the final model of each family: how much each feature "
                 "moves a patient's predicted log-odds of good response. They describe the "
                 "model, not causes.</p>")
_NO_FIGURES = {"performance": "No performance figures were produced.",
               "explanations": "No explanation figures were produced."}

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


def render_report(inputs: ReportInputs) -> str:
    """The report of one training run as a self-contained HTML page.

    Parameters
    ----------
    inputs : ReportInputs
        Every number, name and figure shown; nothing else is read except the PNG files
        that ``inputs.figures`` names by path.

    Returns
    -------
    str
        The HTML document (UTF-8 text): sections of :data:`SECTIONS` in order, figures
        embedded as base64 ``data:image/png`` URIs, no external reference.

    Raises
    ------
    ValueError
        ``best_family`` is not one of ``families``, a family's role is neither "model" nor
        "reference", a figure is not a PNG, or figures name an unknown section.
    """
    r = inputs
    names = [f.name for f in r.families]
    if r.best_family not in names:
        raise ValueError(f"best family {r.best_family!r} is not one of the families {names}")
    bad = [f.name for f in r.families if f.role not in ("model", "reference")]
    if bad:
        raise ValueError(f"families {bad} have a role other than 'model' or 'reference'")
    best = next(f for f in r.families if f.name == r.best_family)
    figures = _Figures(r.figures)
    ci = _ci_label(r)

    builders = {
        "summary": lambda: _summary(r, best, ci),
        "participants": lambda: _participants(r),
        "data-preparation": lambda: _data_preparation(r),
        "outcome": lambda: _outcome(r),
        "predictors": lambda: _predictors(r),
        "sample-size": lambda: _sample_size(r),
        "missing-data": lambda: f"<p>{_e(r.missing_data)}</p>",
        "methods": lambda: _methods(r),
        "development": lambda: _development(r),
        "performance": lambda: _performance(r),
        "explanations": lambda: _EXPLANATIONS,
        "limitations": lambda: _limitations(r),
    }
    sections = []
    for section, heading, items in SECTIONS:  # in page order: figures are numbered in it
        empty = _NO_FIGURES.get(section)
        body = builders[section]() + figures.html(section, empty=empty)
        sections.append(f'<section id="{section}"><h2>{heading}'
                        f'<span class="tripod">TRIPOD+AI {items}</span></h2>\n{body}\n'
                        f"</section>")
    subtitle = (f"{_e(r.cohort)} &middot; {_e(r.date)} &middot; "
                f"{r.sample_size.n_labelled} labelled {_e(r.treated_arm)} patients"
                + (" &middot; <b>simulated data</b>" if r.simulated else ""))
    return _page(r.title, subtitle, [(s, h) for s, h, _ in SECTIONS], sections)


def _page(title: str, subtitle: str, contents: Sequence[tuple[str, str]],
          sections: Sequence[str]) -> str:
    """The HTML document: header, table of contents (id, heading), sections, script."""
    nav = ("<nav><ol>" + "".join(f'<li><a href="#{s}">{h}</a></li>' for s, h in contents)
           + "</ol></nav>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><p class="note">{subtitle}</p></header>\n'
        f"{nav}\n<main>\n" + "\n".join(sections) + "\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_report(html: str, directory: str | os.PathLike, name: str) -> Path:
    """Write ``html`` to ``directory/name`` (".html" added if missing) atomically.

    The text goes to a temporary file in the same directory, is flushed to disk, then
    renamed over the target: a reader never sees a half-written report, and a failure
    leaves any previous report in place and no temporary file behind. ``directory`` is
    created if needed; ``name`` must be a bare file name. Returns the path written.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"report name {name!r} must be a bare file name")
    if not name.endswith(".html"):
        name += ".html"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


# ------------------------------------------------------------------------ effect

#: (id, heading) of every section of the effect report, in page order.
EFFECT_SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("data", "Patients and outcomes"),
    ("methods", "Methods"),
    ("roles", "Prognostic and predictive features"),
    ("benefit", "Individual benefit"),
    ("ranking", "Who benefits: ranking and calibration"),
    ("enrichment", "Trial enrichment"),
    ("study-size", "Study size"),
    ("limitations", "Limitations"),
)

_OUTCOME_WORDS = {
    "slope": ("follow-up slope of the functional score", "points/month"),
    "change": ("change of the functional score from baseline to the horizon", "points"),
    "responder": ("good response (responder label)", "probability"),
}


@dataclass(frozen=True)
class EffectReportInputs:
    """Everything the effect report shows (see :func:`render_effect_report`)."""

    title: str
    date: str
    cohort: str
    simulated: bool
    treated_arm: str
    control_arm: str
    outcome: str                                # the primary outcome
    n_per_arm: dict[str, int]
    n_with_outcome: dict[str, int]
    csf_per_arm: dict[str, int]
    csf_separable: bool
    limits: list[str]                           # what the data cannot answer, in words
    notes: list[str]                            # what was left out, in words
    summary: str                                # the prognostic/predictive calls in words
    average: dict[str, MetricCI]                # outcome -> treated minus control
    roles: Any                                  # effect.prognostic_predictive table
    qini: dict[str, MetricCI]                   # estimator -> Qini area
    loading: dict[str, MetricCI]                # estimator -> heterogeneity loading
    enrichment: Any                             # effect.plan_enrichment table
    learning_curve: Any                         # effect.learning_curve table
    riley: dict[str, float]
    n_folds: int
    interval_level: float
    ci_level: float
    alpha: float
    estimators: list[str]
    figures: dict[str, list[tuple[str, ImageSource]]] = field(default_factory=dict)


def _effect_summary(r: EffectReportInputs) -> str:
    words, unit = _OUTCOME_WORDS[r.outcome]
    average = r.average.get(r.outcome)
    parts = [f"<p>Average effect of {_e(r.treated_arm)} vs {_e(r.control_arm)} on the "
             f"{words}: <b>{format_ci(average)}</b> {unit} ({r.ci_level:.0%} CI).</p>",
             f"<p><b>{_e(r.summary)}</b></p>"]
    parts += [f'<p class="warning">{_e(limit)}</p>' for limit in r.limits]
    if r.simulated:
        parts.append('<p class="warning"><b>Simulated data.</b> The cohort was generated by '
                     "the project's simulator; nothing here describes real patients.</p>")
    return "".join(parts)


def _effect_data(r: EffectReportInputs) -> str:
    arms = [r.treated_arm, r.control_arm]
    rows = [[_e(arm), str(r.n_per_arm.get(arm, 0)), str(r.n_with_outcome.get(arm, 0)),
             str(r.csf_per_arm.get(arm, 0))] for arm in arms]
    table = _table(["arm", "patients", f"with the {r.outcome} outcome", "with baseline CSF"],
                   rows)
    averages = _table(["outcome", f"{r.treated_arm} minus {r.control_arm} ({r.ci_level:.0%} CI)"],
                      [[_e(_OUTCOME_WORDS[o][0]), f"{format_ci(ci)} {_OUTCOME_WORDS[o][1]}"]
                       for o, ci in r.average.items()])
    notes = "".join(f"<li>{_e(note)}</li>" for note in r.notes)
    return (table + "<p>Outcomes are oriented so that a higher value is better. A patient "
            "without an outcome (dropped out before the horizon, too few visits) still gets "
            "an estimated benefit from their covariates but enters no fit that needs the "
            "outcome; those without a label are listed, with the reason, in the run's "
            "rejects table.</p>" + averages + (f"<ul>{notes}</ul>" if notes else ""))


def _effect_methods(r: EffectReportInputs) -> str:
    return (
        f"<p>Only what is known before treatment enters: CSF at baseline and the clinical "
        f"covariates, standardised (per SD). Each patient's benefit is <b>cross-fitted</b> "
        f"({r.n_folds} folds stratified by arm): the models that estimate it, feature steps "
        f"included, were fitted on the other folds, so no estimate uses the patient's own "
        f"outcome. Estimators: <b>interaction</b>, least squares with treatment-by-feature "
        f"interactions (benefit = treatment coefficient + interactions; {r.interval_level:.0%} "
        f"interval from heteroskedasticity-robust HC3 standard errors); and T-learners "
        f"({_e(', '.join(n for n in r.estimators if n != 'interaction'))}), one model per "
        f"arm, benefit = prediction under {_e(r.treated_arm)} minus under "
        f"{_e(r.control_arm)} ({r.interval_level:.0%} interval from the SD of bootstrap "
        f"refits). Both intervals are of the <em>expected</em> benefit of patients with "
        f"these covariates, not of one patient's own response.</p>"
        f"<p>The benefit estimates are calibrated by their best linear predictor "
        f"(Chernozhukov et al. 2018): the outcome is regressed on the control prediction, "
        f"treatment, and treatment x estimated benefit; the last coefficient, the "
        f"<b>heterogeneity loading</b>, is 1 when the estimates' spread between patients is "
        f"real and 0 when none of it is. Enrichment plans with the calibrated benefit, so "
        f"a ranking that only reflects noise gains nothing.</p>"
        f"<p>Prognostic and predictive effects come from one interaction model on all "
        f"patients with the outcome; p-values from HC3 standard errors are Holm-adjusted "
        f"over the features (family-wise error {r.alpha:g} for each kind).</p>")


def _effect_roles(r: EffectReportInputs) -> str:
    rows = []
    for row in r.roles.itertuples(index=False):
        rows.append([_e(row.label),
                     format_ci(MetricCI(row.prognostic, row.prognostic_low, row.prognostic_high)),
                     _p_value(row.prognostic_p_holm),
                     format_ci(MetricCI(row.predictive, row.predictive_low, row.predictive_high)),
                     _p_value(row.predictive_p_holm), f"<b>{_e(row.role)}</b>"])
    unit = _OUTCOME_WORDS[r.outcome][1]
    return _table(["feature", f"prognostic ({unit} per SD)", "p (Holm)",
                   f"predictive ({unit} per SD)", "p (Holm)", "role"], rows, cls="metrics")


def _effect_ranking(r: EffectReportInputs) -> str:
    rows = [[_e(name), format_ci(r.qini.get(name), digits=3),
             format_ci(r.loading.get(name))] for name in r.estimators]
    return ("<p>The Qini area is the area between the uplift curve and random targeting "
            "(outcome units per patient): above 0 when the ranking puts patients who benefit "
            "first. The heterogeneity loading is 1 for a well-calibrated benefit ranking, 0 "
            "for one that carries no information.</p>"
            + _table(["estimator", f"Qini area ({r.ci_level:.0%} CI)",
                      f"heterogeneity loading ({r.ci_level:.0%} CI)"], rows))


def _effect_enrichment(r: EffectReportInputs) -> str:
    table = r.enrichment
    if table is None or len(table) == 0:
        return '<p class="note">No enrichment table.</p>'
    columns = [c for c in table.columns if c.startswith("n_per_arm_")]
    head = ["threshold", "screened out", "expected effect (CI)", "observed (CI), n",
            *(c.removeprefix("n_per_arm_").replace("_", "% ", 1) + " per arm"
              for c in columns)]
    rows = []
    for _, row in table.iterrows():
        expected = MetricCI(row.get("effect", math.nan), row.get("effect_ci_low", math.nan),
                            row.get("effect_ci_high", math.nan))
        observed = MetricCI(row.get("observed", math.nan), row.get("observed_low", math.nan),
                            row.get("observed_high", math.nan))
        rows.append([_number(row.get("threshold")),
                     f"{100 * row.get('fraction_screened_out', math.nan):.0f}%",
                     format_ci(expected),
                     f"{format_ci(observed)}, {_number(row.get('n_observed'), 0)}",
                     *(_number(row.get(c), 0) for c in columns)])
    return ("<p>Rule: enrol patients whose score is at least the threshold (the first row: "
            "everyone). Expected effect: change at the horizon, treated minus control, "
            "among the enrolled, from the calibrated benefit (its interval from the "
            "calibration fit); observed: the difference in this cohort's enrolled patients "
            "with the outcome. Patients per arm for a two-sided test, by simulating trials "
            "from the fitted models and by the closed-form two-sample formula.</p>"
            + _table(head, rows, cls="metrics"))


def _effect_study_size(r: EffectReportInputs) -> str:
    minimum = r.riley.get("riley_minimum_n")
    text = ("<p>The learning curve shows the cross-validated AUC of the responder model in "
            "simulated studies of growing size.</p>")
    if _finite(minimum):
        text += (f"<p>Riley et al. (BMJ 2020;368:m441) minimum sample size to develop the "
                 f"responder model: <b>{minimum:.0f}</b> labelled treated patients "
                 f"({r.riley.get('n_parameters', 0):.0f} candidate parameters, anticipated "
                 f"AUC {_number(r.riley.get('anticipated_auc'))}, responder rate "
                 f"{_number(r.riley.get('prevalence'))}).</p>")
    return text


def _effect_limitations(r: EffectReportInputs) -> str:
    items = [_e(limit) for limit in r.limits]
    items.append("A benefit estimate is a prediction for patients like this one; with a "
                 "few dozen patients per arm its interval is wide, and the calls above "
                 "are hypotheses for a confirmatory trial, not proof.")
    items.append("The outcome models assume missing outcomes are missing at random given "
                  "the covariates.")
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def render_effect_report(inputs: EffectReportInputs) -> str:
    """The report of one effect run as a self-contained HTML page (figures embedded, the
    same style and image check as :func:`render_report`)."""
    r = inputs
    figures = _Figures(r.figures, sections=[s for s, _ in EFFECT_SECTIONS])
    builders = {
        "summary": _effect_summary, "data": _effect_data, "methods": _effect_methods,
        "roles": _effect_roles, "benefit": lambda _: "", "ranking": _effect_ranking,
        "enrichment": _effect_enrichment, "study-size": _effect_study_size,
        "limitations": _effect_limitations,
    }
    sections = [f'<section id="{s}"><h2>{h}</h2>\n{builders[s](r)}{figures.html(s)}\n'
                f"</section>" for s, h in EFFECT_SECTIONS]
    subtitle = (f"{_e(r.cohort)} &middot; {_e(r.date)} &middot; "
                + " &middot; ".join(f"{n} {_e(arm)}" for arm, n in r.n_per_arm.items())
                + (" &middot; <b>simulated data</b>" if r.simulated else ""))
    return _page(r.title, subtitle, list(EFFECT_SECTIONS), sections)
