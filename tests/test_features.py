"""Tests of the feature transformers in :mod:`csf_responder.features`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from csf_responder.config import TrainConfig, load_config
from csf_responder.errors import ConfigError
from csf_responder.features import BridgeNormalization, CensoredValueImputer, CohortFeatures
from csf_responder.models import make_pipeline


# ------------------------------------------------------------ CensoredValueImputer
@pytest.fixture
def censored() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": ["P1", "P2", "P3", "P4", "P5"],
        "mcp1_baseline": [10.0, 20.0, 3000.0, np.nan, 7.0],
        "mcp1_baseline_flag": ["below", "observed", "above", "missing", "missing"],
        "vegf_baseline": [4.0, 5.5, 8.0, 16.0, 2.0],
        "vegf_baseline_flag": ["observed", "extrapolated", "below", "observed", "below"],
        "age": [54.0, 61.0, 47.0, 70.0, 39.0],
        "qc_flag": ["ok", "ok", "re-run", "ok", "ok"],   # a flag of no value column
    })


def test_below_becomes_lloq_over_sqrt2_by_default(censored):
    out = CensoredValueImputer().fit_transform(censored)
    assert out["mcp1_baseline"].iloc[0] == pytest.approx(10 / math.sqrt(2))
    assert out["vegf_baseline"].iloc[2] == pytest.approx(8 / math.sqrt(2))
    assert out["vegf_baseline"].iloc[4] == pytest.approx(2 / math.sqrt(2))


@pytest.mark.parametrize(("rule", "expected"), [("lloq_half", 5.0), ("lloq", 10.0)])
def test_other_below_rules(censored, rule, expected):
    out = CensoredValueImputer(rule=rule).fit_transform(censored)
    assert out["mcp1_baseline"].iloc[0] == pytest.approx(expected)


def test_observed_extrapolated_and_above_keep_their_value(censored):
    out = CensoredValueImputer().fit_transform(censored)
    assert out["mcp1_baseline"].iloc[1] == 20.0      # observed
    assert out["mcp1_baseline"].iloc[2] == 3000.0    # above: the ULOQ
    assert out["vegf_baseline"].iloc[1] == 5.5       # extrapolated


def test_missing_flag_gives_nan_even_with_a_value(censored):
    out = CensoredValueImputer().fit_transform(censored)
    assert np.isnan(out["mcp1_baseline"].iloc[3])
    assert np.isnan(out["mcp1_baseline"].iloc[4])    # value 7 but flagged missing


@pytest.mark.parametrize("dtype", ["str", "string", object, "category"])
def test_flags_read_the_same_whatever_their_dtype(censored, dtype):
    """Arrow text flags are compared by Arrow, others by pandas: the same values, a
    blank flag (None, NaN) reading missing."""
    flags = censored.assign(vegf_baseline_flag=["observed", None, "below", np.nan, "below"])
    expected = CensoredValueImputer().fit_transform(flags.astype({
        "mcp1_baseline_flag": object, "vegf_baseline_flag": object}))
    typed = flags.astype({"mcp1_baseline_flag": dtype, "vegf_baseline_flag": dtype})
    out = CensoredValueImputer().fit_transform(typed)
    pd.testing.assert_frame_equal(out, expected)
    assert np.isnan(out["vegf_baseline"].iloc[[1, 3]]).all()
    assert out["vegf_baseline"].iloc[2] == pytest.approx(8 / math.sqrt(2))


def test_flag_columns_dropped_and_other_columns_pass_through(censored):
    out = CensoredValueImputer().fit_transform(censored)
    assert list(out.columns) == ["subject_id", "mcp1_baseline", "vegf_baseline", "age",
                                 "qc_flag"]
    assert out["subject_id"].tolist() == ["P1", "P2", "P3", "P4", "P5"]
    assert out["age"].tolist() == [54.0, 61.0, 47.0, 70.0, 39.0]
    assert out["qc_flag"].tolist() == censored["qc_flag"].tolist()


def test_imputer_feature_names_match_output(censored):
    imputer = CensoredValueImputer().fit(censored)
    names = imputer.get_feature_names_out()
    assert list(names) == list(imputer.transform(censored).columns)


def test_bad_rule_raises_valueerror(censored):
    with pytest.raises(ValueError, match="'lloq_third'"):
        CensoredValueImputer(rule="lloq_third").fit(censored)


def test_imputer_does_not_mutate_input(censored):
    before = censored.copy()
    CensoredValueImputer().fit_transform(censored)
    pd.testing.assert_frame_equal(censored, before)


def test_imputer_transform_requires_fitted_columns(censored):
    imputer = CensoredValueImputer().fit(censored)
    with pytest.raises(ValueError, match="vegf_baseline_flag"):
        imputer.transform(censored.drop(columns="vegf_baseline_flag"))


def test_imputer_rejects_a_numpy_array(censored):
    with pytest.raises(TypeError):
        CensoredValueImputer().fit(censored.to_numpy())


# --------------------------------------------------------------------- CohortFeatures
@pytest.fixture
def wide() -> pd.DataFrame:
    return pd.DataFrame({
        "tgf_beta1_baseline": [1000.0, 500.0, 0.0],
        "tgf_beta1_week4": [2000.0, 500.0, 300.0],
        "mcp1_baseline": [100.0, 250.0, 80.0],
        "mcp1_week4": [50.0, 125.0, -1.0],
        "score_baseline": [40.0, 36.0, 44.0],
        "onset_months": [16.0, 12.0, 0.0],
        "leadin_slope": [-1.25, -0.5, -2.0],
        "age": [54.0, 61.0, 47.0],
        "sex": ["male", "female", "male"],
        "onset_site": ["bulbar", "spinal", "spinal"],
    }, index=[10, 11, 12])


ALS_CATEGORIES = (("sex", ("female", "male")), ("onset_site", ("spinal", "bulbar")))


def features(**kwargs) -> CohortFeatures:
    params = dict(analytes=("tgf_beta1", "mcp1"), timepoints=("baseline", "week4"),
                  ratios=(("tgf_beta1", "mcp1"),), changes=True, clinical=(),
                  categories=ALS_CATEGORIES, score_best=48.0)
    return CohortFeatures(**{**params, **kwargs})


def test_log_of_concentrations(wide):
    out = features().fit_transform(wide)
    assert out["log_tgf_beta1_baseline"].iloc[0] == pytest.approx(math.log(1000))
    assert out["log_mcp1_week4"].iloc[1] == pytest.approx(math.log(125))
    assert list(out.index) == [10, 11, 12]


def test_log_ratio_equals_difference_of_logs(wide):
    out = features().fit_transform(wide)
    # 1000/100 = 10, 2000/50 = 40, 500/250 = 2, 500/125 = 4
    assert out["log_ratio_tgf_beta1_mcp1_baseline"].iloc[0] == pytest.approx(math.log(10))
    assert out["log_ratio_tgf_beta1_mcp1_week4"].iloc[0] == pytest.approx(math.log(40))
    assert out["log_ratio_tgf_beta1_mcp1_baseline"].iloc[1] == pytest.approx(math.log(2))
    assert out["log_ratio_tgf_beta1_mcp1_week4"].iloc[1] == pytest.approx(math.log(4))
    by_hand = math.log(1000) - math.log(100)
    assert out["log_ratio_tgf_beta1_mcp1_baseline"].iloc[0] == pytest.approx(by_hand)


def test_change_features_are_last_minus_first(wide):
    out = features().fit_transform(wide)
    assert out["change_log_tgf_beta1"].iloc[0] == pytest.approx(math.log(2))
    assert out["change_log_mcp1"].iloc[0] == pytest.approx(math.log(0.5))
    assert out["change_log_tgf_beta1"].iloc[1] == pytest.approx(0.0)
    assert out["change_log_ratio_tgf_beta1_mcp1"].iloc[0] == pytest.approx(math.log(4))
    assert out["change_log_ratio_tgf_beta1_mcp1"].iloc[1] == pytest.approx(math.log(2))


def test_no_change_features_when_disabled_or_single_timepoint(wide):
    off = features(changes=False).fit_transform(wide)
    single = features(timepoints=("baseline",)).fit_transform(wide)
    assert not any(c.startswith("change_") for c in off.columns)
    assert not any(c.startswith("change_") for c in single.columns)
    assert "log_tgf_beta1_week4" not in single.columns


def test_non_positive_concentration_gives_nan(wide):
    out = features().fit_transform(wide)
    assert np.isnan(out["log_tgf_beta1_baseline"].iloc[2])    # 0
    assert np.isnan(out["log_mcp1_week4"].iloc[2])            # -1
    assert np.isnan(out["log_ratio_tgf_beta1_mcp1_baseline"].iloc[2])
    assert np.isnan(out["change_log_tgf_beta1"].iloc[2])
    assert out["log_tgf_beta1_week4"].iloc[2] == pytest.approx(math.log(300))


def test_clinical_features(wide):
    clinical = ("score_baseline", "leadin_slope", "delta_fs", "age", "sex", "onset_site")
    out = features(analytes=(), ratios=(), clinical=clinical).fit_transform(wide)
    assert list(out.columns) == ["score_baseline", "leadin_slope", "delta_fs", "age",
                                 "sex_male", "onset_site_bulbar"]
    # (48 - 40) / 16 = 0.5, (48 - 36) / 12 = 1.0, onset 0 months -> undefined
    assert out["delta_fs"].iloc[0] == pytest.approx(0.5)
    assert out["delta_fs"].iloc[1] == pytest.approx(1.0)
    assert np.isnan(out["delta_fs"].iloc[2])
    assert out["sex_male"].tolist() == [1.0, 0.0, 1.0]
    assert out["onset_site_bulbar"].tolist() == [1.0, 0.0, 0.0]
    assert out["leadin_slope"].tolist() == [-1.25, -0.5, -2.0]


def test_missing_input_column_names_it(wide):
    with pytest.raises(ValueError, match="mcp1_week4"):
        features().fit(wide.drop(columns="mcp1_week4"))
    fitted = features(analytes=(), ratios=(), clinical=("delta_fs",)).fit(wide)
    with pytest.raises(ValueError, match="onset_months"):
        fitted.transform(wide.drop(columns="onset_months"))


def test_clinical_column_not_in_the_table_is_an_error(wide):
    with pytest.raises(ValueError, match="bmi"):
        features(clinical=("age", "bmi")).fit(wide)


def test_unknown_category_gives_missing_indicators(wide):
    out = features(analytes=(), ratios=(), clinical=("sex",)).fit_transform(
        wide.assign(sex=["male", "other", "female"]))
    assert out["sex_male"].iloc[0] == 1.0 and out["sex_male"].iloc[2] == 0.0
    assert np.isnan(out["sex_male"].iloc[1])


def test_category_with_three_levels_gives_two_indicators():
    table = pd.DataFrame({"subtype": ["A", "B", "C", "B"]})
    out = CohortFeatures(analytes=(), ratios=(), clinical=("subtype",),
                         categories=(("subtype", ("A", "B", "C")),)).fit_transform(table)
    assert list(out.columns) == ["subtype_B", "subtype_C"]
    assert out["subtype_B"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out["subtype_C"].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_category_indicators_are_the_same_from_arrow_text_and_python_objects():
    """Arrow text is compared by Arrow; Python objects (None, NaN, numbers among them)
    one by one; the indicators agree, missing and unknown values being neither level."""
    values = ["B", None, "C", "other", "A", np.nan, "B"]
    transformer = CohortFeatures(analytes=(), ratios=(), clinical=("subtype",),
                                 categories=(("subtype", ("A", "B", "C")),))
    as_objects = pd.DataFrame({"subtype": pd.Series(values, dtype=object)})
    as_arrow = pd.DataFrame({"subtype": pd.Series(values, dtype="str")})
    assert isinstance(as_arrow["subtype"].dtype, pd.StringDtype)
    expected = pd.DataFrame({"subtype_B": [1, np.nan, 0, np.nan, 0, np.nan, 1],
                             "subtype_C": [0, np.nan, 1, np.nan, 0, np.nan, 0]}, dtype=float)
    for table in (as_objects, as_arrow):
        pd.testing.assert_frame_equal(transformer.fit_transform(table), expected)


def test_delta_fs_of_a_score_that_rises_with_progression(wide):
    # UMSARS-like: best score 0; baseline 40 after 16 months -> 2.5 points/month
    out = features(analytes=(), ratios=(), clinical=("delta_fs",),
                   score_best=0.0).fit_transform(wide)
    assert out["delta_fs"].iloc[0] == pytest.approx(40 / 16)


def test_delta_fs_without_the_best_score_is_an_error(wide):
    with pytest.raises(ValueError, match="score_best"):
        features(clinical=("delta_fs",), score_best=None).fit(wide)


def test_feature_names_out_match_transform(wide):
    transformer = features(clinical=("delta_fs", "sex")).fit(wide)
    expected = [
        "log_tgf_beta1_baseline", "log_tgf_beta1_week4", "log_mcp1_baseline", "log_mcp1_week4",
        "log_ratio_tgf_beta1_mcp1_baseline", "log_ratio_tgf_beta1_mcp1_week4",
        "change_log_tgf_beta1", "change_log_mcp1", "change_log_ratio_tgf_beta1_mcp1",
        "delta_fs", "sex_male",
    ]
    assert list(transformer.get_feature_names_out()) == expected
    assert list(transformer.transform(wide).columns) == expected


def test_cohort_features_do_not_mutate_input(wide):
    before = wide.copy()
    features(clinical=("delta_fs", "sex", "onset_site")).fit_transform(wide)
    pd.testing.assert_frame_equal(wide, before)


# ------------------------------------------------------------------- whole Pipeline
def wide_table(panel) -> tuple[pd.DataFrame, np.ndarray]:
    """Six patients; MCP-1 at baseline is below the LLOQ (20) for the first one."""
    n = 6
    table = {
        "subject_id": [f"P{i}" for i in range(n)],
        "arm": ["MSC"] * n,
        "age": [54.0, 61.0, 47.0, 70.0, 39.0, 58.0],
        "sex": ["male", "female"] * 3,
        "onset_site": ["bulbar", "spinal", "spinal", "bulbar", "spinal", "spinal"],
        "onset_months": [14.0, 20.0, 9.0, 30.0, 12.0, 18.0],
        "score_baseline": [37.0, 41.0, 30.0, 44.0, 35.0, 39.0],
        "leadin_slope": [-1.0, -0.5, -2.0, -0.25, -1.5, -0.75],
    }
    for k, spec in enumerate(panel.analytes):
        for j, tp in enumerate(panel.timepoints):
            table[f"{spec.column_key}_{tp}"] = [100.0 * (k + 1) + 10 * i + j for i in range(n)]
            table[f"{spec.column_key}_{tp}_flag"] = ["observed"] * n
    frame = pd.DataFrame(table)
    frame.loc[0, ["mcp1_baseline", "mcp1_baseline_flag"]] = [20.0, "below"]
    frame.loc[5, ["vegf_week4", "vegf_week4_flag"]] = [np.nan, "missing"]
    return frame, np.array([1, 0, 1, 0, 1, 0])


def test_pipeline_from_train_config_keeps_readable_names(configs_dir):
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig)
    spec = next(m for m in config.models.values() if m.family == "logistic")
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    X, y = wide_table(config.panel)
    pipeline.fit(X, y)

    names = list(pipeline[:-1].get_feature_names_out())
    assert "log_ratio_tgf_beta1_mcp1_baseline" in names
    assert "change_log_ratio_tgf_beta1_mcp1" in names
    assert {"delta_fs", "sex_male", "onset_site_bulbar"} <= set(names)

    transformed = pipeline[:-1].transform(X)
    assert isinstance(transformed, pd.DataFrame)
    assert list(transformed.columns) == names
    assert not transformed.isna().any().any()          # missing values were imputed

    engineered = pipeline[:2].transform(X)             # censoring rule + features
    assert engineered["log_mcp1_baseline"].iloc[0] == pytest.approx(math.log(20 / math.sqrt(2)))
    assert np.isnan(engineered["change_log_vegf"].iloc[5])  # week4 VEGF missing
    # levels: [baseline]: week4 enters through the change only (no exact collinearity)
    assert config.features.levels == ["baseline"]
    assert not any(name.endswith("_week4") for name in names)

    proba = pipeline.predict_proba(X)
    assert proba.shape == (6, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)


# ------------------------------------------------------------ BridgeNormalization
@pytest.fixture
def bridged() -> pd.DataFrame:
    """Plate B reads twice as high as plate A: its bridging sample says so."""
    return pd.DataFrame({
        "mcp1_baseline": [10.0, 20.0, 40.0, 5.0],
        "mcp1_baseline_flag": ["observed", "observed", "observed", "below"],
        "mcp1_baseline_bridge": [100.0, 200.0, 200.0, np.nan],
        "age": [50.0, 60.0, 70.0, 80.0],
    })


def test_bridge_normalisation_brings_plates_to_the_reference(bridged):
    out = BridgeNormalization().fit_transform(bridged)
    reference = math.sqrt(100 * 200)            # geometric mean over the plates seen
    assert out["mcp1_baseline"].tolist()[:3] == pytest.approx(
        [10 * reference / 100, 20 * reference / 200, 40 * reference / 200])
    assert out["mcp1_baseline"].iloc[3] == 5.0  # no bridge on its plate: unchanged
    assert "mcp1_baseline_bridge" not in out.columns
    assert list(out.columns) == list(BridgeNormalization().fit(bridged)
                                     .get_feature_names_out())


def test_bridge_reference_is_learned_from_the_training_rows_only(bridged):
    fitted = BridgeNormalization().fit(bridged.iloc[[1, 2]])     # plate B only
    assert fitted.reference_ == {"mcp1_baseline": pytest.approx(200.0)}
    out = fitted.transform(bridged)
    assert out["mcp1_baseline"].iloc[0] == pytest.approx(10 * 200 / 100)


def test_bridge_pipeline_from_config(configs_dir):
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig,
                            overrides=["features.plate_correction=bridge"])
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    assert isinstance(pipeline.named_steps["plates"], BridgeNormalization)


def test_pairwise_ratios_add_every_pair_once(configs_dir):
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig, overrides=[
        "features.pairwise_ratios=[MCP-1, TGF-beta1, VEGF]"])
    # TGF-beta1/MCP-1 is explicit: its reverse pair is not added again
    assert config.features.all_ratios() == [("TGF-beta1", "MCP-1"), ("MCP-1", "VEGF"),
                                            ("TGF-beta1", "VEGF")]
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0)
    X, y = wide_table(config.panel)
    names = list(pipeline.fit(X, y)[:-1].get_feature_names_out())
    for ratio in ("tgf_beta1_mcp1", "mcp1_vegf", "tgf_beta1_vegf"):
        assert f"log_ratio_{ratio}_baseline" in names
        assert f"change_log_ratio_{ratio}" in names
    assert "log_ratio_mcp1_tgf_beta1_baseline" not in names


def test_clinical_only_reference_pipeline_has_no_csf_feature(configs_dir):
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig)
    spec = config.models["logistic_l2"]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=0, csf=False)
    X, y = wide_table(config.panel)
    names = list(pipeline.fit(X, y)[:-1].get_feature_names_out())
    assert names == ["score_baseline", "leadin_slope", "delta_fs", "age", "sex_male",
                     "onset_site_bulbar"]


def test_levels_at_every_timepoint_unless_restricted(configs_dir):
    X, y = wide_table(load_config(configs_dir / "train.yaml", TrainConfig)[0].panel)
    for levels, expected in (("null", {"baseline", "week4"}), ("[week4]", {"week4"})):
        config, _ = load_config(configs_dir / "train.yaml", TrainConfig,
                                overrides=[f"features.levels={levels}"])
        pipeline = make_pipeline(config.models["logistic_l2"], panel=config.panel,
                                 indication=config.indication, features=config.features, seed=0)
        names = list(pipeline.fit(X, y)[:-1].get_feature_names_out())
        found = {name.rsplit("_", 1)[1] for name in names if name.startswith("log_")}
        assert found == expected, levels
        assert "change_log_ratio_tgf_beta1_mcp1" in names
    with pytest.raises(ConfigError, match="features.levels names timepoint 'week8'"):
        load_config(configs_dir / "train.yaml", TrainConfig, overrides=["features.levels=[week8]"])
