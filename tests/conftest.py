"""Shared test setup: no telemetry, no network, paths of the project's own configs, and
the simulated cohorts and the trained MLflow store that the end-to-end modules share."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def descendants(pid: int) -> list[int]:
    """Processes whose parent chain leads to ``pid``, in order of pid (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not; Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
BIN = Path(sys.executable).parent


def cli_env() -> dict[str, str]:
    """Environment of a ``csf-responder`` subprocess: no telemetry, a wide console (the
    summaries do not wrap), and no inherited tracking store (each test names its own)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(autouse=True)
def _offline_mlflow(monkeypatch, tmp_path):
    """Keep MLflow quiet and away from the checkout: no telemetry, a per-test store."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def configs_dir() -> Path:
    return CONFIGS


# ------------------------------------------------- shared simulations and training
def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "csf-responder"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def simulate(tmp_path_factory) -> Callable[..., None]:
    """``simulate(work, *args)`` leaves in ``work`` what ``csf-responder simulate *args``
    run there writes (``--out``/``--truth`` relative, ``--config`` absolute). Each set of
    arguments is simulated once per session (the simulator is seeded) and copied, so
    the copy is the module's own to change."""
    made: dict[tuple[str, ...], Path] = {}

    def simulate(work: Path, *args: str) -> None:
        if args not in made:
            folder = tmp_path_factory.mktemp("simulated")
            run_cli(["simulate", *args], folder, cli_env())
            made[args] = folder
        shutil.copytree(made[args], work, dirs_exist_ok=True)

    return simulate


#: The shared training's overrides (:func:`trained_store`): tests/test_train_e2e.py
#: asserts on two repeats and two permutations; the rest only make it fast.
SHARED_TRAIN = ["validation.n_repeats=2", "validation.n_bootstrap=200",
                "validation.n_optimism=20", "validation.inner_splits=3",
                "validation.n_permutations=2", "validation.n_interval_models=6",
                "models.xgboost.params.n_estimators=30"]


@dataclass(frozen=True)
class TrainedStore:
    """A folder trained in: ``cohort/`` (40 MSC, 10 control) and ``truth/``,
    ``interim/`` (``csf-responder validate``), ``reports/`` and ``store/`` (``mlflow.db``,
    ``artifacts/``), written by ``train`` (the command, run in ``work``) with every family
    of configs/train.yaml, a permutation test and :data:`SHARED_TRAIN`."""

    work: Path
    train: list[str]
    result: subprocess.CompletedProcess


def _row_counts(database: Path) -> dict[str, int]:
    with closing(sqlite3.connect(database)) as db:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, simulate) -> TrainedStore:
    """One training for the session, read by tests/test_train_e2e.py and, through
    :func:`copy_store`, by the modules that change a store (promote, register, score,
    serve, train again). Nothing may write to it: teardown checks that no row came or
    went."""
    work = tmp_path_factory.mktemp("trained")
    env = cli_env()
    simulate(work, "--out", "cohort", "--truth", "truth/cohort.csv", "--n-msc", "40",
             "--n-control", "10", "--config", str(CONFIGS / "simulate.yaml"))
    run_cli(["validate", "--cohort", "cohort", "--out", "interim",
          "--config", str(CONFIGS / "train.yaml")], work, env)
    train = [str(BIN / "csf-responder"), "train", "--cohort", "cohort",
             "--config", str(CONFIGS / "train.yaml"), "--permutation-test",
             "--set", "tracking.uri=sqlite:///store/mlflow.db",
             "--set", "tracking.artifact_root=store/artifacts",
             *[arg for item in SHARED_TRAIN for arg in ("--set", item)]]
    result = run_cli(train[1:], work, env)
    before = _row_counts(work / "store" / "mlflow.db")
    yield TrainedStore(work, train, result)
    assert _row_counts(work / "store" / "mlflow.db") == before, "the shared store changed"


def copy_store(source: Path, target: Path) -> Path:
    """Copy the folder ``source`` (:attr:`TrainedStore.work`) to ``target`` (created or
    empty) and return ``target``: a store of its own. The database goes through SQLite's
    backup (its write-ahead log may still hold committed pages), and the absolute paths
    MLflow recorded under ``source`` (the experiments', runs' and logged models' artifact
    locations, the MLmodel files' ``artifact_path``) are moved to ``target``."""
    database = Path("store") / "mlflow.db"
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        "mlflow.db", "mlflow.db-wal", "mlflow.db-shm", "mlflow.db.lock"))
    with closing(sqlite3.connect(source / database)) as old, \
            closing(sqlite3.connect(target / database)) as new:
        old.backup(new)
    source, target = source.resolve(), target.resolve()
    moves = [(f"{source.as_uri()}/", f"{target.as_uri()}/"), (f"{source}/", f"{target}/")]
    with closing(sqlite3.connect(target / database)) as db, db:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]:
                for old, new in moves:
                    db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                               f"WHERE typeof(\"{column}\") = 'text' "
                               f'AND instr("{column}", ?) > 0', (old, new, old))
                left = db.execute(f'SELECT count(*) FROM "{table}" '
                                  f'WHERE instr(CAST("{column}" AS TEXT), ?) > 0',
                                  (f"{source}/",)).fetchone()[0]
                assert left == 0, f"{table}.{column} still names {source}"
    for path in target.rglob("*"):
        if path.is_file() and f"{source}/".encode() in (data := path.read_bytes()):
            text = data.decode()  # a binary file naming the source: fail, not corrupt it
            for old, new in moves:
                text = text.replace(old, new)
            path.write_text(text)
    return target
