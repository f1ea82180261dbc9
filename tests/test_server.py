"""Against a real MLflow tracking server (``make server``): train, score and effect run
unchanged with ``MLFLOW_TRACKING_URI=http://...``; their runs, models, artifacts and the
registry alias are on the server, the artifacts written through its proxy, and nothing
lands in a local store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, run_cli

BIN = Path(sys.executable).parent
#: A fast training: one family, one repeat of 3-fold CV, and no bounds in the gate so
#: that the first version becomes the champion (scoring loads it by its alias).
TRAIN_FAST = ["validation.n_jobs=1", "validation.n_repeats=1", "validation.n_splits=3",
              "validation.inner_splits=2", "validation.n_bootstrap=100",
              "validation.n_optimism=5", "validation.n_interval_models=2",
              "models={logistic_l2: models/logistic_l2.yaml}", "registry.thresholds={}"]
#: tests/test_effect_e2e.py's fast phase 2 effect run.
EFFECT_FAST = ["effect.n_bootstrap=3", "effect.n_qini_bootstrap=100",
               "enrichment.n_trials=400", "enrichment.n_bootstrap=200",
               "learning_curve.sizes=[]", "learners={logistic_l2: models/logistic_l2.yaml}",
               "learning_curve.model=logistic_l2"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _stop(process: subprocess.Popen) -> None:
    """End the server's process group (make, mlflow server, uvicorn and its workers):
    SIGTERM, then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``make server`` on a free loopback port, its store and artifacts in a temporary
    folder; yields (URL, server folder)."""
    home = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PORT", None)
    log = (home / "server.log").open("w")
    # -o: never reinstall .venv from here (the stamp may be older than pyproject.toml)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "server",
         "HOST=127.0.0.1", f"PORT={port}", "SERVER_WORKERS=1",
         f"SERVER_STORE=sqlite:///{home / 'store' / 'mlflow.db'}",
         f"SERVER_ARTIFACTS={home / 'artifacts'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not come up:\n"
                                     + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, home
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="module")
def used(server, simulate):
    """Simulate, train, score and run effect from a client folder with only
    ``MLFLOW_TRACKING_URI`` pointing at the server (the configs' tracking.uri is the
    local sqlite:///mlruns/mlflow.db, which must stay untouched)."""
    url, home = server
    client_dir = home.parent / f"{home.name}-client"
    client_dir.mkdir()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "COLUMNS": "200", "MLFLOW_TRACKING_URI": url}
    config = str(CONFIGS / "simulate.yaml")
    simulate(client_dir, "--out", "phase2", "--truth", "truth/phase2.csv", "--config", config)
    simulate(client_dir, "--scoring", "--n", "50", "--out", "new", "--config", config)
    results = {
        "train": run_cli(["train", "--cohort", "phase2", "--config", str(CONFIGS / "train.yaml"),
                       *_sets(TRAIN_FAST)], client_dir, env),
        "score": run_cli(["score", "--cohort", "new", "--out", "scores",
                       "--config", str(CONFIGS / "score.yaml")], client_dir, env),
        "effect": run_cli(["effect", "--cohort", "phase2", "--config",
                        str(CONFIGS / "effect.yaml"), *_sets(EFFECT_FAST)], client_dir, env),
    }
    return url, home, client_dir, results


def _runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return client.search_runs([found.experiment_id])


def test_train_score_effect_log_everything_to_the_server(used):
    from mlflow import MlflowClient

    url, _, _, results = used
    assert f"({url})" in " ".join(results["train"].stdout.split())
    client = MlflowClient(tracking_uri=url)
    for name in ("csf-responder", "csf-responder-scoring", "csf-responder-effect"):
        location = client.get_experiment_by_name(name).artifact_location
        assert location.startswith("mlflow-artifacts:/"), location  # the server's proxy

    runs = _runs(client, "csf-responder")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["family"] for c in children} == {"logistic_l2", "prevalence",
                                                         "clinical_only"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.tags["champion_moved"] == "true"

    # an artifact, read back over HTTP: the config the run resolved
    config = client.download_artifacts(parent.info.run_id, "config/train.yaml")
    assert "logistic_l2" in Path(config).read_text()
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/labels.csv" in tables

    # the champion, through the registry's REST API
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/registered-models/alias"
                                "?name=csf-responder&alias=champion", timeout=10) as answer:
        champion = json.load(answer)["model_version"]
    best = next(c for c in children if c.data.tags["family"] == parent.data.tags["best_family"])
    assert champion["run_id"] == best.info.run_id
    assert champion["version"] == parent.data.tags["registered_version"] == "1"
    model = client.get_logged_model(champion["source"].removeprefix("models:/"))
    assert model.artifact_location.startswith("mlflow-artifacts:/")

    scoring = _runs(client, "csf-responder-scoring")
    assert len(scoring) == 1 and scoring[0].info.status == "FINISHED"
    assert scoring[0].data.tags["model_version"] == "1"
    assert scoring[0].data.tags["training_run_id"] == best.info.run_id
    assert client.list_artifacts(scoring[0].info.run_id)

    effect = _runs(client, "csf-responder-effect")
    effect_parent = next(r for r in effect if "mlflow.parentRunId" not in r.data.tags)
    assert effect_parent.info.status == "FINISHED"
    assert any(r.data.tags.get("mlflow.parentRunId") == effect_parent.info.run_id
               for r in effect)
    assert client.list_artifacts(effect_parent.info.run_id)


def test_artifacts_go_through_the_server_and_nothing_lands_locally(used):
    _, home, client_dir, _ = used
    stored = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "train.yaml" for p in stored)
    assert any(p.name == "MLmodel" for p in stored)  # the logged model's files
    # the client folder holds its inputs and outputs, and no MLflow store of any kind
    assert not (client_dir / "mlruns").exists()
    assert not (client_dir / "mlartifacts").exists()
    assert not list(client_dir.rglob("*.db"))
    assert not list(client_dir.rglob("MLmodel"))
    assert (client_dir / "scores" / "scores.csv").is_file()
