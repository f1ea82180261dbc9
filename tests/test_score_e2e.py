"""End to end: a model trained into a temporary MLflow store (a copy of the session's
shared one, tests/conftest.py: ``trained_store``), then a new cohort scored with
``make score`` and ``csf-responder score``: outputs, rejects, accounting, model URIs,
errors, interrupted writes and the scoring run in MLflow."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csf_responder import scoring
from tests.conftest import ROOT, copy_store, descendants

BIN = Path(sys.executable).parent
CLI = str(BIN / "csf-responder")
#: Patients planted in the scoring cohort, each with the one rule that rejects it.
PLANTED = {"BADAGE": "age_invalid", "DUP1": "subject_id_duplicate", "NOBASE": "no_baseline_visit",
           "FEWLEAD": "too_few_lead_in_visits", "FLAT": "no_lead_in_decline",
           "NOCSF": "no_csf", "NOVISIT": "no_visits"}


def _run(args, cwd, env, ok=True, timeout=600) -> subprocess.CompletedProcess:
    """Run a command from the checkout (configs/ are relative to it); data paths are
    absolute, under ``cwd``'s temporary directory."""
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _plant(cohort: Path) -> None:
    """Add the patients of :data:`PLANTED`, a line without subject_id and an exact copy
    of a kept patient's line to a simulated scoring cohort."""
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    visits = pd.read_csv(cohort / "alsfrs.csv", dtype=str, keep_default_na=False)
    csf = pd.read_csv(cohort / "csf.csv", dtype=str, keep_default_na=False)
    template = patients.iloc[0]
    rows = [template.to_dict()]  # the exact copy
    for name in PLANTED:
        rows.append({**template.to_dict(), "subject_id": name})
    rows[1]["age"] = "abc"
    rows.append({**template.to_dict(), "subject_id": "DUP1", "age": "70"})  # conflicting copy
    rows.append({**template.to_dict(), "subject_id": ""})
    patients = pd.concat([patients, pd.DataFrame(rows)], ignore_index=True)
    lead = {"BADAGE": [-84, -56, -28, 0], "DUP1": [-84, -56, -28, 0], "NOBASE": [-84, -56],
            "FEWLEAD": [0], "FLAT": [-84, -56, -28, 0], "NOCSF": [-84, -56, -28, 0]}
    new_visits = [{"subject_id": s, "day": str(d),
                   "alsfrs_r": str(40 if s == "FLAT" else 40 + (-d) // 28)}
                  for s, days in lead.items() for d in days]
    new_visits.append({"subject_id": "GHOST", "day": "0", "alsfrs_r": "40"})  # no patient
    visits = pd.concat([visits, pd.DataFrame(new_visits)], ignore_index=True)
    first = csf[csf["subject_id"] == template["subject_id"]]
    planted_csf = [first.assign(subject_id=s) for s in PLANTED if s != "NOCSF"]
    csf = pd.concat([csf, *planted_csf], ignore_index=True)
    for name, table in (("patients.csv", patients), ("alsfrs.csv", visits), ("csf.csv", csf)):
        table.to_csv(cohort / name, index=False)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, trained_store):
    """A model trained and registered in a temporary store (a copy of the session's: every
    family, version 1 its best), promoted to champion, a new cohort with planted rejects,
    and that cohort scored with ``make score``."""
    work = copy_store(trained_store.work, tmp_path_factory.mktemp("score"))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "COLUMNS": "200", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'store' / 'mlflow.db'}"}
    _run([CLI, "promote", "--version", "1", "--reason", "test fixture"], ROOT, env)
    _run([CLI, "simulate", "--scoring", "--n", "120", "--out", str(work / "new")], work, env)
    _plant(work / "new")
    out = work / "scores"
    result = _run(["make", "--no-print-directory", "score", f"COHORT={work / 'new'}",
                   f"OUT={out}", "PLOTS=2",
                   f"SET=--set tracking.artifact_root={work / 'store' / 'artifacts'}"],
                  ROOT, env)
    return work, env, out, result


def _scores(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


def test_every_patient_is_scored_or_rejected_once_with_the_reason(scored):
    work, _, out, result = scored
    scores, rejects = _scores(out), pd.read_csv(out / "rejects.csv", keep_default_na=False)
    patients = pd.read_csv(work / "new" / "patients.csv", dtype=str, keep_default_na=False)
    named = set(patients["subject_id"]) - {""}
    assert set(scores["subject_id"]) | set(rejects["subject_id"]) - {""} == named
    assert not set(scores["subject_id"]) & set(rejects["subject_id"])
    assert scores["subject_id"].is_unique
    by_subject = dict(zip(rejects["subject_id"], rejects["rule"], strict=True))
    for subject, rule in PLANTED.items():
        assert by_subject[subject] == rule, subject
    assert rejects.loc[rejects["subject_id"] == "", "rule"].tolist() == ["subject_id_missing"]
    simulated = {s for s in named if s.startswith("SC")}
    assert simulated - set(scores["subject_id"]) == set(rejects["subject_id"]) & simulated
    copies = pd.read_csv(out / "input_rejects.csv")
    assert "exact_duplicate" in set(copies["rule"])  # the copy line: not a patient
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["input_patients"] == len(named) + 1
    assert summary["counts"]["scored"] == len(scores)
    assert summary["counts"]["rejected"] == len(rejects)
    assert f"{len(scores)} scored" in result.stdout.replace(",", "")
    files = hashlib.sha256()  # the input's identity: its files' names and bytes
    for name in ("patients.csv", "alsfrs.csv", "csf.csv"):
        files.update(name.encode() + (work / "new" / name).read_bytes())
    assert summary["data_digest"] == files.hexdigest()[:16]


def test_scores_hold_every_column_in_parquet_and_csv(scored):
    _, _, out, _ = scored
    scores = _scores(out)
    assert list(scores.columns) == scoring.score_columns(3)
    from_csv = pd.read_csv(out / "scores.csv", keep_default_na=False,
                           na_values=[""], dtype={"subject_id": str})
    pd.testing.assert_frame_equal(
        from_csv[["subject_id", "probability", "predicted_responder"]],
        scores[["subject_id", "probability", "predicted_responder"]], check_dtype=False)
    assert scores["probability"].between(0, 1).all()
    assert (scores["probability_low"] <= scores["probability_high"]).all()
    assert scores["probability_low"].notna().all()
    assert set(scores["predicted_responder"]) <= {0, 1}
    assert scores["reason_1"].str.contains(r"(?:raises|lowers) the chance").all()
    assert scores["reason_1_feature"].ne("").all() and scores["reason_1_shap"].notna().all()
    assert (scores["reason_1_shap"].abs() >= scores["reason_2_shap"].abs()).all()
    assert scores["ood_range"].dtype == bool and scores["ood_multivariate"].dtype == bool
    assert (scores["ood_range"] == scores["ood_range_features"].ne("")).all()
    assert (scores["n_imputed"] >= 0).all()
    assert len(list((out / "explanations").glob("*.png"))) == 2
    assert (out / "drift.png").stat().st_size > 10_000


def test_the_scoring_run_is_in_mlflow_without_patient_rows(scored):
    import mlflow

    work, env, out, _ = scored
    uri = env["MLFLOW_TRACKING_URI"]  # a client of its own: the session's URI stays
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("csf-responder-scoring")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.tags["model_version"] == "1"
    assert run.data.tags["model_uri"] == "models:/csf-responder@champion"
    version = client.get_model_version("csf-responder", "1")
    assert run.data.tags["training_run_id"] == version.run_id
    training = client.get_run(version.run_id)
    assert training.data.tags["family"] == run.data.tags["model_family"]
    metrics = run.data.metrics
    assert metrics["n_scored"] == summary["counts"]["scored"]
    assert metrics["n_rejected_no_csf"] == 1
    assert {"score_mean", "score_p50", "psi_tgf_beta1_baseline", "ks_mcp1_week4",
            "ks_p_vegf_baseline"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "drift.png", "drift.csv", "accounting.csv"}
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="summary.json", tracking_uri=uri)).read_text())
    assert "SC0000001" not in json.dumps(logged)


_WATCHED = """
import atexit, sys
atexit.register(lambda: print("store here:", "mlflow.store.tracking.sqlalchemy_store"
                              in sys.modules, file=sys.stderr))
sys.argv = ["csf-responder", *sys.argv[1:]]
from pipelines.cli import main
main()
"""


def test_mlflow_finds_the_model_and_logs_the_run_from_a_process_of_its_own(scored,
                                                                          tmp_path):
    """MLflow's store (a CPU second of imports) is opened in a helper process, while
    this one reads the cohort and loads the model: the run is logged all the same."""
    import mlflow

    work, env, _, _ = scored
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("csf-responder-scoring")
    before = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    out = tmp_path / "watched"
    result = _run([sys.executable, "-c", _WATCHED, "score", "--cohort", str(work / "new"),
                   "--out", str(out)], work, env)
    assert "store here: False" in result.stderr
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.info.run_id not in before]
    assert len(runs) == 1 and runs[0].info.run_id in result.stdout.replace("\n", "")
    assert runs[0].data.tags["model_version"] == "1"
    summary = json.loads((out / "summary.json").read_text())
    assert runs[0].data.metrics["n_scored"] == summary["counts"]["scored"]


def test_every_kind_of_model_uri_gives_the_same_scores(scored, tmp_path, monkeypatch):
    import mlflow

    work, env, out, _ = scored
    uri = env["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/m-... resolves through it
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version("csf-responder", "1")
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source,
                                                dst_path=str(tmp_path / "local"),
                                                tracking_uri=uri)
    expected = _scores(out).set_index("subject_id")["probability"]
    for i, model in enumerate(["models:/csf-responder/1", f"runs:/{version.run_id}/model",
                               version.source, local]):
        target = tmp_path / f"out{i}"
        _run([CLI, "score", "--cohort", str(work / "new"), "--model", model, "--out",
              str(target), "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}"],
             work, env)
        found = _scores(target).set_index("subject_id")["probability"]
        pd.testing.assert_series_equal(found, expected)


def test_existing_output_needs_force(scored):
    work, env, out, _ = scored
    before = (out / "scores.parquet").stat().st_mtime_ns
    result = _run([CLI, "score", "--cohort", str(work / "new"), "--out", str(out)], work, env,
                  ok=False)
    assert result.returncode == 2 and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "scores.parquet").stat().st_mtime_ns == before


_LOSING = """
import sys
from csf_responder import scoring

def lose(subjects, scored, rejects):
    raise RuntimeError("neither scored nor rejected: ['planted']")

scoring.check_accounting = lose
sys.argv = ["csf-responder", *sys.argv[1:]]
from pipelines.cli import main
main()
"""


def test_a_failed_accounting_check_leaves_no_output(scored, tmp_path):
    """The check runs alongside the writing of the other outputs; its failure must
    still stop the output from appearing."""
    work, env, _, _ = scored
    out = tmp_path / "lost"
    result = _run([sys.executable, "-c", _LOSING, "score", "--cohort", str(work / "new"),
                   "--out", str(out)], work, env, ok=False)
    assert result.returncode != 0 and "neither scored nor rejected" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _copy_cohort(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_damaged_model_file_is_a_clear_error_and_leaves_no_output(scored, tmp_path,
                                                                    monkeypatch):
    """A file of the model that cannot be read (here the Pipeline's) stops the run
    with one line naming the model: no traceback, no output."""
    import mlflow

    work, env, _, _ = scored
    uri = env["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version("csf-responder", "1")
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, dst_path=str(tmp_path / "local"), tracking_uri=uri))
    (local / "model.skops").write_bytes(b"not a model")
    out = tmp_path / "o"
    result = _run([CLI, "score", "--cohort", str(work / "new"), "--model", str(local),
                   "--out", str(out), "--set", "chunk_size=30"], work, env, ok=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"model {local}: cannot be loaded" in result.stderr.replace("\n", "")
    assert not out.exists()


def test_the_pipeline_loads_as_mlflows_own_loader_loads_it(scored, monkeypatch):
    import mlflow.sklearn

    from csf_responder import tracking

    _, env, _, _ = scored
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    found = tracking.find_scoring_model("models:/csf-responder@champion")
    loaded = tracking.load_scoring_model(found)
    theirs = mlflow.sklearn.load_model(str(found.path))
    assert found.flavor["serialization_format"] == "skops"  # our path, not MLflow's
    meta = mlflow.models.Model.load(str(found.path / "MLmodel"))
    example = meta.load_input_example(str(found.path))  # rows logged with the model
    assert len(example) and np.array_equal(loaded.model.predict_proba(example),
                                           theirs.predict_proba(example))
    assert [type(s) for s in loaded.model] == [type(s) for s in theirs]

    def settings(pipeline):  # every step's parameters, nested estimators by their own
        return repr({k: v for k, v in pipeline.get_params().items()
                     if not hasattr(v, "get_params")})

    assert settings(loaded.model) == settings(theirs)
    assert (loaded.run_id, loaded.model_id) == (meta.run_id, meta.model_id)


def test_mlflows_setting_against_deserializing_models_stops_the_run(scored, tmp_path):
    """The command loads the Pipeline with skops itself (MLflow works in another
    process), and still honours MLflow's switch: false loads no model file."""
    work, env, _, _ = scored
    out = tmp_path / "refused"
    result = _run([CLI, "score", "--cohort", str(work / "new"), "--out", str(out)], work,
                  {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}, ok=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false" in result.stderr.replace("\n", "")
    assert not out.exists()


def test_a_missing_analyte_is_a_clear_error_and_an_extra_one_a_note(scored, tmp_path):
    work, env, _, _ = scored
    cohort = _copy_cohort(work / "new", tmp_path / "no-mcp1")
    csf = pd.read_csv(cohort / "csf.csv", dtype=str, keep_default_na=False)
    csf.drop(columns=["MCP-1 (pg/mL)"]).to_csv(cohort / "csf.csv", index=False)
    result = _run([CLI, "score", "--cohort", str(cohort), "--out", str(tmp_path / "o1")],
                  work, env, ok=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MCP-1 (no value at any timepoint)" in result.stderr
    assert not (tmp_path / "o1").exists()
    csf.assign(**{"IL-6 (pg/mL)": "2.5", "Mystery-9 (pg/mL)": "1"}).to_csv(
        cohort / "csf.csv", index=False)
    result = _run([CLI, "score", "--cohort", str(cohort), "--out", str(tmp_path / "o2"), "--set",
                   f"tracking.artifact_root={work / 'store' / 'artifacts'}"], work, env)
    assert "IL-6 not used by the model: ignored" in result.stderr.replace("\n", " ")
    assert "Mystery-9" in result.stderr


def test_a_unit_that_cannot_be_converted_is_a_clear_error(scored, tmp_path):
    work, env, _, _ = scored
    cohort = _copy_cohort(work / "new", tmp_path / "bad-unit")
    csf = pd.read_csv(cohort / "csf.csv", dtype=str, keep_default_na=False)
    csf.rename(columns={"VEGF (pg/mL)": "VEGF (mmol/furlong)"}).to_csv(cohort / "csf.csv",
                                                                      index=False)
    result = _run([CLI, "score", "--cohort", str(cohort), "--out", str(tmp_path / "o")], work,
                  env, ok=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "csf.csv" in result.stderr and "mmol/furlong" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def big(scored, tmp_path_factory) -> Path:
    """A scoring cohort of 20 000 patients, read (never written) by the tests below."""
    work, env, _, _ = scored
    big = tmp_path_factory.mktemp("big") / "big"
    _run([CLI, "simulate", "--scoring", "--n", "20000", "--out", str(big)], work, env)
    return big


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_partial_output(scored, big, tmp_path, how):
    work, env, _, _ = scored
    out = tmp_path / "out"
    process = subprocess.Popen(
        [CLI, "score", "--cohort", str(big), "--out", str(out), "--set", "chunk_size=200",
         "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until scores are being written
        staged = list(tmp_path.glob(".out.partial-*/scores.parquet"))
        if staged and staged[0].stat().st_size > 0:
            break
        assert process.poll() is None, "scoring ended before it could be interrupted"
        time.sleep(0.02)
    process.send_signal(how)
    process.wait(timeout=60)
    assert not out.exists()
    leftovers = list(tmp_path.glob(".out.partial-*"))
    if how == signal.SIGTERM:
        assert process.returncode != 0 and leftovers == []
    result = _run([CLI, "score", "--cohort", str(big), "--out", str(out), "--set",
                   f"tracking.artifact_root={work / 'store' / 'artifacts'}"], work, env)
    assert list(tmp_path.glob(".out.partial-*")) == []  # a killed run's staging is cleared
    assert len(_scores(out)) + len(pd.read_csv(out / "rejects.csv")) == 20000
    assert "20,000 in" in result.stdout


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # ended meanwhile
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_worker_killed_mid_run_is_one_clear_error_and_leaves_no_output(scored, big,
                                                                       tmp_path):
    """What the out-of-memory killer does to a worker (SIGKILL) ends the run at once,
    with one line naming it, and nothing written."""
    work, env, _, _ = scored
    out = tmp_path / "out"
    process = subprocess.Popen(
        [CLI, "score", "--cohort", str(big), "--out", str(out), "--set", "chunk_size=200",
         "--set", "n_jobs=2", "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until the workers are scoring
        staged = list(tmp_path.glob(".out.partial-*/scores.parquet"))
        workers = [pid for pid in descendants(process.pid)  # not MLflow's process
                   if _name(pid) == "csf-score"]
        if staged and staged[0].stat().st_size > 0 and workers:
            break
        assert process.poll() is None, "scoring ended before a worker could be killed"
        time.sleep(0.02)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert f"worker process {workers[0]}" in stderr and "killed by SIGKILL" in stderr
    assert not out.exists() and list(tmp_path.glob(".out.partial-*")) == []


def test_scores_are_reproducible(scored, tmp_path):
    work, env, out, _ = scored
    again = tmp_path / "again"
    _run([CLI, "score", "--cohort", str(work / "new"), "--out", str(again), "--set",
          f"tracking.artifact_root={work / 'store' / 'artifacts'}"], work, env)
    pd.testing.assert_frame_equal(_scores(again), _scores(out))
    assert np.isfinite(_scores(out)["ood_distance"]).all()


def test_chunks_and_file_order_change_nothing(scored, tmp_path):
    work, env, out, _ = scored
    cohort = _copy_cohort(work / "new", tmp_path / "shuffled")
    for name in ("alsfrs.csv", "csf.csv"):  # rows in another order than patients.csv
        table = pd.read_csv(cohort / name, dtype=str, keep_default_na=False)
        table.sample(frac=1, random_state=3).to_csv(cohort / name, index=False)
    chunked = tmp_path / "chunked"
    result = _run([CLI, "score", "--cohort", str(cohort), "--out", str(chunked), "--set",
                   "chunk_size=7", "--set",
                   f"tracking.artifact_root={work / 'store' / 'artifacts'}"], work, env)
    summary = json.loads((chunked / "summary.json").read_text())
    assert summary["counts"]["chunks"] > 10
    key = ["subject_id"]
    pd.testing.assert_frame_equal(_scores(chunked).sort_values(key).reset_index(drop=True),
                                  _scores(out).sort_values(key).reset_index(drop=True))
    for name in ("rejects.csv", "accounting.csv"):
        found = pd.read_csv(chunked / name, keep_default_na=False)
        expected = pd.read_csv(out / name, keep_default_na=False)
        if name == "accounting.csv":
            found["file"] = found["file"].str.replace(str(cohort), str(work / "new"))
        columns = list(expected.columns)
        pd.testing.assert_frame_equal(found.sort_values(columns).reset_index(drop=True),
                                      expected.sort_values(columns).reset_index(drop=True))
    # chunks are scored in parallel processes (n_jobs: -1); one process, the same files
    serial = tmp_path / "serial"
    _run([CLI, "score", "--cohort", str(cohort), "--out", str(serial), "--set",
          "chunk_size=7", "--set", "n_jobs=1", "--set",
          f"tracking.artifact_root={work / 'store' / 'artifacts'}"], work, env)
    for name in ("scores.csv", "rejects.csv", "input_rejects.csv", "accounting.csv",
                 "drift.csv"):
        assert (serial / name).read_bytes() == (chunked / name).read_bytes(), name
    ghost = pd.read_csv(chunked / "input_rejects.csv", keep_default_na=False)
    assert ghost.loc[ghost["subject_id"] == "GHOST", "rule"].tolist() == ["subject_unknown"]
    assert "Traceback" not in result.stderr
