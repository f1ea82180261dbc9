"""Figures of a model family's validation, one PNG each, for the MLflow UI.

Every plotting function takes plain arrays and frames (no MLflow objects), writes one PNG
of about 5.5 x 4.5 in at 100 dpi and returns its path. Inputs follow
:mod:`csf_responder.metrics`: labels ``y`` of shape (n_patients,) in {0, 1} (1 = good
responder) and out-of-fold probabilities ``oof`` of shape (n_repeats, n_patients) (or one
vector). Bootstrap bands resample patients with replacement within each class, with the
same resamples as :func:`csf_responder.metrics.bootstrap_metrics` for the same seed, and
do not refit the models.

Matplotlib is imported inside the functions, and figures are built with the
object-oriented API (``matplotlib.figure.Figure`` on its own Agg canvas): neither the
global backend (no ``matplotlib.use``), nor pyplot's figure registry, nor rcParams is
touched, so nothing is left open after a call, nothing leaks across calls, and a call
may run in a background thread. A figure is drawn once and cropped to its content (the
effect of ``bbox_inches="tight"`` at half the cost; see :func:`_save`).

The numbers behind the ROC, PR, calibration and confusion matrix figures come from small
public helpers (:func:`roc_band`, :func:`pr_band`, :func:`calibration_groups`,
:func:`confusion_counts`) that can be checked on their own.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from csf_responder.metrics import MetricCI, _check, _stratified_resamples

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "benefit_calibration_plot", "benefit_plot", "calibration_groups", "calibration_plot",
    "confusion_counts", "confusion_matrix_plot", "decision_curve_plot", "drift_plot",
    "enrichment_plot", "family_comparison_plot", "learning_curve_plot", "pr_band", "pr_plot",
    "qini_plot", "roc_band", "roc_plot", "roles_plot", "shap_bar_plot", "shap_beeswarm_plot",
    "shap_dependence_plot", "shap_waterfall_plot",
]

_AXES = (4.6, 3.3)  # inches of the plotting area; about 5.6 x 4.4 in with its labels
_DPI = 100
_PAD = 8  # pixels of white around the cropped content
_GRID = np.linspace(0.0, 1.0, 101)  # FPR grid of the ROC curve, recall grid of the PR curve
# Font sizes (points) are set on the artists, never through rcParams (global state).
_TITLE_SIZE = 11
_TICK_SIZE = 10  # matplotlib's default, used to size the margin for long tick labels
_LEGEND_SIZE = 9
_MODEL = "#1f5fa8"
_REFERENCE = "#7f7f7f"
_POSITIVE, _NEGATIVE = "good responder", "poor responder"


# --------------------------------------------------------------------------- helpers

def _canvas(axes: tuple[float, float] = _AXES, *, left: float = 1.0, right: float = 0.9,
            bottom: float = 0.8, top: float = 0.9) -> tuple[Figure, Axes]:
    """A new figure on its own Agg canvas (outside pyplot: nothing to close) with one axes
    of ``axes`` inches placed at fixed margins (inches).

    The margins are generous on purpose: :func:`_save` crops the white away, so the PNG
    is about the axes plus what its labels use, and nothing is laid out twice.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = left + axes[0] + right, bottom + axes[1] + top
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((left / width, bottom / height, axes[0] / width, axes[1] / height))
    return figure, ax


def warm_up() -> None:
    """Do what a process's first figure does once (import matplotlib's Agg backend, load
    its fonts: about 0.3 s) on a figure drawn and dropped, so that a caller can have it
    done in another thread ahead of its first real figure."""
    figure, ax = _canvas()
    ax.set_title("warm-up")
    figure.canvas.draw()


def _label_inches(labels: Sequence[str], fontsize: float) -> float:
    """Generous width estimate of the longest of ``labels`` (DejaVu Sans), in inches."""
    longest = max((max((len(line) for line in str(label).split("\n")), default=0)
                   for label in labels), default=0)
    return longest * 0.64 * fontsize / 72


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG to ``path`` (parents created), cropped to its content.

    One draw: the rendered canvas is cropped to its non-white pixels plus a small margin,
    as ``bbox_inches="tight"`` would, which lays the figure out twice. Should anything
    touch the canvas edge (it might extend beyond it), the figure is saved with a bounding
    box around all of its content and labels instead, which grows the canvas to fit.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    ink = rgba.view(np.uint32)[..., 0] != np.uint32(0xFFFFFFFF)  # not opaque white
    if ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any() or not ink.any():
        # every label counts in full: the axes' own tight box stops at the figure's edge
        labels = [text for ax in figure.axes
                  for text in (ax.xaxis.label, ax.yaxis.label, ax.title, *ax.texts)]
        box = figure.get_tightbbox(figure.canvas.get_renderer(), bbox_extra_artists=labels)
        figure.savefig(path, format="png", dpi=_DPI, bbox_inches=box.padded(_PAD / _DPI))
        return path
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = rgba[max(rows[0] - _PAD, 0):rows[-1] + _PAD + 1,
                max(cols[0] - _PAD, 0):cols[-1] + _PAD + 1, :3]
    Image.fromarray(np.ascontiguousarray(crop)).save(path, format="png", dpi=(_DPI, _DPI),
                                                     compress_level=3)
    return path


def _title(ax: Axes, title: str, subtitle: str | None = None, *, inches: float = 5.4) -> None:
    """Title and an optional subtitle line, left-aligned, each wrapped to ``inches``."""
    size = _TITLE_SIZE
    width = max(int(inches * 72 / (0.55 * size)), 20)
    lines = textwrap.wrap(title, width)
    if subtitle:
        lines += textwrap.wrap(subtitle, width)
    ax.set_title("\n".join(lines), loc="left", fontsize=size)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _fmt_ci(ci: MetricCI | None, ci_level: float) -> str:
    """``0.71 (95% CI 0.52 to 0.86)``; ``n/a`` where undefined."""
    if ci is None or not np.isfinite(ci.estimate):
        return "n/a"
    if not (np.isfinite(ci.low) and np.isfinite(ci.high)):
        return f"{ci.estimate:.2f} ({ci_level:.0%} CI n/a)"
    return f"{ci.estimate:.2f} ({ci_level:.0%} CI {ci.low:.2f} to {ci.high:.2f})"


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color="0.35", fontsize=10)


def _block_end_counts(y: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives of each row of ``P`` (m, n) by decreasing score.

    Entry k holds the counts when every patient scoring at least the (k+1)-th highest score
    is called positive, i.e. at the end of the block of scores tied with it, so tied
    patients never split (a tie is a straight segment of the curve).
    """
    n = y.size
    order = np.argsort(-P, axis=1, kind="stable")
    scores = np.take_along_axis(P, order, axis=1)
    hits = y[order]
    tp = np.cumsum(hits, axis=1)
    fp = np.cumsum(1 - hits, axis=1)
    is_end = np.ones(P.shape, dtype=bool)
    is_end[:, :-1] = scores[:, :-1] != scores[:, 1:]
    end = np.where(is_end, np.arange(n), n - 1)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    return np.take_along_axis(tp, end, axis=1), np.take_along_axis(fp, end, axis=1)


def _rowwise_searchsorted(a: np.ndarray, v: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(a[i], v[i], side)`` for every row i; ``a`` (m, k) sorted per row
    with values in [0, span), ``v`` (m, g); one call on offset rows."""
    span = float(max(a.max(initial=0), v.max(initial=0))) + 1.0
    offset = span * np.arange(a.shape[0])[:, None]
    found = np.searchsorted((a + offset).ravel(), (v + offset).ravel(), side=side)
    return found.reshape(v.shape) - a.shape[1] * np.arange(a.shape[0])[:, None]


def _roc_curves(y: np.ndarray, P: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR of each row of ``P`` (m, n) at the FPRs ``grid``: (m, len(grid)).

    Linear between the ROC's vertices (ties are diagonal segments); on a vertical
    segment, the highest TPR at that FPR (vertical averaging, Fawcett 2006).
    """
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full((P.shape[0], grid.size), np.nan)
    tp, fp = _block_end_counts(y, P)
    zeros = np.zeros((P.shape[0], 1))
    tp = np.hstack([zeros, tp]).astype(float)
    fp = np.hstack([zeros, fp]).astype(float)
    target = np.broadcast_to(grid * n_neg, (P.shape[0], grid.size))
    last = tp.shape[1] - 1
    lo = _rowwise_searchsorted(fp, target, side="right") - 1  # last vertex with fp <= target
    hi = np.minimum(lo + 1, last)
    fp_lo, fp_hi = np.take_along_axis(fp, lo, 1), np.take_along_axis(fp, hi, 1)
    tp_lo, tp_hi = np.take_along_axis(tp, lo, 1), np.take_along_axis(tp, hi, 1)
    step = fp_hi - fp_lo
    frac = np.divide(target - fp_lo, step, out=np.zeros_like(step), where=step > 0)
    return (tp_lo + np.clip(frac, 0.0, 1.0) * (tp_hi - tp_lo)) / n_pos


def _pr_curves(y: np.ndarray, P: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Precision of each row of ``P`` (m, n) at the recalls ``grid``: (m, len(grid)).

    The precision at the first threshold whose recall reaches r (the step function whose
    area is the average precision); r = 0 takes the first threshold with a positive.
    """
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return np.full((P.shape[0], grid.size), np.nan)
    tp, fp = _block_end_counts(y, P)
    target = np.broadcast_to(np.maximum(grid, 1e-9) * n_pos, (P.shape[0], grid.size))
    first = _rowwise_searchsorted(tp.astype(float), target - 1e-9, side="left")
    first = np.minimum(first, y.size - 1)
    tp_at = np.take_along_axis(tp, first, 1)
    return tp_at / (tp_at + np.take_along_axis(fp, first, 1))


def _band(curves, y: np.ndarray, P: np.ndarray, *, n_bootstrap: int, seed: int,
          ci_level: float) -> pd.DataFrame:
    """Mean curve over repeats and its pointwise percentile bootstrap band."""
    n_repeats = P.shape[0]
    mean = curves(y, P, _GRID).mean(axis=0)
    low = high = np.full(_GRID.size, np.nan)
    if 0 < y.sum() < y.size and n_bootstrap:
        idx, y_boot = _stratified_resamples(y, n_bootstrap, seed)
        boot = curves(y_boot, P[:, idx].reshape(-1, y.size), _GRID)  # repeat-major rows
        boot = boot.reshape(n_repeats, n_bootstrap, _GRID.size).mean(axis=0)
        alpha = (1 - ci_level) / 2
        low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return pd.DataFrame({"x": _GRID, "y": mean, "low": low, "high": high})


# --------------------------------------------------------------------------- ROC and PR

def roc_band(y: ArrayLike, oof: ArrayLike, *, n_bootstrap: int = 200, seed: int = 0,
             ci_level: float = 0.95) -> pd.DataFrame:
    """Out-of-fold ROC curve averaged over repeats, with a pointwise bootstrap band.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
        Observed class, 1 = good responder.
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
        Out-of-fold probabilities of class 1.
    n_bootstrap : int
        Resamples of the band (patients drawn within each class); 0: no band.
    seed : int
    ci_level : float

    Returns
    -------
    DataFrame
        One row per FPR of a grid of 101 points in [0, 1]: ``fpr``, ``tpr`` (the mean over
        repeats of each repeat's TPR at that FPR, vertical averaging), ``low`` and
        ``high`` (percentiles of the same mean over resamples). NaN with one class only.
    """
    y, P = _check(y, oof)
    band = _band(_roc_curves, y, P, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level)
    return band.rename(columns={"x": "fpr", "y": "tpr"})


def pr_band(y: ArrayLike, oof: ArrayLike, *, n_bootstrap: int = 200, seed: int = 0,
            ci_level: float = 0.95) -> pd.DataFrame:
    """Out-of-fold precision-recall curve averaged over repeats, with a bootstrap band.

    Like :func:`roc_band` on a recall grid: ``recall``, ``precision`` (mean over repeats of
    the precision at the first threshold reaching that recall), ``low``, ``high``.
    """
    y, P = _check(y, oof)
    band = _band(_pr_curves, y, P, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level)
    return band.rename(columns={"x": "recall", "y": "precision"})


def _curve_plot(band: pd.DataFrame, *, x: str, y: str, label: str, band_label: str,
                reference: tuple[np.ndarray, np.ndarray, str], xlabel: str, ylabel: str,
                legend_loc: str, path: str | Path, title: str, subtitle: str) -> Path:
    figure, ax = _canvas()
    ref_x, ref_y, ref_label = reference
    ax.plot(ref_x, ref_y, color=_REFERENCE, linestyle="--", linewidth=1, label=ref_label)
    if band["low"].notna().any():
        ax.fill_between(band[x], band["low"], band["high"], color=_MODEL, alpha=0.18,
                        linewidth=0, label=band_label)
    if band[y].notna().any():
        ax.plot(band[x], band[y], color=_MODEL, linewidth=2, label=label)
    else:
        _note(ax, "undefined: only one class among the patients")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel)
    ticks = np.linspace(0, 1, 6)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.legend(loc=legend_loc, fontsize=_LEGEND_SIZE)
    _title(ax, title, subtitle)
    return _save(figure, path)


def roc_plot(y: ArrayLike, oof: ArrayLike, *, auc: MetricCI, path: str | Path, title: str,
             n_bootstrap: int = 200, seed: int = 0, ci_level: float = 0.95) -> Path:
    """ROC curve of the out-of-fold predictions with a bootstrap band (PNG).

    The curve is :func:`roc_band`: each repeat's pooled out-of-fold ROC curve, averaged
    vertically over repeats, with a pointwise percentile band over ``n_bootstrap``
    stratified patient resamples; the chance diagonal is dashed. The legend reports
    ``auc`` as given (the cross-validated, fold-aware AUC of
    :func:`csf_responder.metrics.bootstrap_metrics`): the area under the drawn, pooled
    curve can differ from it a little (see :mod:`csf_responder.metrics`).

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    auc : MetricCI
        AUC with its interval, for the legend.
    path : str or Path
        Where to write the PNG.
    title : str
    n_bootstrap, seed, ci_level
        Band resamples, their seed and coverage.

    Returns
    -------
    Path
    """
    y_, P = _check(y, oof)
    band = roc_band(y_, P, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level)
    return _curve_plot(
        band, x="fpr", y="tpr", label=f"Model, AUC {_fmt_ci(auc, ci_level)}",
        band_label=f"{ci_level:.0%} bootstrap band",
        reference=(np.array([0, 1]), np.array([0, 1]), "Chance (AUC 0.50)"),
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)", legend_loc="lower right", path=path,
        title=title, subtitle=_cv_subtitle(y_, P))


def pr_plot(y: ArrayLike, oof: ArrayLike, *, pr_auc: MetricCI, path: str | Path, title: str,
            n_bootstrap: int = 200, seed: int = 0, ci_level: float = 0.95) -> Path:
    """Precision-recall curve of the out-of-fold predictions with a bootstrap band (PNG).

    The curve is :func:`pr_band` (precision at the first threshold reaching each recall,
    averaged over repeats), with a pointwise percentile band over stratified patient
    resamples; the dashed line is the prevalence of good responders (a model without
    skill). ``pr_auc`` (the average precision) is reported in the legend as given.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    pr_auc : MetricCI
    path : str or Path
    title : str
    n_bootstrap, seed, ci_level

    Returns
    -------
    Path
    """
    y_, P = _check(y, oof)
    band = pr_band(y_, P, n_bootstrap=n_bootstrap, seed=seed, ci_level=ci_level)
    prevalence = float(y_.mean())
    return _curve_plot(
        band, x="recall", y="precision",
        label=f"Model, PR AUC {_fmt_ci(pr_auc, ci_level)}",
        band_label=f"{ci_level:.0%} bootstrap band",
        reference=(np.array([0, 1]), np.array([prevalence, prevalence]),
                   f"Prevalence (no skill) {prevalence:.2f}"),
        xlabel="Recall (sensitivity)", ylabel="Precision (positive predictive value)",
        legend_loc="lower left", path=path, title=title, subtitle=_cv_subtitle(y_, P))


def _cv_subtitle(y: np.ndarray, P: np.ndarray) -> str:
    n_pos = int(y.sum())
    return (f"{y.size} patients ({n_pos} good responders), out-of-fold, "
            f"{P.shape[0]} repeat{'s' if P.shape[0] > 1 else ''}")


# --------------------------------------------------------------------------- calibration

def _wilson(observed: np.ndarray, n: np.ndarray,
            ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of proportions ``observed`` out of ``n`` (n may be fractional)."""
    z = stats.norm.ppf(1 - (1 - ci_level) / 2)
    centre = (observed + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(observed * (1 - observed) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    low = np.clip(np.minimum(centre - half, observed), 0, 1)  # rounding at 0 and 1
    return low, np.clip(np.maximum(centre + half, observed), 0, 1)


def calibration_groups(y: ArrayLike, oof: ArrayLike, *, n_groups: int = 5,
                       ci_level: float = 0.95) -> pd.DataFrame:
    """Observed responder fraction in quantile groups of the pooled out-of-fold predictions.

    The predictions of all repeats are pooled (n_repeats x n_patients pairs) and cut at
    their quantiles into at most ``n_groups`` groups; tied predictions always share a
    group, so there are fewer groups when quantiles coincide (one group when every
    prediction is the same). The Wilson interval of a group's observed fraction counts
    patients, not patient-repeats: its size is the group's pairs divided by n_repeats
    (each patient appears once per repeat), otherwise the repeats would narrow it.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    n_groups : int
        Few for small cohorts (5 for about 30 patients).
    ci_level : float

    Returns
    -------
    DataFrame
        One row per non-empty group, by increasing prediction: ``n`` (pooled predictions),
        ``n_patients`` (``n`` / n_repeats), ``mean_predicted``, ``observed``, ``low``,
        ``high``.
    """
    if n_groups < 1:
        raise ValueError("n_groups must be at least 1")
    y, P = _check(y, oof)
    p = P.ravel()
    labels = np.tile(y, P.shape[0])
    edges = np.quantile(p, np.linspace(0, 1, n_groups + 1)[1:-1])
    group = np.searchsorted(edges, p, side="left")  # ties at an edge stay together
    _, group = np.unique(group, return_inverse=True)
    n = np.bincount(group).astype(float)
    observed = np.bincount(group, weights=labels) / n
    n_patients = n / P.shape[0]
    low, high = _wilson(observed, n_patients, ci_level)
    return pd.DataFrame({"n": n.astype(int), "n_patients": n_patients,
                         "mean_predicted": np.bincount(group, weights=p) / n,
                         "observed": observed, "low": low, "high": high})


def calibration_plot(y: ArrayLike, oof: ArrayLike, *, intercept: MetricCI, slope: MetricCI,
                     path: str | Path, title: str, n_groups: int = 5,
                     ci_level: float = 0.95) -> Path:
    """Calibration plot of the out-of-fold predictions (PNG).

    Observed fraction of good responders against the mean predicted probability in
    :func:`calibration_groups` (each point with its Wilson interval), the ideal diagonal,
    and the calibration intercept and slope with their intervals in the legend
    (``n/a`` where undefined, e.g. a slope under complete separation).

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    intercept, slope : MetricCI
        Calibration intercept and slope (logistic recalibration) with their intervals.
    path : str or Path
    title : str
    n_groups : int
    ci_level : float

    Returns
    -------
    Path
    """
    from matplotlib.lines import Line2D

    y_, P = _check(y, oof)
    groups = calibration_groups(y_, P, n_groups=n_groups, ci_level=ci_level)
    figure, ax = _canvas(bottom=1.7)
    ax.plot([0, 1], [0, 1], color=_REFERENCE, linestyle="--", linewidth=1,
            label="Ideal calibration")
    errors = np.vstack([groups["observed"] - groups["low"],
                        groups["high"] - groups["observed"]])
    ax.errorbar(groups["mean_predicted"], groups["observed"], yerr=errors, fmt="o-",
                color=_MODEL, markersize=6, capsize=3, linewidth=1.5,
                label=f"{len(groups)} quantile group(s), Wilson {ci_level:.0%} CI")
    ax.plot(P.ravel(), np.full(P.size, -0.035), "|", color=_MODEL, alpha=0.25,
            markersize=6, label="Out-of-fold predictions")
    handles, texts = ax.get_legend_handles_labels()  # groups first, then the lines
    handles, texts = handles[-1:] + handles[:-1], texts[-1:] + texts[:-1]
    for name, ci in (("Intercept", intercept), ("Slope", slope)):
        handles.append(Line2D([], [], linestyle="none"))
        texts.append(f"{name} {_fmt_ci(ci, ci_level)}")
    ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(-0.12, -0.14), ncols=2,
              fontsize=_LEGEND_SIZE, frameon=False, handlelength=1.6, columnspacing=1.0)
    ticks = np.linspace(0, 1, 6)
    ax.set(xlim=(0, 1), ylim=(-0.06, 1.02), xticks=ticks, yticks=ticks,
           xlabel="Mean predicted probability of good response",
           ylabel="Observed fraction of good responders")
    _title(ax, title, _cv_subtitle(y_, P))
    return _save(figure, path)


# --------------------------------------------------------------------------- decision curve

def decision_curve_plot(decision: pd.DataFrame, *, path: str | Path, title: str) -> Path:
    """Decision curve (PNG): net benefit of the model, of treating all and of treating none.

    Parameters
    ----------
    decision : DataFrame
        Columns ``threshold``, ``net_benefit``, ``treat_all``, ``treat_none``, as from
        :func:`csf_responder.metrics.decision_curve`.
    path : str or Path
    title : str

    Returns
    -------
    Path

    Notes
    -----
    The y-axis spans the useful range: from a little below the lower of 0 and the model's
    lowest net benefit (but no lower than minus the highest net benefit shown) to a little
    above the highest net benefit; treat-all, which falls steeply at high thresholds,
    leaves the plot there.
    """
    missing = {"threshold", "net_benefit", "treat_all", "treat_none"} - set(decision.columns)
    if missing:
        raise ValueError(f"decision lacks column(s) {sorted(missing)}")
    if decision.empty:
        raise ValueError("decision has no thresholds")
    frame = decision.sort_values("threshold")
    t = frame["threshold"].to_numpy(float)
    model = frame["net_benefit"].to_numpy(float)
    treat_all = frame["treat_all"].to_numpy(float)
    values = np.concatenate([model, treat_all, frame["treat_none"].to_numpy(float)])
    top = max(float(np.nanmax(values, initial=0.0)), 0.02)
    bottom = max(min(float(np.nanmin(model, initial=0.0)), 0.0), -top)
    figure, ax = _canvas()
    ax.plot(t, frame["treat_none"], color="black", linewidth=1, label="Treat none")
    ax.plot(t, treat_all, color=_REFERENCE, linestyle="--", linewidth=1.5,
            label="Treat all")
    ax.plot(t, model, color=_MODEL, linewidth=2, marker="o", markersize=3.5,
            label="Model (out-of-fold)")
    margin = 0.06 * (top - bottom)
    ax.set(ylim=(bottom - margin, top + margin),
           xlim=(max(0.0, t.min() - 0.02), min(1.0, t.max() + 0.02)),
           xlabel="Threshold probability of good response",
           ylabel="Net benefit (true positives per patient)")
    ax.legend(loc="upper right", fontsize=_LEGEND_SIZE)
    _title(ax, title, "net benefit = TP/n - FP/n x t/(1 - t); averaged over repeats")
    return _save(figure, path)


# --------------------------------------------------------------------------- confusion matrix

def confusion_counts(y: ArrayLike, oof: ArrayLike, *, threshold: float) -> np.ndarray:
    """2 x 2 confusion counts at ``threshold``, averaged over repeats.

    Rows are the observed class and columns the predicted one, good responder first:
    ``[[TP, FN], [FP, TN]]``; a patient is predicted good when ``p >= threshold``
    (as in :mod:`csf_responder.metrics`).
    """
    y, probs = _check(y, oof)
    predicted = probs >= threshold
    positive = (y == 1)[None, :]
    tp = (predicted & positive).sum(axis=1)
    fp = (predicted & ~positive).sum(axis=1)
    fn = positive.sum() - tp
    tn = (~positive).sum() - fp
    return np.array([[tp.mean(), fn.mean()], [fp.mean(), tn.mean()]], dtype=float)


def confusion_matrix_plot(y: ArrayLike, oof: ArrayLike, *, threshold: float,
                          path: str | Path, title: str) -> Path:
    """Confusion matrix of the out-of-fold predictions at ``threshold`` (PNG).

    Shows :func:`confusion_counts` (mean over repeats, one decimal), rows = observed,
    columns = predicted, with each cell's share of its observed class.

    Parameters
    ----------
    y : array-like of shape (n_patients,)
    oof : array-like of shape (n_repeats, n_patients) or (n_patients,)
    threshold : float
    path : str or Path
    title : str

    Returns
    -------
    Path
    """
    y_, P = _check(y, oof)
    counts = confusion_counts(y_, P, threshold=threshold)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    figure, ax = _canvas((3.4, 3.4), left=1.5, right=1.6)
    ax.imshow(np.nan_to_num(shares), cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            dark = np.nan_to_num(shares[i, j]) > 0.55
            ax.text(j, i, f"{counts[i, j]:.1f}\n({_fmt(100 * shares[i, j], 0)}% of row)",
                    ha="center", va="center", fontsize=13,
                    color="white" if dark else "black")
    names = [_POSITIVE, _NEGATIVE]
    ax.set_xticks([0, 1], [f"predicted\n{name}" for name in names])
    ax.set_yticks([0, 1], [f"observed\n{name}" for name in names])
    ax.tick_params(length=0)
    repeats = f"mean over {P.shape[0]} repeats" if P.shape[0] > 1 else "one repeat"
    _title(ax, title, f"Patients ({repeats}); predicted good if p >= {threshold:.2f}")
    return _save(figure, path)


# --------------------------------------------------------------------------- SHAP

def _shap_frames(values: pd.DataFrame,
                 features: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """SHAP values (and model features) as float frames on the same columns, without the
    ``subject_id`` column that :class:`csf_responder.training.FamilyResult` adds."""
    values = values.drop(columns="subject_id", errors="ignore")
    if values.shape[1] == 0:
        raise ValueError("no SHAP values to plot (the model was not explained)")
    if features is not None:
        features = features.drop(columns="subject_id", errors="ignore")
        missing = set(values.columns) - set(features.columns)
        if missing or len(features) != len(values):
            raise ValueError("features must have the rows and columns of the SHAP values")
        features = features[list(values.columns)]
    return values.astype(float), features


def _top(values: pd.DataFrame, max_display: int) -> pd.Series:
    """Mean |SHAP| of the ``max_display`` most important features, most important first."""
    if max_display < 1:
        raise ValueError("max_display must be at least 1")
    importance = values.abs().mean(axis=0).fillna(0.0)
    return importance.sort_values(ascending=False, kind="stable").iloc[:max_display]


def _swarm(x: np.ndarray, width: float = 0.38, n_bins: int = 60) -> np.ndarray:
    """Vertical offsets of a beeswarm row: points in the same bin of x spread symmetrically."""
    offsets = np.zeros(x.size)
    finite = np.isfinite(x)
    if not finite.any():
        return offsets
    span = np.ptp(x[finite]) or 1.0
    bins = np.floor((x - np.nanmin(x)) / span * (n_bins - 1)).astype(int)
    crowd = 1
    for b in np.unique(bins[finite]):
        members = np.flatnonzero(finite & (bins == b))
        k = np.arange(members.size)
        offsets[members] = np.where(k % 2 == 1, 1, -1) * ((k + 1) // 2)
        crowd = max(crowd, members.size)
    return offsets * width / max(crowd // 2, 1)


def _shap_colormap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("shap_blue_red", ["#008bfb", "#8a3bd4", "#ff0052"])


def shap_beeswarm_plot(values: pd.DataFrame, features: pd.DataFrame, *, path: str | Path,
                       title: str, max_display: int = 15) -> Path:
    """SHAP beeswarm summary (PNG): each patient's SHAP value per feature, coloured by the
    feature's value, the ``max_display`` features with the largest mean |SHAP| from top.

    Parameters
    ----------
    values : DataFrame
        SHAP values, one row per patient, one column per model feature (a ``subject_id``
        column is ignored), on the log-odds scale.
    features : DataFrame
        The model features themselves (after imputation and scaling), same rows and
        columns; their rank within each feature (5th to 95th percentile) sets the colour.
    path : str or Path
    title : str
    max_display : int

    Returns
    -------
    Path
    """
    values, features = _shap_frames(values, features)
    top = _top(values, max_display)
    names = list(top.index[::-1])  # bottom to top
    xs, ys, colours = [], [], []
    for row, name in enumerate(names):
        x = values[name].to_numpy()
        xs.append(x)
        ys.append(row + _swarm(x))
        colours.append(_colour_scale(features[name].to_numpy(float)))
    x, y, colour = np.concatenate(xs), np.concatenate(ys), np.concatenate(colours)
    known = np.isfinite(colour)
    cmap = _shap_colormap()
    rest = values.shape[1] - top.size
    left = _label_inches(names, _TICK_SIZE) + 0.35
    figure, ax = _canvas((4.0, max(0.3 * top.size + 0.3, 1.6)), left=left, right=1.3)
    ax.axvline(0, color="0.6", linewidth=1, zorder=0)
    ax.scatter(x[~known], y[~known], s=16, color="0.6", linewidths=0)
    ax.scatter(x[known], y[known], s=16, c=colour[known], cmap=cmap, vmin=0, vmax=1,
               linewidths=0, alpha=0.9)
    ax.set_yticks(np.arange(top.size), names)
    ax.set_ylim(-0.7, top.size - 0.3)
    ax.set_xlabel("SHAP value (change in log-odds of good response)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    from matplotlib.cm import ScalarMappable

    box = ax.get_position()
    cax = figure.add_axes((box.x1 + 0.02 * box.width, box.y0, 0.025 * box.width,
                           box.height))
    bar = figure.colorbar(ScalarMappable(cmap=cmap), cax=cax, ticks=[0, 1])
    bar.ax.set_yticklabels(["Low", "High"])
    bar.set_label("Feature value", labelpad=-6)
    bar.outline.set_visible(False)
    note = f"{len(values)} patients, final model" + (
        f"; {rest} more feature(s) not shown" if rest else "")
    _title(ax, title, note, inches=5.1)
    return _save(figure, path)


def _colour_scale(f: np.ndarray) -> np.ndarray:
    """Feature values mapped to [0, 1] between their 5th and 95th percentiles (as shap
    does); 0.5 for a constant feature, NaN where the value is missing."""
    finite = np.isfinite(f)
    colour = np.where(finite, 0.5, np.nan)
    if finite.sum() > 1:
        lo, hi = np.nanpercentile(f, [5, 95])
        if hi <= lo:
            lo, hi = np.nanmin(f), np.nanmax(f)
        if hi > lo:
            colour = np.clip((f - lo) / (hi - lo), 0, 1)
    return colour


def shap_bar_plot(values: pd.DataFrame, *, path: str | Path, title: str,
                  max_display: int = 15) -> Path:
    """Mean |SHAP| per feature (PNG), the ``max_display`` largest, largest on top.

    Parameters
    ----------
    values : DataFrame
        SHAP values, one row per patient, one column per model feature (a ``subject_id``
        column is ignored).
    path : str or Path
    title : str
    max_display : int

    Returns
    -------
    Path
    """
    values, _ = _shap_frames(values)
    top = _top(values, max_display)
    rest = values.shape[1] - top.size
    left = _label_inches(top.index, _TICK_SIZE) + 0.35
    figure, ax = _canvas((4.0, max(0.28 * top.size + 0.3, 1.4)), left=left, right=1.2)
    rows = np.arange(top.size)
    ax.barh(rows, top.to_numpy()[::-1], color="#ff0052", height=0.7)
    scale = float(top.max()) if top.size and top.max() > 0 else 1.0
    ax.set_yticks(rows, list(top.index[::-1]))
    ax.set_xlim(0, 1.05 * scale)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.set_ylim(-0.6, top.size - 0.4)
    ax.set_xlabel("Mean |SHAP value| (average change in log-odds of good response)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    note = f"{len(values)} patients, final model" + (
        f"; {rest} more feature(s) not shown" if rest else "")
    _title(ax, title, note, inches=5.0)
    return _save(figure, path)


def shap_dependence_plot(values: pd.DataFrame, features: pd.DataFrame, *, feature: str,
                         path: str | Path, title: str,
                         xlabel: str | None = None) -> Path:
    """SHAP dependence of one feature (PNG): its SHAP value against its model input value.

    Parameters
    ----------
    values, features : DataFrame
        As for :func:`shap_beeswarm_plot`.
    feature : str
        A column of both, e.g. ``log_ratio_tgf_beta1_mcp1_baseline``.
    path : str or Path
    title : str
    xlabel : str, optional
        Default: the feature's name, marked as standardised (SD units), which the model
        features are after the Pipeline's scaling.

    Returns
    -------
    Path
    """
    values, features = _shap_frames(values, features)
    if feature not in values.columns:
        raise ValueError(f"{feature!r} is not a model feature with SHAP values")
    x = features[feature].to_numpy(float)
    s = values[feature].to_numpy(float)
    figure, ax = _canvas(left=1.2, bottom=1.0)
    ax.axhline(0, color="0.6", linewidth=1, zorder=0)
    ax.scatter(x, s, s=30, color=_MODEL, alpha=0.8, edgecolors="white", linewidths=0.5,
               label="Patient")
    ax.set_xlabel(xlabel or f"{feature}\n(model input, standardised: SD units)")
    ax.set_ylabel("SHAP value (change in log-odds\nof good response)")
    ax.legend(loc="best", fontsize=_LEGEND_SIZE)
    _title(ax, title, f"{len(values)} patients, final model; mean |SHAP| "
                      f"{_fmt(float(np.nanmean(np.abs(s))) if s.size else np.nan, 3)}")
    return _save(figure, path)


# --------------------------------------------------------------------------- families

def _slope_limits(est: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """x-limits of the slope panel: 0 to 2 and every estimate, widened to the intervals
    by at most 1 below and 2 above (a slope's interval can be huge at small N)."""
    lo = min(0.0, est.min(initial=0.0))
    hi = max(2.0, est.max(initial=2.0))
    return (max(min(lo, low.min(initial=lo)), lo - 1.0) - 0.1,
            min(max(hi, high.max(initial=hi)), hi + 2.0) + 0.1)


def family_comparison_plot(rows: Sequence[tuple[str, MetricCI, MetricCI]], *,
                           path: str | Path, title: str, ci_level: float = 0.95) -> Path:
    """Model families side by side (PNG): cross-validated AUC and calibration slope.

    Left: AUC with its interval (points and error bars), reference line at 0.5 (chance).
    Right: calibration slope with its interval, reference line at 1 (ideal); the axis
    spans 0 to 2 and every estimate, and the intervals up to 1 further below and 2
    further above (beyond, an error bar runs off the edge); an undefined value reads
    ``n/a``.

    Parameters
    ----------
    rows : sequence of (name, auc, slope)
        One per family, drawn top to bottom in the given order.
    path : str or Path
    title : str
    ci_level : float
        Coverage of the intervals, for the axis labels.

    Returns
    -------
    Path
    """
    if not rows:
        raise ValueError("no families to compare")
    names = [name for name, _, _ in rows]
    y = np.arange(len(rows))[::-1]
    margin = _label_inches(names, _TICK_SIZE) + 0.35
    figure, left = _canvas((2.5, max(0.5 * len(rows) + 0.4, 1.6)), left=margin, right=3.4,
                           bottom=1.0)
    box = left.get_position()
    right = figure.add_axes((box.x1 + 0.3 / figure.get_figwidth(), box.y0, box.width,
                             box.height), sharey=left)
    right.tick_params(labelleft=False)
    panels = ((left, 1, 0.5, (0.0, 1.0), "Chance", "Cross-validated ROC AUC"),
              (right, 2, 1.0, None, "Ideal", "Calibration slope"))
    for ax, k, ref, xlim, ref_label, label in panels:
        cis = [row[k] for row in rows]
        est = np.array([c.estimate for c in cis], float)
        low = np.array([c.low for c in cis], float)
        high = np.array([c.high for c in cis], float)
        ax.axvline(ref, color=_REFERENCE, linestyle="--", linewidth=1, label=ref_label)
        shown = np.isfinite(est)
        has_ci = shown & np.isfinite(low) & np.isfinite(high)
        ax.errorbar(est[has_ci], y[has_ci],
                    xerr=np.vstack([est[has_ci] - low[has_ci], high[has_ci] - est[has_ci]]),
                    fmt="o", color=_MODEL, capsize=3, markersize=6)
        ax.plot(est[shown & ~has_ci], y[shown & ~has_ci], "o", color=_MODEL, markersize=6)
        if xlim is None:
            xlim = _slope_limits(est[shown], low[has_ci], high[has_ci])
        ax.set_xlim(*xlim)
        for i in np.flatnonzero(~shown):
            ax.text(np.mean(xlim), y[i], "n/a", ha="center", va="center", color="0.35")
        for i in np.flatnonzero(shown):
            ax.annotate(_fmt(est[i]), (est[i], y[i]), xytext=(0, 6),
                        textcoords="offset points", ha="center", fontsize=8.5)
        ax.set_xlabel(f"{label}\n(point and {ci_level:.0%} CI)")
        ax.legend(loc="lower right", fontsize=8.5)
        ax.grid(axis="x", color="0.92")
    left.set_yticks(y, names)
    left.set_ylim(-0.7, len(rows) - 0.3)
    _title(left, title, inches=5.3)
    return _save(figure, path)


# ------------------------------------------------------------------------- scoring

def drift_plot(drift: pd.DataFrame, *, path: str | Path, title: str) -> Path:
    """Drift of each CSF value against the training data (PNG): the population stability
    index per column as bars (reference lines at 0.1, "some shift", and 0.25, "major
    shift", the usual rule of thumb), the Kolmogorov-Smirnov statistic written at each.

    Parameters
    ----------
    drift : DataFrame
        One row per column: ``column``, ``psi``, ``ks``.
    """
    labels = list(drift["column"])
    psi = np.nan_to_num(drift["psi"].to_numpy(dtype="float64"))
    left = _label_inches(labels, _TICK_SIZE) + 0.35
    figure, ax = _canvas((4.0, max(0.3 * len(labels) + 0.3, 1.4)), left=left, right=1.4)
    rows = np.arange(len(labels))[::-1]
    colours = np.where(psi >= 0.25, "#c0392b", np.where(psi >= 0.1, "#e6a23c", _MODEL))
    ax.barh(rows, psi, color=colours, height=0.7)
    top = max(float(psi.max()) if len(psi) else 0.0, 0.3) * 1.15
    for line in (0.1, 0.25):
        ax.axvline(line, color=_REFERENCE, linestyle="--", linewidth=1)
    for row, value, ks in zip(rows, psi, drift["ks"], strict=True):
        ax.text(value + 0.01 * top, row, f"KS {ks:.2f}", va="center", fontsize=_LEGEND_SIZE)
    ax.set_yticks(rows, labels)
    ax.set_xlim(0, top)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_xlabel("Population stability index vs training (log scale values)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    _title(ax, title, "dashed: 0.1 some shift, 0.25 major shift", inches=5.0)
    return _save(figure, path)


def shap_waterfall_plot(contributions: pd.Series, labels: Sequence[str], *, base: float,
                        path: str | Path, title: str, max_display: int = 10) -> Path:
    """One patient's SHAP waterfall (PNG): from the model's base value (log-odds), each
    feature's contribution in turn, largest on top, the rest summed, to the patient's
    log-odds.

    Parameters
    ----------
    contributions : Series
        SHAP values of one patient, indexed by feature.
    labels : sequence of str
        A readable label per feature ("TGF-beta1/MCP-1 ratio at baseline 0.42"), same order.
    base : float
        The expected log-odds the contributions start from.
    """
    values = contributions.to_numpy(dtype="float64")
    order = np.argsort(-np.abs(values), kind="stable")
    shown = order[:max_display]
    names = [labels[i] for i in shown]
    steps = list(values[shown])
    if len(order) > max_display:
        names.append(f"{len(order) - max_display} other feature(s)")
        steps.append(float(values[order[max_display:]].sum()))
    left = _label_inches(names, _TICK_SIZE) + 0.35
    figure, ax = _canvas((4.2, max(0.32 * len(names) + 0.4, 1.6)), left=left, right=0.9)
    start = base
    rows = np.arange(len(names))[::-1]
    for row, step in zip(rows, steps, strict=True):
        ax.barh(row, step, left=start, height=0.7,
                color="#ff0052" if step > 0 else "#008bfb")
        start += step
    ax.axvline(base, color=_REFERENCE, linestyle="--", linewidth=1)
    ax.axvline(start, color="black", linewidth=1)
    ax.margins(x=0.08)
    ax.set_yticks(rows, names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("Log-odds of good response (red raises, blue lowers)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    probability = 1 / (1 + np.exp(-start))
    _title(ax, title, f"base {base:+.2f}, patient {start:+.2f} (p = {probability:.2f})",
           inches=5.2)
    return _save(figure, path)


# --------------------------------------------------------------------------- enrichment

def enrichment_plot(table: pd.DataFrame, *, path: str | Path, title: str,
                    power: float = 0.8) -> Path:
    """Patients to screen and to randomise against the enrichment threshold (PNG).

    Two lines over the thresholds t of the enriched rows: the total to screen (2n / (1 -
    fraction screened out)) and the total randomised (2n), n the simulated patients per
    arm at ``power``; a dashed line marks the unenriched trial (everyone enrolled, where
    both totals agree). The y-axis is logarithmic when the values span more than a factor
    of 4. A missing size (power not reached, too few patients enrolled) leaves a gap.

    Parameters
    ----------
    table : DataFrame
        From :func:`csf_responder.enrichment.enrichment_table`; its first row is the
        unenriched trial (``threshold`` -inf).
    path : str or Path
    title : str
    power : float
        One of the table's target powers.

    Returns
    -------
    Path
    """
    from csf_responder.enrichment import power_column

    screened_col = power_column("total_screened", power)
    randomised_col = power_column("total_randomised", power)
    missing = {"threshold", screened_col, randomised_col} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks column(s) {sorted(missing)} (is {power} among its "
                         "powers?)")
    everyone = ~np.isfinite(table["threshold"].to_numpy(float))
    enriched = table[~everyone].sort_values("threshold")
    t = enriched["threshold"].to_numpy(float)
    screened = enriched[screened_col].to_numpy(float)
    randomised = enriched[randomised_col].to_numpy(float)
    unenriched = table.loc[everyone, randomised_col].to_numpy(float)
    level = float(unenriched[0]) if unenriched.size else np.nan

    figure, ax = _canvas()
    if np.isfinite(level):
        ax.axhline(level, color=_REFERENCE, linestyle="--", linewidth=1.2,
                   label=f"Unenriched trial, everyone enrolled ({level:.0f})")
    ax.plot(t, screened, color="#c0392b", linewidth=2, marker="o", markersize=3.5,
            label="Screened (2n / share enrolled)")
    ax.plot(t, randomised, color=_MODEL, linewidth=2, marker="o", markersize=3.5,
            label="Randomised (2n)")
    values = np.concatenate([screened, randomised, [level]])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        _note(ax, "no sample size reached the target power")
    elif values.max() / values.min() > 4:
        ax.set_yscale("log")
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(0, values.max() * 1.12)
    ax.set_xlabel("Enrolment threshold t on the score (enrol if score \u2265 t)")
    ax.set_ylabel("Patients, both arms")
    ax.grid(axis="y", color="0.92")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="best", fontsize=_LEGEND_SIZE)
    _title(ax, title, f"n per arm for {power:.0%} power, by simulation from the outcome "
           "models")
    return _save(figure, path)


# -------------------------------------------------------------------------- effect

def _forest(ax, labels, est, low, high, *, colour, reference: float = 0.0) -> None:
    rows = np.arange(len(labels))[::-1]
    est, low, high = (np.asarray(a, dtype="float64") for a in (est, low, high))
    ax.axvline(reference, color=_REFERENCE, linestyle="--", linewidth=1)
    shown = np.isfinite(est) & np.isfinite(low) & np.isfinite(high)
    ax.errorbar(est[shown], rows[shown],
                xerr=np.vstack([est[shown] - low[shown], high[shown] - est[shown]]),
                fmt="o", color=colour, capsize=3, markersize=5)
    ax.grid(axis="x", color="0.92")
    ax.set_ylim(-0.7, len(labels) - 0.3)


def roles_plot(roles: pd.DataFrame, *, path: str | Path, title: str, unit: str,
               ci_level: float = 0.95) -> Path:
    """Prognostic and predictive effect of each feature side by side (PNG, forest plots).

    Left: the prognostic effect (outcome difference per SD of the feature in controls);
    right: the predictive effect (change of the treatment effect per SD). Points with
    their ``ci_level`` intervals; a feature called at the Holm-adjusted level is drawn
    in colour and marked with its role.

    Parameters
    ----------
    roles : DataFrame
        :func:`csf_responder.effect.prognostic_predictive` output.
    unit : str
        Unit of the outcome (``points/month``).
    """
    labels = [f"{label}" for label in roles["label"]]
    margin = _label_inches(labels, _TICK_SIZE) + 0.35
    figure, left = _canvas((2.4, max(0.32 * len(labels) + 0.4, 1.6)), left=margin,
                           right=3.2, bottom=1.1)
    box = left.get_position()
    right = figure.add_axes((box.x1 + 0.3 / figure.get_figwidth(), box.y0, box.width,
                             box.height), sharey=left)
    right.tick_params(labelleft=False)
    rows = np.arange(len(labels))[::-1]
    for ax, kind, colour in ((left, "prognostic", "#2e7d32"), (right, "predictive", "#c0392b")):
        called = roles["role"].str.contains(kind).to_numpy()
        _forest(ax, labels, roles[kind], roles[f"{kind}_low"], roles[f"{kind}_high"],
                colour="0.55")
        est = roles[kind].to_numpy(dtype="float64")
        ax.plot(est[called], rows[called], "o", color=colour, markersize=7,
                label=f"{kind} (Holm)")
        ax.set_xlabel(f"{kind.capitalize()} effect\n({unit} per SD, {ci_level:.0%} CI)")
        if called.any():
            ax.legend(loc="lower right", fontsize=8)
    left.set_yticks(rows, labels)
    _title(left, title, "prognostic: outcome in controls; predictive: change of the "
           "treatment effect", inches=5.6)
    return _save(figure, path)


def qini_plot(curves: dict[str, pd.DataFrame], areas: dict[str, MetricCI], *,
              path: str | Path, title: str, unit: str, ci_level: float = 0.95) -> Path:
    """Qini (uplift) curves of the benefit rankings (PNG): incremental gain against the
    fraction of patients targeted, best-ranked first, with the random-targeting line.

    Parameters
    ----------
    curves : dict
        Estimator -> :func:`csf_responder.effect.qini_curve` frame.
    areas : dict
        Estimator -> Qini area with its interval (for the legend).
    """
    figure, ax = _canvas()
    palette = ("#1f5fa8", "#c0392b", "#2e7d32", "#8e44ad", "#e67e00")
    for (name, curve), colour in zip(curves.items(), palette * 4, strict=False):
        ax.plot(curve["fraction"], curve["gain"], color=colour, linewidth=1.6,
                label=f"{name}: Qini area {_fmt_ci(areas.get(name), ci_level)}")
    last = next(iter(curves.values()))
    ax.plot(last["fraction"], last["random"], color=_REFERENCE, linestyle="--",
            linewidth=1, label="random targeting")
    ax.set_xlabel("Fraction of patients targeted (highest estimated benefit first)")
    ax.set_ylabel(f"Incremental gain ({unit} per patient)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(color="0.92")
    _title(ax, title, inches=5.4)
    return _save(figure, path)


def benefit_calibration_plot(groups: pd.DataFrame, *, path: str | Path, title: str,
                             unit: str, ci_level: float = 0.95) -> Path:
    """Observed vs predicted benefit in quantile groups of the estimated benefit (PNG),
    the observed difference between arms with its ``ci_level`` interval, and the
    identity line (perfect calibration of benefit).

    Parameters
    ----------
    groups : DataFrame
        :func:`csf_responder.effect.benefit_calibration` output.
    """
    figure, ax = _canvas()
    pred = groups["predicted"].to_numpy(dtype="float64")
    obs = groups["observed"].to_numpy(dtype="float64")
    low = groups["observed_low"].to_numpy(dtype="float64")
    high = groups["observed_high"].to_numpy(dtype="float64")
    finite = np.isfinite(pred) & np.isfinite(obs)
    has_ci = finite & np.isfinite(low) & np.isfinite(high)
    values = np.concatenate([pred[finite], low[has_ci], high[has_ci], [0.0]])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=_REFERENCE, linestyle="--",
            linewidth=1, label="perfect calibration")
    ax.axhline(0, color="0.8", linewidth=0.8)
    ax.errorbar(pred[has_ci], obs[has_ci],
                yerr=np.vstack([obs[has_ci] - low[has_ci], high[has_ci] - obs[has_ci]]),
                fmt="o", color=_MODEL, capsize=3, label=f"observed ({ci_level:.0%} CI)")
    ax.plot(pred[finite & ~has_ci], obs[finite & ~has_ci], "o", color=_MODEL)
    for g, x, y, n1, n0 in zip(groups["group"], pred, obs, groups["n_treated"],
                               groups["n_control"], strict=True):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(f"Q{g} ({n1}/{n0})", (x, y), xytext=(5, -10),
                        textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"Predicted benefit ({unit})")
    ax.set_ylabel(f"Observed benefit, treated - control ({unit})")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(color="0.92")
    _title(ax, title, "groups: quantiles of the estimated benefit (n treated/control)",
           inches=5.4)
    return _save(figure, path)


def benefit_plot(benefit: np.ndarray, low: np.ndarray, high: np.ndarray, treated: np.ndarray,
                 *, path: str | Path, title: str, unit: str, level: float) -> Path:
    """Each patient's estimated benefit with its interval, sorted (PNG, a caterpillar
    plot), treated and control patients in two colours."""
    order = np.argsort(np.asarray(benefit, dtype="float64"), kind="stable")
    est, lo, hi = (np.asarray(a, dtype="float64")[order] for a in (benefit, low, high))
    arm = np.asarray(treated, bool)[order]
    x = np.arange(len(est))
    figure, ax = _canvas()
    ax.axhline(0, color=_REFERENCE, linestyle="--", linewidth=1)
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.vlines(x[has], lo[has], hi[has], color="0.75", linewidth=0.8 if len(x) < 300 else 0.3)
    for mask, colour, label in ((arm, _MODEL, "treated arm"), (~arm, "#e67e00", "control arm")):
        ax.plot(x[mask], est[mask], "o", color=colour, markersize=3, label=label)
    ax.set_xlabel("Patients, by estimated benefit")
    ax.set_ylabel(f"Estimated benefit ({unit})")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", color="0.92")
    _title(ax, title, f"cross-fitted; bars: {level:.0%} interval", inches=5.4)
    return _save(figure, path)


def learning_curve_plot(curve: pd.DataFrame, *, path: str | Path, title: str,
                        riley_minimum: float | None = None, observed: int | None = None
                        ) -> Path:
    """Cross-validated AUC against study size (PNG): each simulated study as a dot,
    the mean per size as a line; the Riley minimum sample size and the current study's
    size as vertical lines."""
    figure, ax = _canvas()
    ok = curve[np.isfinite(curve["auc"])]
    ax.plot(ok["n_labelled"], ok["auc"], "o", color="0.6", markersize=4,
            label="simulated study")
    mean = ok.groupby("size").agg(n=("n_labelled", "mean"), auc=("auc", "mean"))
    ax.plot(mean["n"], mean["auc"], "-o", color=_MODEL, label="mean per size")
    ax.axhline(0.5, color=_REFERENCE, linestyle=":", linewidth=1, label="chance")
    if riley_minimum is not None and np.isfinite(riley_minimum):
        ax.axvline(riley_minimum, color="#c0392b", linestyle="--", linewidth=1,
                   label=f"Riley minimum ({riley_minimum:.0f})")
    if observed:
        ax.axvline(observed, color="#2e7d32", linestyle="--", linewidth=1,
                   label=f"this cohort ({observed})")
    ax.set_xscale("log")
    ax.set_xlabel("Labelled treated patients per study (log scale)")
    ax.set_ylabel("Cross-validated ROC AUC")
    ax.set_ylim(0.3, 1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(color="0.92")
    _title(ax, title, inches=5.4)
    return _save(figure, path)
