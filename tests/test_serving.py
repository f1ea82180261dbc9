"""What a logged model and the store give to the outside, over loopback HTTP only:
``mlflow models serve`` scores raw wide rows, ``mlflow ui`` shows the run's metrics and
artifacts, and the registry gate works against an HTTP tracking server.

The store is a copy, for the module, of the session's trained one (tests/conftest.py:
``trained_store``, simulate -> validate -> train into a temporary SQLite store); its
logistic_l2 model is the one served.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from csf_responder.config import Bound, RegistrySpec
from tests.conftest import copy_store

BIN = Path(sys.executable).parent
FAMILY = "logistic_l2"
K = 7  # rows scored


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, payload: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read().decode()[:2000]}") from None


@contextmanager
def _server(args: list[str], *, port: int, ready: str, cwd: Path, env: dict[str, str],
            timeout: float = 60) -> Iterator[str]:
    """Start a server in a process group of its own, wait until ``ready`` answers 200,
    yield its base URL; always end the whole group (its workers too)."""
    base = f"http://127.0.0.1:{port}"
    log = cwd / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{args[:3]} exited ({proc.returncode}):\n"
                                     f"{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + ready, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:  # refused, reset or timed out: not up yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{args[:3]} not ready after {timeout} s:\n"
                                     f"{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_store):
    work = copy_store(trained_store.work, tmp_path_factory.mktemp("serving"))
    store = work / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner for `mlflow ui`
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # serve execs uvicorn
           "COLUMNS": "200"}
    env.pop("MLFLOW_EXPERIMENT_ID", None)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("csf-responder")
    (child,) = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.family = '{FAMILY}'")
    return {"work": work, "env": env, "uri": uri, "experiment": experiment, "child": child,
            "parent_id": child.data.tags["mlflow.parentRunId"]}


def _raw_rows(work: Path, k: int):
    """The first ``k`` MSC rows of the validated cohort, as scoring gets them: no arm, no
    label."""
    import pandas as pd

    table = pd.read_parquet(work / "interim" / "cohort.parquet")
    return table[table["arm"] == "MSC"].drop(columns=["arm", "responder"]).head(k)


def test_models_serve_scores_raw_wide_rows(trained, monkeypatch):
    child = trained["child"]
    model_uri = f"runs:/{child.info.run_id}/model"
    rows = _raw_rows(trained["work"], K)
    assert rows.isna().any().any()  # missing values travel as JSON null
    # to_json writes NaN/NA as null and numpy scalars as numbers; the index is not input
    split = json.loads(rows.to_json(orient="split"))
    split.pop("index")
    port = _free_port()
    serve = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)]
    with _server(serve, port=port, ready="/ping", cwd=trained["work"], env=trained["env"]) as url:
        served = _post(f"{url}/invocations", {"dataframe_split": split})["predictions"]
    assert len(served) == K
    for probabilities in served:
        assert len(probabilities) == 2
        assert all(0 <= p <= 1 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1)

    # the same numbers as the model loaded in this process from the same rows
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    local = mlflow.pyfunc.load_model(model_uri).predict(rows)
    np.testing.assert_allclose(served, np.asarray(local), rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def ui(trained):
    port = _free_port()
    command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", trained["uri"],
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with _server(command, port=port, ready="/health", cwd=trained["work"],
                 env=trained["env"]) as url:
        yield url


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)


def test_ui_serves_the_runs_metrics_and_artifacts(trained, ui):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=trained["uri"])
    child = trained["child"]
    api = f"{ui}/api/2.0/mlflow"
    found = _post(f"{api}/runs/search", {
        "experiment_ids": [trained["experiment"].experiment_id],
        "filter": f"tags.family = '{FAMILY}'"})["runs"]
    assert [run["info"]["run_id"] for run in found] == [child.info.run_id]
    got = _get(f"{api}/runs/get?run_id={child.info.run_id}")["run"]
    metrics = {m["key"]: float(m["value"]) for m in got["data"]["metrics"]}
    assert set(metrics) == set(child.data.metrics)
    assert all(_same(metrics[key], value) for key, value in child.data.metrics.items())
    assert metrics["roc_auc"] == child.data.metrics["roc_auc"]
    tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
    assert tags["family"] == FAMILY and tags["role"] == "model"

    listed = _get(f"{api}/artifacts/list?run_id={child.info.run_id}&path=tables")["files"]
    paths = {f["path"] for f in listed}
    assert "tables/oof_predictions.csv" in paths
    assert paths == {f.path for f in client.list_artifacts(child.info.run_id, "tables")}
    parent = _get(f"{api}/artifacts/list?run_id={trained['parent_id']}&path=config")["files"]
    assert [f["path"] for f in parent] == ["config/train.yaml"]


def test_registry_gate_over_an_http_tracking_server(trained, ui, monkeypatch):
    """register_best and promote use only MlflowClient calls: the same code works against
    ``mlflow ui``/``mlflow server``, and scoring loads ``models:/<name>@champion``."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    from csf_responder.registry import promote, register_best

    monkeypatch.setenv("MLFLOW_TRACKING_URI", ui)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    child = trained["child"]
    metrics = dict(child.data.metrics)
    strict = RegistrySpec(model_name="csf-responder-http", alias="champion",
                          primary_metric="roc_auc",
                          thresholds={"roc_auc_ci_low": Bound(above=0.99)})
    outcome = register_best(run_id=child.info.run_id,
                            model_uri=f"runs:/{child.info.run_id}/model",
                            metrics=metrics, spec=strict, tags={"family": FAMILY})
    assert (outcome.version, outcome.promoted, outcome.previous_champion) == (1, False, None)
    assert outcome.reasons[0].startswith("roc_auc_ci_low ") and "not above 0.99" in \
        outcome.reasons[0]
    api = f"{ui}/api/2.0/mlflow"
    version = _get(f"{api}/model-versions/get?name=csf-responder-http&version=1")
    assert version["model_version"]["run_id"] == child.info.run_id
    model = _get(f"{api}/registered-models/get?name=csf-responder-http")["registered_model"]
    assert "aliases" not in model or model["aliases"] == []

    promote(version=1, reason="exploratory cohort: bound waived", spec=strict)
    alias = _get(f"{api}/registered-models/alias?name=csf-responder-http&alias=champion")
    version = alias["model_version"]
    assert version["version"] == "1"
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["promoted_by_hand_reason"] == "exploratory cohort: bound waived"
    assert tags["gate"] == "failed" and tags["family"] == FAMILY

    rows = _raw_rows(trained["work"], 3)
    champion = mlflow.pyfunc.load_model("models:/csf-responder-http@champion")
    assert champion.metadata.run_id == child.info.run_id
    assert champion.predict(rows).shape == (3, 2)
