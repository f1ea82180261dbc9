"""Tracking helpers, and the background run that logs while training computes (on a
temporary SQLite store)."""

from __future__ import annotations

import os
import time

import pytest

from csf_responder.tracking import BackgroundRun, config_digest, flatten, resolve_uri, run


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
