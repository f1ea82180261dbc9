"""End to end: simulate a cohort, train into a temporary MLflow store, load the model
in a fresh Python process and predict on raw wide rows. The training is the session's
shared one (tests/conftest.py: ``trained_store``), read here as it was written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli_env, copy_store

FAMILIES = {"logistic_l2", "elastic_net", "xgboost"}  # configs/train.yaml
REFERENCES = {"prevalence", "clinical_only"}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def trained(trained_store):
    """simulate (40 MSC, 10 control) -> validate -> train --permutation-test with two
    repeats and two permutations (tests/conftest.py: SHARED_TRAIN), in ``work``."""
    return trained_store.work, cli_env(), trained_store.result, trained_store.train


def test_train_prints_summary_and_where_to_look(trained):
    _, _, result, _ = trained
    out = result.stdout
    assert "Ingest: every row used or rejected" in out
    assert "labelled MSC patients" in out
    assert all(family in out for family in FAMILIES)
    assert "ROC AUC (95% CI)" in out
    assert "make ui" in out
    assert "folds and permutations" in result.stderr  # the progress bar


def test_runs_hold_config_metrics_tags_model_and_shap(trained, monkeypatch):
    work, _, _, _ = trained
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("csf-responder")
    location = Path(experiment.artifact_location.removeprefix("file://"))
    assert location == work / "store" / "artifacts"
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.data.tags["family"] for c in children} == FAMILIES | REFERENCES
    roles = {c.data.tags["family"]: c.data.tags["role"] for c in children}
    assert roles["prevalence"] == roles["clinical_only"] == "reference"
    assert parent.data.tags["best_family"] in FAMILIES
    assert parent.data.metrics["riley_minimum_n"] > parent.data.metrics["n_labelled_msc"]
    assert parent.data.params["validation.n_repeats"] == "2"
    assert len(parent.data.tags["git_commit"]) in (40, len("unknown"))
    assert len(parent.data.tags["data_digest"]) == 16
    # issue 5: who, what and which data, readable at a glance
    assert len(parent.data.tags["config_digest"]) == 16
    assert int(parent.data.tags["n_msc"]) == 40 and int(parent.data.tags["n_control"]) == 10
    assert int(parent.data.tags["n_labelled_msc"]) == parent.data.metrics["n_labelled_msc"]
    assert int(parent.data.tags["n_excluded"]) == parent.data.metrics["n_excluded"]
    assert parent.data.tags["label_definition"] == "slope improvement >= 50% at 6 months vs lead-in"
    assert re.fullmatch(r"train cohort \d{4}-\d{2}-\d{2} \d{2}:\d{2}", parent.info.run_name)
    (cohort_input,) = parent.inputs.dataset_inputs
    assert cohort_input.dataset.digest == parent.data.tags["data_digest"]
    assert json.loads(cohort_input.dataset.profile)["num_rows"] == 50  # patients, no rows
    assert {tag.value for tag in cohort_input.tags} == {"cohort"}
    assert parent.data.metrics["n_labelled_msc"] > 20
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/rejects.csv" in parent_files
    assert client.list_artifacts(parent.info.run_id, "config")[0].path == "config/train.yaml"
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "figures")] == [
        "figures/family_comparison.png"]
    (report,) = client.list_artifacts(parent.info.run_id, "report")
    assert (work / "reports" / Path(report.path).name).is_file()  # tracking.report_dir
    assert parent.data.tags["registered_version"] == "1"
    for child in children:
        m = child.data.metrics
        family = child.data.tags["family"]
        assert child.info.run_name.startswith(f"{family} cohort 20")
        (training_input,) = child.inputs.dataset_inputs
        assert json.loads(training_input.dataset.profile)["num_rows"] == m["n_labelled"]
        assert "responder" in training_input.dataset.schema
        for metric in ("roc_auc", "pr_auc", "brier", "sensitivity", "delta_auc_vs_clinical"):
            assert m[f"{metric}_ci_low"] <= m[metric] <= m[f"{metric}_ci_high"], metric
        if child.data.tags["family"] == "prevalence":
            continue  # a constant: nothing to explain or correct
        # Harrell: corrected = apparent - optimism, for the final model
        assert m["roc_auc_optimism_corrected"] == pytest.approx(
            m["roc_auc_apparent"] - m["roc_auc_optimism"])
        assert {"calibration_slope_optimism_corrected", "brier_optimism_corrected"} <= set(m)
        assert 1 / 3 <= m["permutation_p"] <= 1       # (1 + k) / (1 + 2 permutations)
        figures = {f.path for f in client.list_artifacts(child.info.run_id, "figures")}
        tables = {f.path for f in client.list_artifacts(child.info.run_id, "tables")}
        expected = {"roc", "pr", "calibration", "decision_curve", "confusion_matrix",
                    "shap_beeswarm", "shap_bar"}
        if family != "clinical_only":  # no CSF feature, no ratio to show
            expected.add("shap_dependence")
        assert figures == {f"figures/{name}.png" for name in expected}, figures
        assert {"tables/shap_values.csv", "tables/oof_predictions.csv",
                "tables/decision_curve.csv"} <= tables
        model = mlflow.models.get_model_info(f"runs:/{child.info.run_id}/model")
        inputs = {spec.name for spec in model.signature.inputs.inputs}
        assert {"tgf_beta1_baseline", "tgf_beta1_baseline_flag", "sex", "leadin_slope"} <= inputs
        assert "arm" not in inputs  # scoring cohorts need not say the arm
        # no patient's row leaves the machine in the input example (tracking.log_raw_rows)
        local = mlflow.artifacts.download_artifacts(f"runs:/{child.info.run_id}/model")
        example = mlflow.models.Model.load(local).load_input_example(local)
        assert list(example["subject_id"]) == ["example"]
        requirements = (Path(local) / "requirements.txt").read_text()
        assert "scikit-learn==" in requirements and "skops==" in requirements
        if child.data.tags["family"] in FAMILIES:
            assert ("xgboost-cpu==" in requirements) == (child.data.tags["family"] == "xgboost")


def test_logged_model_predicts_raw_wide_rows_in_a_fresh_process(trained):
    work, env, _, _ = trained
    script = textwrap.dedent("""
        import json
        import mlflow
        from mlflow import MlflowClient
        import pandas as pd

        mlflow.set_tracking_uri("sqlite:///store/mlflow.db")
        table = pd.read_parquet("interim/cohort.parquet")  # written by csf-responder validate
        rows = table[table["arm"] == "MSC"].drop(columns=["arm", "responder"]).head(7)
        client = MlflowClient()
        out = {}
        experiment = client.get_experiment_by_name("csf-responder")
        for run in client.search_runs([experiment.experiment_id],
                                      filter_string="tags.family != ''"):
            model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
            proba = model.predict(rows)
            out[run.data.tags["family"]] = [list(map(float, p)) for p in proba]
        print(json.dumps(out))
    """)
    env = {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    result = _run([sys.executable, "-c", script], work, env)
    predictions = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(predictions) == FAMILIES | REFERENCES
    for rows in predictions.values():
        assert len(rows) == 7
        for p_poor, p_good in rows:
            assert 0 <= p_good <= 1 and abs(p_poor + p_good - 1) < 1e-6


def test_same_data_config_and_seed_give_identical_metrics(trained, tmp_path):
    """Determinism: a second run of the same command logs exactly the same metrics and
    hyperparameters for every family and reference."""
    from mlflow import MlflowClient

    shared, env, _, train = trained
    work = copy_store(shared, tmp_path / "again")  # the second run: in a copy of the folder
    _run(train, work, env)
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("csf-responder")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.family != ''",
                              order_by=["attributes.start_time ASC"])
    first, second = runs[:len(runs) // 2], runs[len(runs) // 2:]
    assert len(first) == len(second) == len(FAMILIES | REFERENCES)
    for a, b in zip(sorted(first, key=lambda r: r.data.tags["family"]),
                    sorted(second, key=lambda r: r.data.tags["family"]), strict=True):
        assert a.data.tags["family"] == b.data.tags["family"]
        np.testing.assert_equal(a.data.metrics, b.data.metrics)  # NaN (undefined) == NaN
        assert a.data.params == b.data.params
