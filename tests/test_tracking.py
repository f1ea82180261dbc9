"""Tracking helpers, the background run that logs while training computes (on a
temporary SQLite store), the store's lock, and training runs interrupted by SIGTERM and
SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from csf_responder.tracking import (
    BackgroundRun,
    config_digest,
    flatten,
    resolve_uri,
    run,
    sqlite_path,
    store_lock,
)
from tests.conftest import CONFIGS, alive, cli_env, descendants


def test_config_digest_ignores_key_order_and_sees_every_value():
    config = {"seed": 42, "validation": {"n_splits": 5, "ci_level": 0.95},
              "features": {"analytes": ["TGF-beta1", "MCP-1"]}}
    reordered = {"features": {"analytes": ["TGF-beta1", "MCP-1"]},
                 "validation": {"ci_level": 0.95, "n_splits": 5}, "seed": 42}
    assert config_digest(config) == config_digest(reordered)
    assert len(config_digest(config)) == 16
    changed = {**config, "validation": {"n_splits": 10, "ci_level": 0.95}}
    swapped = {**config, "features": {"analytes": ["MCP-1", "TGF-beta1"]}}  # order of a list
    assert len({config_digest(c) for c in (config, changed, swapped)}) == 3


def test_config_digest_leaves_out_where_the_work_runs_and_is_logged():
    """A run on a dask cluster, with other n_jobs or another store, did the same
    analysis: same digest. The seed or a model's setting is the analysis: another one."""
    config = _train_config_dict()
    elsewhere = {**config, "execution": {"backend": "dask", "address": "tcp://10.0.0.1:8786"},
                 "tracking": {**config["tracking"], "uri": "http://tracking:5000"},
                 "validation": {**config["validation"], "n_jobs": 7}}
    assert config_digest(elsewhere) == config_digest(config)
    assert config_digest({**config, "seed": config["seed"] + 1}) != config_digest(config)
    retuned = {**config, "validation": {**config["validation"],
                                        "n_splits": config["validation"]["n_splits"] + 1}}
    assert config_digest(retuned) != config_digest(config)


def _train_config_dict() -> dict:
    from csf_responder.config import TrainConfig, load_config

    return load_config(CONFIGS / "train.yaml", TrainConfig)[1]


def test_flatten_gives_one_param_per_leaf():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]",
                                                              "d": "x"}


# ------------------------------------------------------------- background run
# Jobs cross to the logging worker by pickle: module-level functions.
def _tag(key: str, value: str) -> tuple[str, int]:
    import mlflow

    mlflow.set_tag(key, value)
    return key, os.getpid()


def _child(name: str) -> str:
    with run(name) as run_id:
        return run_id


def _slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _fail() -> None:
    raise ValueError("the store is full")


def _open(tmp_path) -> BackgroundRun:
    return BackgroundRun("train test", uri=resolve_uri("unused"),
                         artifact_root=str(tmp_path / "artifacts"), experiment="background")


def _runs():
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("background")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_background_run_logs_in_order_in_another_process_and_nests_children(tmp_path):
    with _open(tmp_path) as background:
        first = background.submit(_tag, "step", "one")
        child = background.submit(_child, "xgboost phase2")
        assert background.call(_tag, "step", "two")[0] == "step"
        assert [job.done() for job in (first, child)] == [True, True]  # in order
        parent_id = background.run_id
        child_id = child.result()
    assert first.result()[1] != os.getpid()  # the work ran in the logging worker
    runs = _runs()
    parent, nested = runs["train test"], runs["xgboost phase2"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert parent.data.tags["step"] == "two"  # the later job wrote last
    assert nested.info.run_id == child_id
    assert nested.data.tags["mlflow.parentRunId"] == parent_id
    assert nested.info.status == "FINISHED"


def test_an_error_in_the_block_ends_the_run_failed_and_drops_queued_jobs(tmp_path):
    with pytest.raises(RuntimeError, match="validation broke"), _open(tmp_path) as background:
        background.submit(_slow, 0.5)
        background.submit(_tag, "late", "yes")  # queued behind the slow job: dropped
        raise RuntimeError("validation broke")
    parent = _runs()["train test"]
    assert parent.info.status == "FAILED"
    assert "late" not in parent.data.tags


def test_ctrl_c_ends_the_run_killed(tmp_path):
    with pytest.raises(KeyboardInterrupt), _open(tmp_path) as background:
        background.call(_tag, "started", "yes")
        raise KeyboardInterrupt
    parent = _runs()["train test"]
    assert parent.info.status == "KILLED" and parent.data.tags["started"] == "yes"


def test_a_failed_job_raises_in_the_caller_on_wait(tmp_path):
    with pytest.raises(ValueError, match="the store is full"), \
            _open(tmp_path) as background:
        background.submit(_fail)
        background.wait()
    assert _runs()["train test"].info.status == "FAILED"


def test_waiting_for_the_worker_is_counted(tmp_path):
    with _open(tmp_path) as background:
        assert background.call(_slow, 0.3) == 0.3
        waited = background.waited_seconds
    assert waited >= 0.3


def test_sigterm_ends_the_run_killed(tmp_path):
    """What ``kill <pid>`` does to a process inside a background run."""
    with pytest.raises(SystemExit) as stopped, _open(tmp_path) as background:
        background.call(_tag, "started", "yes")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal interrupts this
    assert stopped.value.code == 143
    assert _runs()["train test"].info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is undone


# ------------------------------------------------------------------- store lock
def test_sqlite_path_of_relative_and_absolute_uris():
    assert sqlite_path("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert sqlite_path("sqlite:////tmp/x/mlflow.db?timeout=5") == Path("/tmp/x/mlflow.db")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("http://127.0.0.1:5001") is None
    assert sqlite_path("postgresql://u@host/mlflow") is None


def test_the_store_lock_lets_one_holder_in_at_a_time(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    held, order = threading.Event(), []

    def first():
        with store_lock(uri):
            held.set()
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with store_lock(uri):
        order.append("second in")
    thread.join()
    assert order == ["first out", "second in"]
    assert (tmp_path / "store" / "mlflow.db.lock").exists()
    with store_lock("http://127.0.0.1:1"):  # a server: nothing to lock
        pass


# ---------------------------------------------------------------- interrupted runs
BIN = Path(sys.executable).parent
#: A fast training (tests/test_server.py): one family, the gate without bounds.
FAST = ["validation.n_jobs=1", "validation.n_repeats=1", "validation.n_splits=3",
        "validation.inner_splits=2", "validation.n_bootstrap=100", "validation.n_optimism=5",
        "validation.n_interval_models=2", "models={logistic_l2: models/logistic_l2.yaml}",
        "registry.thresholds={}"]


def _state(client) -> dict:
    """Runs by status, versions and the alias of the store."""
    experiment = client.get_experiment_by_name("csf-responder")
    runs = client.search_runs([experiment.experiment_id])
    versions = sorted(int(v.version) for v in
                      client.search_model_versions("name = 'csf-responder'"))
    aliases = client.get_registered_model("csf-responder").aliases
    return {"runs": {r.info.run_id: r for r in runs}, "versions": versions,
            "champion": str(aliases.get("champion"))}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, simulate):
    """Train once (version 1, the champion); start a training and SIGTERM it, another and
    SIGKILL it, each as soon as its parent run is in the store; then train again.
    Returns what the store held after each step."""
    from mlflow import MlflowClient

    work = tmp_path_factory.mktemp("interrupted")
    env = cli_env()
    cli = str(BIN / "csf-responder")
    simulate(work, "--out", "cohort", "--truth", "truth/cohort.csv", "--n-msc", "32",
             "--n-control", "8", "--config", str(CONFIGS / "simulate.yaml"))
    uri = f"sqlite:///{work / 'store' / 'mlflow.db'}"
    train = [cli, "train", "--cohort", "cohort", "--config", str(CONFIGS / "train.yaml"),
             "--set", f"tracking.uri={uri}",
             "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}",
             *[arg for item in FAST for arg in ("--set", item)]]

    def complete(name: str) -> subprocess.CompletedProcess:
        done = subprocess.run(train, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def interrupt(name: str, sig: int, client, before: dict) -> dict:
        log = (work / f"{name}.log").open("w")
        process = subprocess.Popen(train, cwd=work, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        family = []
        try:
            deadline = time.monotonic() + 300
            while True:  # until its parent run is in the store
                new = [r for r in _state(client)["runs"].values()
                       if r.info.run_id not in before["runs"]
                       and "mlflow.parentRunId" not in r.data.tags]
                if new or process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert new and process.poll() is None, (work / f"{name}.log").read_text()
            family = descendants(process.pid)
            process.send_signal(sig)
            code = process.wait(timeout=120)
            deadline = time.monotonic() + 120  # an orphaned worker cleans up, then exits
            while any(alive(pid) for pid in family) and time.monotonic() < deadline:
                time.sleep(0.3)
            lingering = [pid for pid in family if alive(pid)]
        finally:
            log.close()
            if process.poll() is None:
                process.kill()
                process.wait()
            for pid in family:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        return {"code": code, "parent": new[0].info.run_id, "lingering": lingering,
                "log": (work / f"{name}.log").read_text()}

    complete("first")
    client = MlflowClient(tracking_uri=uri)
    states = {"first": _state(client)}
    steps = {}
    for name, sig in (("sigterm", signal.SIGTERM), ("sigkill", signal.SIGKILL)):
        steps[name] = interrupt(name, sig, client, states[list(states)[-1]])
        states[name] = _state(client)
    steps["next"] = complete("next")
    states["next"] = _state(client)
    return work, states, steps


def test_a_sigterm_run_ends_killed_and_leaves_the_registry_alone(interrupted):
    _, states, steps = interrupted
    step, before, after = steps["sigterm"], states["first"], states["sigterm"]
    assert step["code"] == 143, step["log"][-3000:]
    assert step["lingering"] == []
    assert after["runs"][step["parent"]].info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in after["runs"].values())
    assert after["versions"] == before["versions"] == [1]
    assert after["champion"] == before["champion"] == "1"


def test_a_sigkill_run_is_marked_killed_by_its_orphaned_worker(interrupted):
    """SIGKILL gives the training process no chance; its logging worker outlives it,
    marks the run KILLED and exits. The store stays whole."""
    work, states, steps = interrupted
    step, before, after = steps["sigkill"], states["sigterm"], states["sigkill"]
    assert step["code"] == -signal.SIGKILL
    assert step["lingering"] == []  # the worker did not wait forever
    assert after["runs"][step["parent"]].info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in after["runs"].values())
    assert after["versions"] == before["versions"] == [1]
    assert after["champion"] == "1"
    with closing(sqlite3.connect(work / "store" / "mlflow.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_next_training_works_after_both(interrupted):
    _, states, steps = interrupted
    after = states["next"]
    assert "passed the gate" in " ".join(steps["next"].stdout.split())
    assert after["versions"] == [1, 2]
    assert after["champion"] == "2"
    finished = [r for r in after["runs"].values() if r.info.status == "FINISHED"
                and "mlflow.parentRunId" not in r.data.tags]
    assert len(finished) == 2


def _packages_map_ready() -> bool:
    from mlflow.utils import requirements_utils

    return requirements_utils._MODULES_TO_PACKAGES is not None


def _forget_packages_map() -> None:
    """As in a fresh process (a forked worker inherits the test process's map)."""
    from mlflow.utils import requirements_utils

    requirements_utils._MODULES_TO_PACKAGES = None
    requirements_utils._PACKAGES_TO_MODULES = None


def test_warm_up_readies_what_logging_does_once_per_process():
    """A fresh logging worker runs tracking.warm_up (named by path: the CLI need not
    import tracking) before the run's jobs: MLflow's installed-packages map is built."""
    from csf_responder.background import call, import_modules, start_worker

    packages_map_ready = _packages_map_ready
    with start_worker() as worker:
        assert worker.submit(import_modules, "mlflow").result() == ["mlflow"]
        assert worker.submit(call, "mlflow.utils.requirements_utils:_normalize_package_name",
                             "Scikit_Learn").result() == "scikit-learn"
        worker.submit(_forget_packages_map).result()
        before = worker.submit(packages_map_ready).result()
        worker.submit(call, "csf_responder.tracking:warm_up").result()
        assert not before and worker.submit(packages_map_ready).result()
