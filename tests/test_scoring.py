"""Scoring library: profile, probabilities and intervals, reasons, out-of-distribution
flags, drift statistics and the accounting of patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from csf_responder import scoring
from csf_responder.config import TrainConfig, load_config
from csf_responder.errors import CohortError
from csf_responder.ingest import ingest_cohort
from csf_responder.io import write_cohort
from csf_responder.models import make_pipeline, prevalence_pipeline
from csf_responder.simulate import simulate_trial
from csf_responder.training import training_data
from csf_responder.validation import bootstrap_refits
from tests.conftest import CONFIGS
from tests.simulated import simulation_config

FAST_XGB = ["models.xgboost.params.n_estimators=30"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A simulated cohort (60 MSC patients), its config and its labelled training rows."""
    config, _ = load_config(CONFIGS / "train.yaml", TrainConfig, overrides=FAST_XGB)
    trial = simulate_trial(simulation_config("n_msc=60", "n_control=5", noise=()))
    directory = tmp_path_factory.mktemp("cohort")
    write_cohort(directory, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    ingested = ingest_cohort(directory, panel=config.panel, indication=config.indication,
                             labels=config.labels, drop_columns=[])
    data = training_data(ingested.table, arm="MSC", minimum=20)
    return config, ingested, data


def _fitted(config, data, family):
    spec = config.models[family]
    model = make_pipeline(spec, panel=config.panel, indication=config.indication,
                          features=config.features, seed=config.seed)
    return model.fit(data.X, data.y)


@pytest.fixture(scope="module")
def xgb(cohort):
    config, _, data = cohort
    model = _fitted(config, data, "xgboost")
    refits = bootstrap_refits(model, data.X, data.y, n_models=8, seed=3)
    contract = scoring.model_contract(config.panel, config.indication, config.labels)
    profile = scoring.training_profile(model, data.X, contract=contract, family="xgboost",
                                       threshold=0.5, n_interval_models=len(refits))
    return model, refits, profile


@pytest.fixture(scope="module")
def linear(cohort):
    config, _, data = cohort
    model = _fitted(config, data, "logistic_l2")
    contract = scoring.model_contract(config.panel, config.indication, config.labels)
    profile = scoring.training_profile(model, data.X, contract=contract,
                                       family="logistic_l2", threshold=0.4)
    return model, profile


# ----------------------------------------------------------------------------- profile
def test_feature_descriptions_read_like_a_clinician_would_say_them():
    analytes = {"tgf_beta1": ("TGF-beta1", "pg/mL"), "mcp1": ("MCP-1", "pg/mL")}
    kwargs = {"analytes": analytes, "covariates": {"age": "years"}, "score_name": "ALSFRS-R",
              "timepoints": ["baseline", "week4"]}
    assert scoring.describe_feature("log_tgf_beta1_baseline", **kwargs) == {
        "label": "TGF-beta1 at baseline", "unit": "pg/mL", "kind": "log"}
    ratio = scoring.describe_feature("log_ratio_tgf_beta1_mcp1_baseline", **kwargs)
    assert ratio["label"] == "TGF-beta1/MCP-1 ratio at baseline" and ratio["kind"] == "log"
    change = scoring.describe_feature("change_log_ratio_tgf_beta1_mcp1", **kwargs)
    assert change["kind"] == "fold" and "TGF-beta1/MCP-1 ratio" in change["label"]
    assert scoring.describe_feature("age", **kwargs)["unit"] == "years"
    assert scoring.describe_feature("leadin_slope", **kwargs)["unit"] == "points/month"
    assert scoring.describe_feature("sex_male", **kwargs)["kind"] == "indicator"


def test_profile_records_contract_ranges_drift_reference_and_ood(cohort, xgb):
    config, _, data = cohort
    model, _, profile = xgb
    assert profile["inputs"] == list(data.X.columns)
    assert "tgf_beta1_baseline" in profile["needed"] and "mcp1_week4" in profile["needed"]
    assert "il6_baseline" not in profile["needed"]  # not a model analyte
    assert set(profile["drift"]) == {c for c in profile["needed"]
                                     if c.endswith(("_baseline", "_week4"))
                                     and c != "score_baseline"}
    names = list(model[:-1].get_feature_names_out())
    assert list(profile["features"]) == names
    ratio = profile["features"]["log_ratio_tgf_beta1_mcp1_baseline"]
    logs = np.log(data.X["tgf_beta1_baseline"] / data.X["mcp1_baseline"])
    assert ratio["min"] == pytest.approx(logs.min()) and ratio["max"] == pytest.approx(logs.max())
    assert len(profile["ood"]["mean"]) == len(names)
    assert profile["contract"]["lead_in"]["lead_in_days"] == config.labels.lead_in_days


# ----------------------------------------------------------------------------- scoring
def test_probabilities_are_the_models_own_and_the_interval_comes_from_the_refits(cohort, xgb):
    _, ingested, data = cohort
    model, refits, profile = xgb
    scores = scoring.Scorer(model, profile, refits).score(data.X)
    assert list(scores.columns) == scoring.score_columns(3)
    np.testing.assert_allclose(scores["probability"], model.predict_proba(data.X)[:, 1],
                               rtol=1e-6)
    spread = np.column_stack([m.predict_proba(data.X)[:, 1] for m in refits])
    np.testing.assert_allclose(scores["probability_low"], np.quantile(spread, 0.05, axis=1))
    np.testing.assert_allclose(scores["probability_high"], np.quantile(spread, 0.95, axis=1))
    assert (scores["probability_low"] <= scores["probability_high"]).all()
    assert scores["predicted_responder"].tolist() == (
        scores["probability"] >= 0.5).astype(int).tolist()


def test_interval_models_tails_in_numpy_are_scikit_learns_bit_for_bit(cohort, xgb):
    """The imputer and scaler of each interval model run in numpy on large chunks: the
    same numbers as the steps' own transform, missing values included."""
    from csf_responder.validation import stateless_prefix

    config, _, data = cohort
    model, refits, _ = xgb
    rows = data.X.copy()
    rows.loc[rows.index[:5], ["tgf_beta1_baseline", "age"]] = np.nan  # to impute
    start = stateless_prefix(model)
    head = model[:start].transform(rows)
    assert head.isna().any().any()
    linear = _fitted(config, data, "logistic_l2")
    for pipeline in [*refits, linear]:
        assert all(scoring._numpy_ready(step) for _, step in pipeline.steps[start:-1])
        fast = scoring._tail_matrix(pipeline, start, head)
        assert isinstance(fast, np.ndarray)
        np.testing.assert_array_equal(fast, pipeline[start:-1].transform(head).to_numpy())
    # and the probabilities they give are the Pipelines' own (a linear model gets its
    # feature names back, so scikit-learn has nothing to warn about)
    scorer = scoring.Scorer(model, scoring.training_profile(
        model, data.X, contract=scoring.model_contract(config.panel, config.indication,
                                                       config.labels),
        family="xgboost", threshold=0.5, n_interval_models=2), [linear, linear])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = scorer.score(rows)
    np.testing.assert_allclose(scores["probability_low"], linear.predict_proba(rows)[:, 1],
                               rtol=1e-12)  # the quantile of two equal values


@pytest.mark.parametrize("which", ["xgb", "linear"])
def test_shap_contributions_add_up_to_the_log_odds(cohort, which, request):
    _, _, data = cohort
    found = request.getfixturevalue(which)
    model, profile = found[0], found[-1]
    scorer = scoring.Scorer(model, profile)
    values, labels, base = scorer.explain(data.X.head(10))
    p = model.predict_proba(data.X.head(10))[:, 1]
    np.testing.assert_allclose(values.sum(axis=1) + base, np.log(p / (1 - p)), atol=1e-4)
    assert labels.iloc[0]["log_tgf_beta1_baseline"].endswith("pg/mL")


def test_reasons_are_the_largest_contributions_in_words(cohort, xgb):
    _, _, data = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    rows = data.X.head(15)
    scores = scorer.score(rows)
    values, _, _ = scorer.explain(rows)
    for i in range(len(rows)):
        ranked = values.iloc[i].abs().sort_values(ascending=False, kind="stable")
        assert [scores.loc[i, f"reason_{r}_feature"] for r in (1, 2, 3)] == list(ranked.index[:3])
        top = scores.loc[i, "reason_1_feature"]
        assert scores.loc[i, "reason_1_shap"] == pytest.approx(values.iloc[i][top], abs=1e-6)
        text = scores.loc[i, "reason_1"]
        effect = "raises" if values.iloc[i][top] > 0 else "lowers"
        assert text.startswith(profile["features"][top]["label"])
        assert text.endswith(f"{effect} the chance")
        assert any(f", {level}: " in text for level in ("low", "typical", "high"))
    ratio = scores.filter(like="_feature").eq("log_ratio_tgf_beta1_mcp1_baseline")
    if ratio.any(axis=None):  # shown as the ratio itself, not its log
        r, c = np.argwhere(ratio.to_numpy())[0]
        value = scores.iloc[r][f"reason_{c + 1}_value"]
        expected = rows.iloc[r]["tgf_beta1_baseline"] / rows.iloc[r]["mcp1_baseline"]
        assert value == pytest.approx(expected, rel=1e-6)


def test_out_of_distribution_flags_name_the_feature_and_catch_the_far_patient(cohort, xgb):
    _, _, data = cohort
    model, refits, profile = xgb
    rows = data.X.head(3).copy()
    rows.loc[rows.index[1], "tgf_beta1_baseline"] *= 50  # far above any training value
    rows.loc[rows.index[2], ["tgf_beta1_baseline", "mcp1_baseline", "age"]] = [1e5, 1.0, 119]
    scores = scoring.Scorer(model, profile, refits).score(rows)
    assert not scores.loc[0, "ood_range"] and not scores.loc[0, "ood_multivariate"]
    assert scores.loc[1, "ood_range"]
    assert "log_tgf_beta1_baseline" in scores.loc[1, "ood_range_features"].split(";")
    assert scores.loc[2, "ood_multivariate"]
    assert scores.loc[2, "ood_distance"] > scores.loc[0, "ood_distance"]
    listed = scores.loc[2, "ood_range_features"].split(";")  # each once, in feature order
    assert {"log_tgf_beta1_baseline", "age"} <= set(listed)
    assert listed == [f for f in profile["features"] if f in listed]
    assert scores.loc[0, "ood_range_features"] == ""


def test_scores_are_the_same_whether_ids_are_arrow_text_or_python_objects(cohort, xgb):
    """Text columns of the scores are pandas' str whatever the ids' dtype."""
    _, _, data = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    rows = data.X.head(40)
    as_text = scorer.score(rows.assign(subject_id=rows["subject_id"].astype("str")))
    as_objects = scorer.score(rows.assign(subject_id=rows["subject_id"].astype(object)))
    pd.testing.assert_frame_equal(as_text, as_objects)
    expected = pd.DataFrame({"x": np.array(["a"], dtype=object)})["x"].dtype
    assert as_text["subject_id"].dtype == as_text["ood_range_features"].dtype == expected


def test_missing_inputs_are_counted_and_said(cohort, linear):
    _, _, data = cohort
    model, profile = linear
    rows = data.X.head(2).copy()
    rows.loc[rows.index[0], "age"] = np.nan
    scores = scoring.Scorer(model, profile).score(rows)
    assert scores["n_imputed"].tolist() == [1, 0]
    reasons = scores.loc[0, ["reason_1", "reason_2", "reason_3"]].tolist()
    age = [r for r in reasons if r.startswith("age")]
    assert not age or "missing (imputed)" in age[0]


def test_a_model_without_features_scores_without_reasons(cohort):
    config, _, data = cohort
    model = prevalence_pipeline().fit(data.X, data.y)
    contract = scoring.model_contract(config.panel, config.indication, config.labels)
    profile = scoring.training_profile(model, data.X, contract=contract,
                                       family="prevalence", threshold=0.5)
    scores = scoring.Scorer(model, profile).score(data.X.head(4))
    assert list(scores.columns) == scoring.score_columns(3)
    assert scores["probability"].nunique() == 1 and (scores["reason_1"] == "").all()


def test_empty_scores_have_every_column():
    assert list(scoring.empty_scores(2).columns) == scoring.score_columns(2)


# ------------------------------------------------------------------------ cohort checks
def test_a_missing_analyte_or_timepoint_is_named(cohort, xgb):
    _, ingested, _ = cohort
    _, _, profile = xgb
    table = ingested.table.copy()
    assert scoring.check_inputs(table, profile, file="csf.csv") == []
    no_mcp1 = table.assign(mcp1_baseline=np.nan, mcp1_week4=np.nan)
    with pytest.raises(CohortError, match=r"csf.csv: .*MCP-1 \(no value at any timepoint\)"):
        scoring.check_inputs(no_mcp1, profile, file="csf.csv")
    no_week4 = table.assign(vegf_week4=np.nan)
    with pytest.raises(CohortError, match="VEGF at week4"):
        scoring.check_inputs(no_week4, profile, file="csf.csv")


def test_a_panel_analyte_the_model_does_not_use_is_ignored_with_a_note(cohort, xgb):
    _, ingested, _ = cohort
    _, _, profile = xgb
    notes = scoring.check_inputs(ingested.table.assign(il6_baseline=3.0), profile,
                                 file="csf.csv")
    assert notes == ["csf.csv: IL-6 not used by the model: ignored"]


def test_patients_without_any_model_csf_are_flagged(cohort, xgb):
    _, ingested, _ = cohort
    _, _, profile = xgb
    table = ingested.table.copy()
    columns = [c for c in profile["drift"]]
    table.loc[table.index[0], columns] = np.nan
    table.loc[table.index[1], columns[0]] = np.nan
    flagged = scoring.csf_rejects(table, profile)
    assert flagged.iloc[0] and not flagged.iloc[1]


def test_accounting_catches_lost_duplicated_and_double_counted_patients():
    subjects = pd.Series(["a", "b", "c", ""])
    rejects = pd.DataFrame({"subject_id": ["c", ""], "rule": ["x", "subject_id_missing"]})
    scoring.check_accounting(subjects, pd.Series(["a", "b"]), rejects)
    with pytest.raises(RuntimeError, match=r"neither scored nor rejected: \['b'\]"):
        scoring.check_accounting(subjects, pd.Series(["a"]), rejects)
    with pytest.raises(RuntimeError, match=r"scored twice: \['b'\]"):
        scoring.check_accounting(subjects, pd.Series(["a", "b", "b"]), rejects)
    with pytest.raises(RuntimeError, match=r"scored and rejected: \['c'\]"):
        scoring.check_accounting(subjects, pd.Series(["a", "b", "c"]), rejects)
    with pytest.raises(RuntimeError, match=r"not in the input: \['z'\]"):
        scoring.check_accounting(subjects, pd.Series(["a", "b", "z"]), rejects)
    with pytest.raises(RuntimeError, match="without subject_id"):
        scoring.check_accounting(subjects, pd.Series(["a", "b"]), rejects.iloc[:1])


# ------------------------------------------------------------------------------- drift
def _reference(train: np.ndarray) -> dict:
    edges, fractions = scoring._psi_edges(train)
    return {"edges": edges, "fractions": fractions, "ks_reference": scoring._ks_reference(train)}


def test_drift_statistics_are_exact_whatever_the_chunks():
    rng = np.random.default_rng(0)
    train = rng.normal(5, 0.5, 300)
    new = rng.normal(5.3, 0.6, 5000)
    accumulator = scoring.DriftAccumulator({"x": _reference(train)})
    for part in np.array_split(new, 7):
        accumulator.add(pd.DataFrame({"x": np.exp(part)}), np.full(len(part), 0.5))
    found = accumulator.statistics()["x"]
    expected = stats.ks_2samp(train, new)
    assert found["ks"] == pytest.approx(expected.statistic, abs=1e-12)
    assert found["ks_p"] < 1e-6 and found["n"] == 5000
    one = scoring.DriftAccumulator({"x": _reference(train)})
    one.add(pd.DataFrame({"x": np.exp(new)}), np.full(len(new), 0.5))
    assert one.statistics()["x"]["psi"] == pytest.approx(found["psi"])
    assert found["psi"] > 0.25


def test_drift_statistics_are_exact_with_values_tied_to_training_values():
    rng = np.random.default_rng(2)
    # ties with training values are the rule; odd values fall between them
    train = 2.0 * rng.integers(1, 6, 40)
    new = rng.integers(1, 12, 3000).astype(float) ** rng.choice([1, 1.2], 3000)
    accumulator = scoring.DriftAccumulator({"x": _reference(np.log(train))})
    for part in np.array_split(new, 4):
        accumulator.add(pd.DataFrame({"x": part}), np.full(len(part), 0.5))
    found = accumulator.statistics()["x"]
    assert found["ks"] == pytest.approx(stats.ks_2samp(train, new).statistic, abs=1e-12)
    assert found["n"] == 3000
    # the supremum just below a training value, where new values sit too
    train, new = np.repeat([1.0, np.e ** 2], [3, 7]), np.repeat([np.e, np.e ** 2], 50)
    accumulator = scoring.DriftAccumulator({"x": _reference(np.log(train))})
    accumulator.add(pd.DataFrame({"x": new}), np.full(len(new), 0.5))
    assert accumulator.statistics()["x"]["ks"] == pytest.approx(0.3, abs=1e-12)
    assert stats.ks_2samp(train, new).statistic == pytest.approx(0.3, abs=1e-12)


def test_drift_index_bins_values_tied_to_an_edge_above_it():
    rng = np.random.default_rng(3)
    train = np.log(rng.integers(1, 9, 200).astype(float))  # deciles on training values
    reference = _reference(train)
    new = rng.integers(0, 11, 4000).astype(float)  # zeros: no log, not counted
    accumulator = scoring.DriftAccumulator({"x": reference})
    for part in np.array_split(new, 3):
        accumulator.add(pd.DataFrame({"x": part}), np.full(len(part), 0.5))
    logs = np.log(new[new > 0])
    assert np.isin(logs, reference["edges"]).mean() > 0.3  # ties are common
    # each value in the bin from the edge it equals, as the training fractions count
    observed = np.bincount(np.searchsorted(reference["edges"], logs, side="right"),
                           minlength=len(reference["edges"]) + 1) / len(logs)
    found = accumulator.statistics()["x"]
    assert found["psi"] == pytest.approx(scoring.psi(reference["fractions"], observed),
                                         abs=1e-12)
    assert found["n"] == len(logs)


def test_no_drift_gives_a_small_index_and_a_large_p_value():
    rng = np.random.default_rng(1)
    train = rng.normal(5, 0.5, 400)
    accumulator = scoring.DriftAccumulator({"x": _reference(train)})
    new = rng.normal(5, 0.5, 4000)
    accumulator.add(pd.DataFrame({"x": np.exp(new)}), rng.random(4000))
    found = accumulator.statistics()["x"]
    assert found["psi"] < 0.1 and found["ks_p"] > 0.01  # 0.1: "no shift" by the usual rule
    distribution = accumulator.score_distribution()
    assert distribution["p50"] == pytest.approx(0.5, abs=0.03)
    assert 0 < distribution["p05"] < distribution["p95"] < 1


def test_psi_bins_shrink_with_few_training_values():
    edges, fractions = scoring._psi_edges(np.arange(30.0))
    assert len(fractions) == 5 and sum(fractions) == pytest.approx(1)
    edges, fractions = scoring._psi_edges(np.arange(1000.0))
    assert len(fractions) == scoring.PSI_BINS


# ------------------------------------------------------------------- scoring internals
def test_xgboost_predicts_the_same_from_a_matrix_as_from_its_frame(cohort, xgb):
    _, _, data = cohort
    model, refits, _ = xgb
    for m in [model, *refits]:
        frame = m[:-1].transform(data.X)
        expected = m[-1].predict_proba(frame)[:, 1]
        assert np.array_equal(scoring._predict(m[-1], frame), expected)


def test_a_linear_model_predicts_from_its_frame_without_warning(cohort, linear):
    import warnings

    _, _, data = cohort
    model, _ = linear
    frame = model[:-1].transform(data.X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        probability = scoring._predict(model[-1], frame)
    assert np.array_equal(probability, model.predict_proba(data.X)[:, 1])


def test_before_classifier_runs_the_steps_between(cohort, xgb):
    _, _, data = cohort
    model, _, _ = xgb
    head = model[:1].transform(data.X)
    pd.testing.assert_frame_equal(scoring._before_classifier(model, 1, head),
                                  model[:-1].transform(data.X))
    only = prevalence_pipeline().fit(data.X, data.y)  # the classifier alone
    assert scoring._before_classifier(only, 0, data.X) is data.X


def test_effect_codes_name_the_direction():
    codes = scoring._effect_codes(np.array([0.3, -0.2, 0.0, -0.0, np.nan]))
    assert [scoring.EFFECTS[c] for c in codes] == [
        "raises the chance", "lowers the chance", "does not change the chance",
        "does not change the chance", "lowers the chance"]


def _words(info: dict, shown: np.ndarray, contribution: np.ndarray) -> list[str]:
    """A reason in words, one row at a time, the plain way (what the library did before
    it built the sentences in Arrow)."""
    out = []
    for value, effect in zip(shown, scoring._effect_codes(contribution), strict=True):
        said_effect = scoring.EFFECTS[effect]
        if info["kind"] == "indicator":
            said = ("missing (imputed)" if not np.isfinite(value)
                    else "yes" if value >= 0.5 else "no")
            out.append(f"{info['label']}: {said}: {said_effect}")
            continue
        level = "typical"
        if info["tertiles"] is not None:
            low, high = info["tertiles"]
            level = "low" if value < low else level
            level = "high" if value > high else level
        text = f"{value:.3g}" if np.isfinite(value) else "missing"
        level = level if np.isfinite(value) else "missing (imputed)"
        unit = f" {info['unit']}" if info["unit"] else ""
        prefix = "x" if info["kind"] == "fold" else ""
        out.append(f"{info['label']} {prefix}{text}{unit}, {level}: {said_effect}")
    return out


def test_sentences_are_the_words_of_every_row_whatever_its_feature():
    """The reasons' text is built in Arrow for all rows at once; row by row it is what
    :func:`_words` says of the row's own feature."""
    info = [{"label": f"feature {kind}", "unit": "pg/mL" if kind == "log" else "",
             "kind": kind, "tertiles": None if kind == "number" else [0.5, 2.0]}
            for kind in ("log", "fold", "number", "indicator")]
    rng = np.random.default_rng(0)
    shown = np.round(rng.lognormal(size=400), 2)
    shown[:6] = [np.nan, 0.5, 2.0, 0.0, -0.0, np.inf]
    which = rng.integers(0, len(info), size=len(shown))
    which[:24] = np.repeat(np.arange(len(info)), 6)[:24]  # every special value, every kind
    shown[:24] = np.tile(shown[:6], 4)
    contribution = rng.normal(size=len(shown))
    contribution[:4] = 0.0
    built = scoring._sentences(info, which, shown, contribution).to_pylist()
    for j, one in enumerate(info):
        rows = which == j
        words = _words(one, shown[rows], contribution[rows])
        assert [b for b, r in zip(built, rows, strict=True) if r] == words, one["kind"]


def test_values_are_written_as_python_writes_three_significant_digits():
    """The reasons' values are rounded in numpy and each distinct number written once;
    the text is Python's ``.3g`` of every value, at the edges too: halves exactly
    representable (1.125 -> 1.12) or a float away from it, 999.5 -> 1e+03, the switch to
    exponents at 1e-4 and 1e3, zeros, signs, subnormals, the largest floats."""
    rng = np.random.default_rng(3)
    edges = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1e-300, 1.7e308,
                      -1.7e308, 999.5, 9.995, 0.9995, 1.125, 0.125, 2.675, 1000.0, 999.0,
                      100.0, 1e-4, 9.9999e-5, 1e-5, 0.000123, 12345.0, 99999.0, 1.0])
    halves = (rng.integers(1000, 10000, 3000) + 0.5) * 10.0 ** rng.integers(-9, 8, 3000)
    values = np.concatenate([
        edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), halves,
        np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
        rng.lognormal(0, 4, 20000) * rng.choice([-1, 1], 20000),
        rng.integers(-3000, 3000, 5000) / rng.choice([1, 8, 100, 1024], 5000)])
    expected = [f"{v:.3g}" if np.isfinite(v) else "missing" for v in values.tolist()]
    assert scoring._format(values).tolist() == expected
    assert scoring._format(np.array([])).tolist() == []


def test_text_columns_are_str_and_empty_ones_object():
    column = scoring._text_column(["a", "bb"], np.array([1, 0, 1]))
    assert column.tolist() == ["bb", "a", "bb"]
    assert column.dtype == pd.DataFrame({"x": np.array(["a"], dtype=object)})["x"].dtype
    assert scoring._text_column(["a"], np.zeros(0, dtype=np.int64)).dtype == object


def test_scores_of_one_row_and_of_many_agree(cohort, xgb):
    _, _, data = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    many = scorer.score(data.X)
    one = pd.concat([scorer.score(data.X.iloc[[i]]) for i in range(5)], ignore_index=True)
    pd.testing.assert_frame_equal(one, many.head(5))


def test_a_shipped_scorer_is_unpickled_once_per_worker_and_scores_the_same(cohort, xgb):
    """Pool workers get the scorer pickled once, as bytes with a token, and rebuild its
    models for the first chunk only; a new scoring run's token replaces it."""
    import pickle

    _, _, data = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    shipped = ("run-1", pickle.dumps(scorer))
    calls = []

    def score_chunk(raw, kept, **kwargs):  # what the worker would score with
        calls.append(kept)
        return kept.score(raw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "score_chunk", score_chunk)
        first = scoring._score_shipped(data.X, scorer=shipped)
        scoring._score_shipped(data.X, scorer=shipped)
        scoring._score_shipped(data.X, scorer=("run-2", pickle.dumps(scorer)))
    assert calls[0] is calls[1] and calls[2] is not calls[0]
    assert list(scoring._SHIPPED) == ["run-2"]
    pd.testing.assert_frame_equal(first, scorer.score(data.X))


def _chunk_tables(chunks):
    return [(c.scores, c.rejects, c.input_rejects, c.accounting) for c in chunks]


def test_chunks_score_the_same_in_this_process_and_in_either_kind_of_pool(
        cohort, xgb, monkeypatch):
    """Forked workers take their chunks from the files they inherited, spawned ones
    receive each chunk pickled: both give this process' results, in order."""
    import os
    import sys

    # one thread per worker: this process fitted xgboost with OpenMP threads, which a
    # forked worker cannot use (see csf_responder.execution.ProcessPool)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    from csf_responder.io import read_cohort_files

    _, ingested, _ = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    files = read_cohort_files(ingested.raw.directory, visits_file="alsfrs.csv",
                              chunk_size=20)
    assert files.n_chunks > 2
    here = _chunk_tables(scoring.score_chunks(files, scorer))
    kinds = [sys.platform, "darwin"] if sys.platform.startswith("linux") else [sys.platform]
    for platform in kinds:  # "darwin": workers spawned, as there
        monkeypatch.setattr(sys, "platform", platform)
        with scoring.scoring_pool(files, scorer, n_jobs=2) as pool:
            assert pool.inherits == platform.startswith("linux")
            found = _chunk_tables(scoring.score_chunks(files, scorer, pool=pool))
        assert len(found) == len(here) == files.n_chunks
        for mine, theirs in zip(here, found, strict=True):
            for a, b in zip(mine, theirs, strict=True):
                pd.testing.assert_frame_equal(a, b)


def test_scoring_command_modules_load_without_scikit_learn():
    """The command forks MLflow's process right after importing these: scikit-learn,
    scipy.stats and xgboost (about a CPU second) load afterwards, with the model, while
    that process starts; were they imported here, the two processes could not share
    that second."""
    import subprocess
    import sys

    code = ("import sys, csf_responder.scoring, csf_responder.tracking, pipelines.score\n"
            "loaded = [m for m in ('sklearn', 'scipy.stats', 'xgboost', 'mlflow', 'skops')\n"
            "          if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_largest_contributions_come_in_the_order_a_stable_sort_gives():
    """The top reasons are picked by argmax passes; they are the first columns of a
    stable sort by decreasing size, ties (zeros of unused features, equal values) in
    column order, and whatever the values when they are not sizes."""
    rng = np.random.default_rng(5)
    size = np.abs(np.round(rng.normal(size=(2000, 7)), 1))  # many ties
    size[:, 2] = 0.0
    size[::5] = 0.0
    for k in (1, 3, 7):
        expected = np.argsort(-size, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(scoring._largest(size, k), expected)
    odd = size.copy()
    odd[0, 1], odd[1, :2] = np.nan, -np.inf
    np.testing.assert_array_equal(scoring._largest(odd, 3),
                                  np.argsort(-odd, axis=1, kind="stable")[:, :3])
    assert scoring._largest(size, 0).shape == (2000, 0)


@pytest.mark.parametrize("p", [5, 70])
def test_listed_names_are_each_rows_flags_in_order_however_many(p):
    """Out-of-range features are listed per pattern of flags (bits of an integer, or
    packed rows beyond 62 features); row by row, the list is the plain join."""
    rng = np.random.default_rng(p)
    flags = rng.random((500, p)) < 0.05
    flags[:3] = [False], [True], [False]  # none, all, none
    flags[3:50] = flags[50:97]  # shared patterns
    names = [f"f{j}" for j in range(p)]
    listed = scoring._listed(flags, names)
    expected = [";".join(n for n, f in zip(names, row, strict=True) if f) for row in flags]
    assert listed.tolist() == expected
    assert listed.dtype == pd.DataFrame({"x": np.array(["a"], dtype=object)})["x"].dtype
    assert scoring._listed(np.zeros((0, p), dtype=bool), names).tolist() == []


def test_threads_are_set_on_every_xgboost_model_each_time_they_change(cohort, xgb):
    _, _, data = cohort
    model, refits, profile = xgb
    scorer = scoring.Scorer(model, profile, refits)
    for n in (1, 1, 2, 1):
        scorer.use_threads(n)
        assert {m[-1].get_params()["n_jobs"] for m in [model, *refits]} == {n}
