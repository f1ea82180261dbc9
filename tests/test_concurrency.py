"""Four ``csf-responder train`` processes started at once on one fresh local SQLite store:
all finish, each with its whole run, model and registry version; the store stays
readable and the registry gate takes turns."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, cli_env

BIN = Path(sys.executable).parent
N_PROCESSES = 4
#: tests/test_server.py's fast training (one family, the gate without bounds).
FAST = ["validation.n_jobs=1", "validation.n_repeats=1", "validation.n_splits=3",
        "validation.inner_splits=2", "validation.n_bootstrap=100", "validation.n_optimism=5",
        "validation.n_interval_models=2", "models={logistic_l2: models/logistic_l2.yaml}",
        "registry.thresholds={}"]
FAMILIES = {"logistic_l2", "prevalence", "clinical_only"}


@pytest.fixture(scope="module")
def raced(tmp_path_factory, simulate):
    work = tmp_path_factory.mktemp("concurrency")
    env = cli_env()
    cli = str(BIN / "csf-responder")
    simulate(work, "--out", "cohort", "--truth", "truth/cohort.csv", "--n-msc", "32",
             "--n-control", "8", "--config", str(CONFIGS / "simulate.yaml"))
    uri = f"sqlite:///{work / 'store' / 'mlflow.db'}"
    sets = [arg for item in FAST for arg in ("--set", item)]
    processes = []
    for i in range(N_PROCESSES):
        log = (work / f"train{i}.log").open("w")
        processes.append((subprocess.Popen(
            [cli, "train", "--cohort", "cohort", "--config", str(CONFIGS / "train.yaml"),
             "--set", f"tracking.uri={uri}",
             "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}",
             "--set", f"tracking.report_dir={work / 'reports' / str(i)}", *sets],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    try:
        for process, log in processes:
            codes.append(process.wait(timeout=900))
            log.close()
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = [(work / f"train{i}.log").read_text() for i in range(N_PROCESSES)]
    return work, uri, codes, logs


def test_every_process_finishes(raced):
    _, _, codes, logs = raced
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log[-4000:]
        assert "database is locked" not in log
        assert "Traceback" not in log


def test_each_run_is_complete_with_its_model_and_version(raced):
    from mlflow import MlflowClient

    _, uri, _, _ = raced
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("csf-responder")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == N_PROCESSES
    assert len(runs) == N_PROCESSES * (1 + len(FAMILIES))
    registered = set()
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert "seconds_total" in parent.data.metrics  # its last job ran
        children = [r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {c.data.tags["family"] for c in children} == FAMILIES
        for child in children:
            assert child.info.status == "FINISHED"
            assert "roc_auc" in child.data.metrics
            models = client.search_logged_models(
                experiment_ids=[experiment.experiment_id],
                filter_string=f"source_run_id = '{child.info.run_id}'")
            assert len(models) == 1
        version = parent.data.tags["registered_version"]
        found = client.get_model_version("csf-responder", version)
        best = next(c for c in children if c.data.tags["family"] == "logistic_l2")
        assert found.run_id == best.info.run_id
        assert client.list_artifacts(best.info.run_id, "figures")
        registered.add(int(version))
    assert registered == set(range(1, N_PROCESSES + 1))  # one version each, none lost


def test_the_gate_took_turns(raced):
    """Each version was gated against the champion of its time: the one the version
    before it left (every candidate ties here, and a tie passes)."""
    from mlflow import MlflowClient

    _, uri, _, _ = raced
    client = MlflowClient(tracking_uri=uri)
    champion = None
    for number in range(1, N_PROCESSES + 1):
        tags = client.get_model_version("csf-responder", str(number)).tags
        assert tags["gate_champion_version"] == (str(champion) if champion else "none")
        if tags["gate"] == "passed":
            champion = number
    aliases = client.get_registered_model("csf-responder").aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {
        "champion": str(champion)}


def test_the_store_is_sound_and_in_wal_mode(raced):
    work, _, _, _ = raced
    database = work / "store" / "mlflow.db"
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM experiments WHERE name = 'csf-responder'"
                          ).fetchone()[0] == 1
    assert (work / "store" / "mlflow.db.lock").exists()
