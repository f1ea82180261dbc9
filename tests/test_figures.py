"""Validation figures: valid PNGs, the numbers behind them, edge cases, nothing left open."""

from __future__ import annotations

import gc

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import special
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from csf_responder import figures
from csf_responder.metrics import MetricCI, decision_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = MetricCI(np.nan, np.nan, np.nan)
SLOPE = MetricCI(0.8, 0.2, 1.9)
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
N_REPEATS = 5


def _cohort(n_pos: int = 13, n_neg: int = 16, *, seed: int = 0, signal: float = 1.2):
    """Labels and an out-of-fold matrix (N_REPEATS, n) with some signal."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, special.expit(signal * (y - 0.5) + rng.normal(0, 1, (N_REPEATS, y.size)))


def _shap(n: int = 29, n_features: int = 20, seed: int = 0):
    """SHAP values (with the subject_id column FamilyResult adds) and model features."""
    rng = np.random.default_rng(seed)
    columns = ["log_ratio_tgf_beta1_mcp1_baseline"] + [
        f"analyte_{i}_baseline_pg_ml" for i in range(n_features - 1)]
    features = pd.DataFrame(rng.normal(size=(n, n_features)), columns=columns)
    values = features * rng.gamma(1.0, 0.3, n_features)
    values.insert(0, "subject_id", [f"S{i:03d}" for i in range(n)])
    return values, features


def _all_figures(tmp_path, y, oof, *, slope: MetricCI = SLOPE):
    """Call every plotting function once; return the paths they reported."""
    values, features = _shap()
    auc = MetricCI(0.7, 0.55, 0.84)
    calls = {
        "roc": lambda p: figures.roc_plot(y, oof, auc=auc, path=p, title="ROC", n_bootstrap=50),
        "pr": lambda p: figures.pr_plot(y, oof, pr_auc=auc, path=p, title="PR", n_bootstrap=50),
        "calibration": lambda p: figures.calibration_plot(
            y, oof, intercept=MetricCI(-0.1, -0.6, 0.4), slope=slope, path=p,
            title="Calibration"),
        "decision": lambda p: figures.decision_curve_plot(
            decision_curve(y, oof, thresholds=THRESHOLDS), path=p, title="Decision curve"),
        "confusion": lambda p: figures.confusion_matrix_plot(y, oof, threshold=0.5, path=p,
                                                             title="Confusion matrix"),
        "beeswarm": lambda p: figures.shap_beeswarm_plot(values, features, path=p,
                                                         title="SHAP"),
        "bar": lambda p: figures.shap_bar_plot(values, path=p, title="SHAP importance"),
        "dependence": lambda p: figures.shap_dependence_plot(
            values, features, feature="log_ratio_tgf_beta1_mcp1_baseline", path=p,
            title="SHAP dependence"),
        "families": lambda p: figures.family_comparison_plot(
            [("prevalence", MetricCI(0.5, 0.5, 0.5), NAN), ("logistic_l2", auc, slope),
             ("xgboost", MetricCI(0.6, 0.4, 0.8), MetricCI(0.3, -0.5, 9.0))],
            path=p, title="Families"),
    }
    return {name: (call(tmp_path / f"{name}.png"), tmp_path / f"{name}.png")
            for name, call in calls.items()}


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 250 <= width <= 1000 and 150 <= height <= 1000, image.shape
    assert image.min() < 0.5  # something was drawn (not a blank canvas)
    assert Image.open(path).info["dpi"] == pytest.approx((100, 100), abs=0.5)


def _live_figures() -> int:
    from matplotlib.figure import Figure

    gc.collect()
    return sum(isinstance(obj, Figure) for obj in gc.get_objects())


# --------------------------------------------------------------------------- every figure

def test_every_function_writes_a_png_and_leaves_nothing_open(tmp_path):
    import matplotlib.pyplot as plt

    y, oof = _cohort()
    before = _live_figures()
    written = _all_figures(tmp_path, y, oof)
    for name, (returned, path) in written.items():
        assert returned == path, name
        _assert_png(path)
    assert plt.get_fignums() == []
    assert _live_figures() <= before  # nothing kept alive: no leak across calls


@pytest.mark.parametrize("case", ["all_equal", "single_vector", "separated", "one_class"])
def test_edge_cases_do_not_raise(tmp_path, case):
    import matplotlib.pyplot as plt

    y, oof = _cohort()
    if case == "all_equal":
        oof = np.full_like(oof, 0.45)
    elif case == "single_vector":
        oof = oof[0]
    elif case == "separated":  # calibration slope undefined
        oof = np.where(y == 1, 0.8, 0.2)[None, :].repeat(N_REPEATS, axis=0)
    else:
        y = np.ones_like(y)
    for _, path in _all_figures(tmp_path, y, oof, slope=NAN).values():
        _assert_png(path)
    assert plt.get_fignums() == []


def test_same_inputs_give_the_same_png(tmp_path):
    y, oof = _cohort()
    auc = MetricCI(0.7, 0.55, 0.84)
    a = figures.roc_plot(y, oof, auc=auc, path=tmp_path / "a.png", title="ROC", seed=3)
    b = figures.roc_plot(y, oof, auc=auc, path=tmp_path / "b.png", title="ROC", seed=3)
    assert a.read_bytes() == b.read_bytes()


def test_content_beyond_the_canvas_is_not_cut(tmp_path):
    """A label too long for the fixed canvas falls back to a tight bounding box."""
    values, features = _shap(n_features=3)
    long_name = "a_feature_name_far_longer_than_any_the_panel_produces_" * 3
    values = values.rename(columns={"log_ratio_tgf_beta1_mcp1_baseline": long_name})
    features = features.rename(columns={"log_ratio_tgf_beta1_mcp1_baseline": long_name})
    path = figures.shap_dependence_plot(values, features, feature=long_name,
                                        path=tmp_path / "sub" / "long.png", title="Long")
    width = matplotlib.image.imread(path).shape[1]
    assert width > 1000  # the canvas grew to hold the whole label (and sub/ was created)


# --------------------------------------------------------------------------- ROC and PR

def test_roc_band_contains_the_mean_curve_within_unit_square():
    y, oof = _cohort()
    band = figures.roc_band(y, oof, n_bootstrap=200, seed=0, ci_level=0.95)
    assert list(band.columns) == ["fpr", "tpr", "low", "high"]
    assert band.notna().all().all()
    assert ((band["low"] <= band["tpr"] + 1e-12) & (band["tpr"] <= band["high"] + 1e-12)).all()
    assert band[["tpr", "low", "high"]].stack().between(0, 1).all()
    assert (np.diff(band["tpr"]) >= -1e-12).all()  # a ROC curve never falls
    assert band["fpr"].iloc[0] == 0 and band["fpr"].iloc[-1] == 1
    assert band["tpr"].iloc[-1] == pytest.approx(1.0)


def _vertical_average(y, scores, grid):
    """TPR at each FPR of ``grid`` from scikit-learn's ROC vertices: the highest TPR at a
    vertex's FPR, linear in between (a tie is a diagonal segment)."""
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    out = []
    for g in grid:
        at = np.isclose(fpr, g)
        if at.any():
            out.append(tpr[at].max())
            continue
        before, after = fpr < g, fpr > g
        x0, x1 = fpr[before].max(), fpr[after].min()
        y0, y1 = tpr[fpr == x0].max(), tpr[fpr == x1].min()
        out.append(y0 + (g - x0) * (y1 - y0) / (x1 - x0))
    return np.array(out)


def test_roc_curve_is_the_vertical_average_of_the_repeats():
    y, oof = _cohort(10, 19, seed=4)
    oof = np.round(oof, 1)  # many ties
    band = figures.roc_band(y, oof, n_bootstrap=0)
    expected = np.mean([_vertical_average(y, row, band["fpr"]) for row in oof], axis=0)
    np.testing.assert_allclose(band["tpr"], expected, atol=1e-12)
    assert band["low"].isna().all()  # no band without resamples
    # its area is the mean pooled AUC, up to the grid (at most half a grid step above)
    area = np.sum(np.diff(band["fpr"]) * (band["tpr"].to_numpy()[1:]
                                          + band["tpr"].to_numpy()[:-1]) / 2)
    auc = np.mean([roc_auc_score(y, row) for row in oof])
    assert auc - 1e-9 <= area <= auc + 0.005


def test_pr_curve_area_is_the_average_precision():
    """With 20 positives every recall step lies on the grid: the step curve's area is the
    mean average precision, as scikit-learn computes it (ties included)."""
    y, oof = _cohort(20, 9, seed=5)
    oof = np.round(oof, 1)
    band = figures.pr_band(y, oof, n_bootstrap=100, seed=1)
    area = np.sum(band["precision"].to_numpy()[1:] * np.diff(band["recall"]))
    expected = np.mean([average_precision_score(y, row) for row in oof])
    assert area == pytest.approx(expected, abs=1e-9)
    assert ((band["low"] <= band["precision"] + 1e-12)
            & (band["precision"] <= band["high"] + 1e-12)).all()
    assert band[["precision", "low", "high"]].stack().between(0, 1).all()


def test_bands_are_seeded():
    y, oof = _cohort()
    first = figures.roc_band(y, oof, n_bootstrap=100, seed=7)
    pd.testing.assert_frame_equal(first, figures.roc_band(y, oof, n_bootstrap=100, seed=7))
    assert not first.equals(figures.roc_band(y, oof, n_bootstrap=100, seed=8))


def test_one_class_gives_undefined_curves():
    y, oof = _cohort()
    band = figures.roc_band(np.zeros_like(y), oof)
    assert band[["tpr", "low", "high"]].isna().all().all()


# --------------------------------------------------------------------------- calibration

def test_calibration_groups_add_up_to_every_prediction():
    y, oof = _cohort()
    groups = figures.calibration_groups(y, oof, n_groups=5, ci_level=0.95)
    assert len(groups) == 5
    assert groups["n"].sum() == N_REPEATS * y.size
    assert groups["n_patients"].sum() == pytest.approx(y.size)
    assert groups["n"].max() - groups["n"].min() <= 2  # quantile groups: near-equal sizes
    assert (np.diff(groups["mean_predicted"]) > 0).all()
    assert ((groups["low"] <= groups["observed"]) & (groups["observed"] <= groups["high"])).all()
    # the responders counted in the groups are those of the pooled predictions
    assert (groups["observed"] * groups["n"]).sum() == pytest.approx(N_REPEATS * y.sum())


def test_calibration_interval_counts_patients_not_repeats():
    """Each patient appears once per repeat: the Wilson interval of a group uses
    n / n_repeats patients, so repeating the same predictions does not narrow it."""
    y, oof = _cohort()
    once = figures.calibration_groups(y, oof[:1], n_groups=1)
    many = figures.calibration_groups(y, oof[:1].repeat(N_REPEATS, axis=0), n_groups=1)
    assert many["n"].item() == N_REPEATS * once["n"].item()
    pd.testing.assert_frame_equal(once.drop(columns="n"), many.drop(columns="n"))
    # and it is the Wilson interval of y.sum() responders among y.size patients
    from csf_responder.metrics import proportion_ci

    expected = proportion_ci(int(y.sum()), y.size, ci_level=0.95)
    assert (once["low"].item(), once["high"].item()) == pytest.approx(
        (expected.low, expected.high))


def test_tied_predictions_share_a_group():
    y, oof = _cohort()
    groups = figures.calibration_groups(y, np.full_like(oof, 0.3), n_groups=5)
    assert len(groups) == 1
    assert groups["n"].item() == oof.size
    assert groups["observed"].item() == pytest.approx(y.mean())


# --------------------------------------------------------------------------- confusion matrix

@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_confusion_counts_match_a_direct_computation(threshold):
    y, oof = _cohort()
    counts = figures.confusion_counts(y, oof, threshold=threshold)
    direct = np.mean([confusion_matrix(y, (row >= threshold).astype(int), labels=[1, 0])
                      for row in oof], axis=0)
    np.testing.assert_allclose(counts, direct)
    np.testing.assert_allclose(counts.sum(axis=1), [y.sum(), (1 - y).sum()])


def test_a_prediction_at_the_threshold_counts_as_good():
    counts = figures.confusion_counts(np.array([1, 0]), np.array([0.5, 0.5]), threshold=0.5)
    np.testing.assert_array_equal(counts, [[1, 0], [1, 0]])


# --------------------------------------------------------------------------- formatting, limits

def test_undefined_metrics_read_n_a():
    assert figures._fmt_ci(NAN, 0.95) == "n/a"
    assert figures._fmt_ci(MetricCI(0.8, np.nan, np.nan), 0.95) == "0.80 (95% CI n/a)"
    assert figures._fmt_ci(MetricCI(-0.1, -0.6, 0.4), 0.9) == "-0.10 (90% CI -0.60 to 0.40)"


def test_slope_axis_shows_every_estimate():
    lo, hi = figures._slope_limits(np.array([-3.0, 1.0]), np.array([-10.0]), np.array([20.0]))
    assert lo < -3.0 and hi > 2.0
    assert lo >= -4.2 and hi <= 4.2  # huge intervals run off the edge instead


# --------------------------------------------------------------------------- bad input

def test_bad_input_is_rejected(tmp_path):
    values, features = _shap()
    with pytest.raises(ValueError, match="not a model feature"):
        figures.shap_dependence_plot(values, features, feature="nope", path=tmp_path / "x.png",
                                     title="x")
    with pytest.raises(ValueError, match="no SHAP values"):
        figures.shap_bar_plot(values[["subject_id"]], path=tmp_path / "x.png", title="x")
    with pytest.raises(ValueError, match="rows and columns"):
        figures.shap_beeswarm_plot(values, features.iloc[:, :3], path=tmp_path / "x.png",
                                   title="x")
    with pytest.raises(ValueError, match="lacks column"):
        figures.decision_curve_plot(pd.DataFrame({"threshold": [0.5]}), path=tmp_path / "x.png",
                                    title="x")
    with pytest.raises(ValueError, match="no families"):
        figures.family_comparison_plot([], path=tmp_path / "x.png", title="x")
    y, oof = _cohort()
    with pytest.raises(ValueError):
        figures.roc_plot(y, oof[:, :-1], auc=NAN, path=tmp_path / "x.png", title="x")
    assert not (tmp_path / "x.png").exists()
