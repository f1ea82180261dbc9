"""MLflow tracking: the local store, run metadata and what each training run logs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from csf_responder.errors import CsfResponderError

if TYPE_CHECKING:  # training's modules (scikit-learn, scipy.stats: a CPU second) load
    # where they are used: scoring's MLflow process needs none of them
    from csf_responder.metrics import MetricCI
    from csf_responder.training import FamilyResult, TrainingData

__all__ = [
    "BackgroundRun", "ChildRun", "EffectChild", "LoggedChild", "ModelFiles", "ScoringModel",
    "Terminated", "find_scoring_model", "flatten", "git_state", "import_model_loader",
    "load_scoring_model", "log_child_run", "log_effect_child", "log_family_run",
    "log_parent_run", "log_scoring_run", "resolve_uri", "run", "scoring_files",
    "setup_tracking", "sqlite_path", "store_lock", "warm_up",
]


#: Modules whose types a logged model may hold; skops refuses to load any other type.
TRUSTED_MODULES = ("csf_responder.", "sklearn.", "numpy.", "xgboost.", "scipy.")


def resolve_uri(uri: str) -> str:
    """The tracking URI a run will use: ``MLFLOW_TRACKING_URI`` when set, else ``uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or uri


#: How long a connection to a local SQLite store waits for another process's write
#: before it fails with "database is locked" (Python's sqlite3 default is 5 s; MLflow
#: sets 20 s inside each of its own sessions, this covers the connection otherwise).
SQLITE_BUSY_TIMEOUT_MS = 120_000


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a local SQLite store (``<db>.lock`` beside the database,
    ``fcntl.flock``) while the block runs; other stores: no lock.

    Processes sharing one SQLite file take it to create the store (MLflow's schema
    migrations must run once, not race) and to move the registry alias (gate, new
    version and alias, as one step). The kernel releases it when its process dies.
    """
    path = sqlite_path(uri)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one process at a time is on the user
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_SQLITE_CONFIGURED = False


def _configure_sqlite() -> None:
    """Give every SQLite connection SQLAlchemy opens in this process (MLflow's among
    them) a busy timeout of :data:`SQLITE_BUSY_TIMEOUT_MS` when it opens: concurrent runs
    on one store wait for each other's writes instead of failing, also outside MLflow's
    sessions (which set their own 20 s: schema checks, migrations). Once per process."""
    global _SQLITE_CONFIGURED
    if _SQLITE_CONFIGURED:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def busy_timeout(connection, _record) -> None:
        if isinstance(connection, sqlite3.Connection):
            connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    event.listen(Pool, "connect", busy_timeout)
    _SQLITE_CONFIGURED = True


def _write_ahead_log(path: Path) -> None:
    """Put the SQLite database in WAL mode (kept in the file; creates it when missing):
    readers never block the writer nor the writer them. Best effort: a store another
    program holds open in a transaction keeps its mode. Called under :func:`store_lock`."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        return


def warm_up() -> None:
    """Do ahead, in a fresh logging worker, what every run's logging does once per
    process, while the caller is still importing and reading its data: MLflow's map of
    the installed packages (read when it checks a logged model's requirements; about
    1.3 s) and matplotlib's fonts (:func:`csf_responder.figures.warm_up`)."""
    from csf_responder import figures

    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except (ImportError, AttributeError):  # a private helper: gone in some MLflow version
        pass
    figures.warm_up()


def setup_tracking(uri: str, *, artifact_root: str, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; return the URI used.

    ``MLFLOW_TRACKING_URI``, when set, wins over ``uri``. For a local SQLite store the
    folder is created, the database is in WAL mode with a long busy timeout, the store
    is created (MLflow's migrations) under :func:`store_lock` so that runs started
    together create it once, and a new experiment keeps its artifacts under
    ``artifact_root``. On a tracking server (``http://...``) the server decides where
    artifacts go (with ``--serve-artifacts``, through the server).
    """
    import mlflow

    uri = resolve_uri(uri)
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        _configure_sqlite()
    with store_lock(uri):
        if database is not None:
            _write_ahead_log(database)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            location = None
            if uri.startswith("sqlite:") or "://" not in uri:
                root = Path(artifact_root).resolve()
                root.mkdir(parents=True, exist_ok=True)
                location = root.as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


@contextmanager
def run(name: str, *, parent_id: str | None = None) -> Iterator[str]:
    """Start an MLflow run in this thread, a child of run ``parent_id`` if given, else of
    the thread's active run if any; yield its id. The run ends FINISHED, or FAILED
    when the block raises."""
    import mlflow

    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=name, parent_run_id=parent_id, nested=nested) as active:
        yield active.info.run_id


@dataclass(frozen=True)
class ChildRun:
    """One child run to log: a validated family and what its run records."""

    name: str  #: the run's name
    result: FamilyResult
    data: TrainingData
    params: dict[str, Any]
    tags: dict[str, str]
    dataset: dict[str, str]  #: ``name``, ``digest`` and ``source`` of the training rows
    figures_dir: Path
    threshold: float
    ci_level: float
    log_raw_rows: bool = False
    parent_id: str | None = None  #: None: the logging worker's active run
    contract: dict[str, Any] | None = None  #: :func:`csf_responder.scoring.model_contract`


@dataclass(frozen=True)
class LoggedChild:
    run_id: str
    model_uri: str
    figures: dict[str, Path]  #: name -> PNG, kept in the child's ``figures_dir``


def log_child_run(child: ChildRun) -> LoggedChild:
    """Open the child run under its parent and log it: its training rows as an input
    (no rows stored), then :func:`log_family_run`."""
    with run(child.name, parent_id=child.parent_id) as run_id:
        log_dataset(child.data.X.assign(responder=child.data.y), targets="responder",
                    context="training", **child.dataset)
        model_uri, figures = log_family_run(
            child.result, child.data, params=child.params, metrics={}, tags=child.tags,
            log_raw_rows=child.log_raw_rows, figures_dir=child.figures_dir,
            threshold=child.threshold, ci_level=child.ci_level, contract=child.contract)
    return LoggedChild(run_id, model_uri, figures)


class BackgroundRun:
    """A run whose MLflow work all happens in one background worker, in order, while
    the caller goes on computing.

    The worker (:func:`csf_responder.background.start_worker`) is one forked process at
    lower priority, so logging, figures and model files use the CPU the computation
    leaves idle and never compete with it for the interpreter lock. Pass ``worker`` to
    use one started earlier (it may have warmed up; the caller then owns it), else the
    run starts its own. Entering queues the first job: point MLflow at the store
    (importing MLflow, creating the store and the experiment when needed) and start the
    run, which stays the worker's active run, so jobs use MLflow's fluent API on it and
    child runs nest under it. Jobs and their arguments and results cross to the worker
    by pickle: module-level functions and plain data. :meth:`submit` queues a job and
    returns its future; :meth:`wait` waits for every job queued so far, returns their
    results in order, raises the first error, and adds the time the caller spent waiting
    to ``waited_seconds``: the wall time tracking added. On exit the run ends FINISHED,
    or FAILED (KILLED on Ctrl-C or SIGTERM) when the block raised; jobs not started by
    then are dropped, the job in progress finishes. One worker: one writer to the store
    at a time.

    Interruptions: while the block runs in the main thread, SIGTERM raises
    :class:`Terminated` there (a second SIGTERM, once the run is ending, kills the
    process). If the caller dies without ending the run (SIGKILL), the worker, orphaned,
    lets its job in progress finish, marks the run and any child run still open KILLED
    and exits (:func:`csf_responder.background.at_orphan`); only if the worker dies too
    does the run stay RUNNING in the store.
    """

    def __init__(self, name: str, *, uri: str, artifact_root: str, experiment: str,
                 worker: Executor | None = None) -> None:
        self._start = (name, uri, artifact_root, experiment)
        self._given = worker
        self._jobs: list = []
        self._pool: Executor | None = None
        self._run_id = None
        self._signals = None
        self.waited_seconds = 0.0

    @staticmethod
    def _open(name: str, uri: str, artifact_root: str, experiment: str) -> str:
        import mlflow

        from csf_responder.background import at_orphan

        uri = setup_tracking(uri, artifact_root=artifact_root, experiment=experiment)
        run_id = mlflow.start_run(run_name=name).info.run_id
        _OPEN_RUNS[run_id] = uri
        at_orphan(_kill_open_runs)
        return run_id

    def __enter__(self) -> BackgroundRun:
        from csf_responder.background import guarded, start_worker

        self._pool = self._given or start_worker()
        self._signals = _terminate_on_sigterm()  # before the run can exist
        try:
            self._run_id = self._pool.submit(guarded, self._open, *self._start)
        except BaseException:
            _restore_signals(self._signals)
            raise
        return self

    @property
    def run_id(self) -> str:
        """The run's id (waits for the run to start; raises if it could not)."""
        return self._timed(self._run_id.result)

    def submit(self, fn, /, *args, **kwargs):
        """Queue ``fn(*args, **kwargs)`` in the worker; return its future."""
        from csf_responder.background import unless_dropped

        job = self._pool.submit(unless_dropped, fn, *args, **kwargs)
        self._jobs.append(job)
        return job

    def call(self, fn, /, *args, **kwargs):
        """Run ``fn`` in the worker after every queued job; return its result."""
        return self._timed(self.submit(fn, *args, **kwargs).result)

    def wait(self) -> list:
        jobs, self._jobs = self._jobs, []
        return self._timed(lambda: [job.result() for job in jobs])

    def _timed(self, wait):
        start = time.perf_counter()
        try:
            return wait()
        finally:
            self.waited_seconds += time.perf_counter() - start

    def __exit__(self, kind, error, traceback) -> None:
        from csf_responder.background import guarded

        _restore_signals(self._signals)  # a second SIGTERM, from here on, kills at once
        status = ("FINISHED" if kind is None
                  else "KILLED" if issubclass(kind, KeyboardInterrupt | Terminated)
                  else "FAILED")
        if kind is not None:
            from csf_responder.background import drop_queued

            for job in self._jobs:
                job.cancel()
            drop_queued(self._pool)  # also those already handed to the process
        ended = self._pool.submit(guarded, _end_run, status)
        if self._given is None:
            self._pool.shutdown(wait=True)
        ended.exception()  # waits for the run to end, whoever owns the worker
        if kind is None:
            ended.result()


class Terminated(SystemExit):
    """SIGTERM arrived while a :class:`BackgroundRun` was open: the run ends KILLED and
    the process exits with status 143 (128 + SIGTERM)."""

    def __init__(self) -> None:
        super().__init__(128 + 15)


def _terminate_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in the main thread; return what to restore
    (None when not in the main thread, where signal handlers cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated

    return signal.signal(signal.SIGTERM, terminate)


def _restore_signals(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


#: In the logging worker: runs it opened and has not ended (run id -> tracking URI).
_OPEN_RUNS: dict[str, str] = {}


def _end_run(status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    mlflow.end_run(status)
    if active is not None:
        _OPEN_RUNS.pop(active.info.run_id, None)


def _kill_open_runs() -> None:
    """The process that opened these runs died without ending them: mark them, and any
    of their child runs still running, KILLED (best effort)."""
    from mlflow import MlflowClient

    for run_id, uri in list(_OPEN_RUNS.items()):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_run(run_id).info.experiment_id
        for child in client.search_runs(
                [experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}' "
                                            "AND attributes.status = 'RUNNING'"):
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(run_id, "KILLED")
        _OPEN_RUNS.pop(run_id, None)


def log_metrics(run_id: str, metrics: dict[str, MetricCI | float]) -> None:
    """Add metrics to a run; one with an interval logs ``m``, ``m_ci_low`` and
    ``m_ci_high``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from csf_responder.metrics import MetricCI

    def values(name: str, value: MetricCI | float) -> list[tuple[str, float]]:
        if isinstance(value, MetricCI):
            return [(name, value.estimate), (f"{name}_ci_low", value.low),
                    (f"{name}_ci_high", value.high)]
        return [(name, value)]

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[
        Metric(key, float(value), now, 0)
        for name, metric in metrics.items() for key, value in values(name, metric)])


def git_state(directory: str | Path = ".") -> dict[str, str]:
    """Commit and dirty flag of the working tree (``unknown`` outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": str(bool(git("status", "--porcelain"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


#: What a config says about where its work runs and is logged, not what it computes:
#: left out of :func:`config_digest` (top-level sections, and keys of that name at any
#: depth). The numbers are the same whatever these say (tests/test_execution.py).
NOT_DIGESTED = {"sections": ("execution", "tracking"), "keys": ("n_jobs",)}


def config_digest(resolved_config: dict[str, Any]) -> str:
    """Short SHA-256 of the resolved config (canonical JSON) less where the work runs and
    is logged (:data:`NOT_DIGESTED`): equal digests, the same analysis, on a laptop or a
    dask cluster, with one process or eight."""
    def kept(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: kept(v) for k, v in value.items() if k not in NOT_DIGESTED["keys"]}
        return value

    analysis = {k: kept(v) for k, v in resolved_config.items()
                if k not in NOT_DIGESTED["sections"]}
    canonical = json.dumps(analysis, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def log_dataset(table: pd.DataFrame, *, name: str, source: str, digest: str, context: str,
                targets: str | None = None) -> None:
    """Record ``table`` as an input of the active run (``mlflow.log_input``): its name,
    digest, source, schema and row count; MLflow stores no row of it."""
    import warnings

    import mlflow

    # Two notes MLflow prints on every call, about nothing this run can act on: the
    # ambiguity is between two registrations of one source class, and the integer column
    # is the 0/1 label (the model's signature has no integer column).
    for note in ("The specified dataset source can be interpreted in multiple ways",
                 "Hint: Inferred schema contains integer column"):
        warnings.filterwarnings("ignore", message=note, category=UserWarning)
    dataset = mlflow.data.from_pandas(table, source=source, name=name, digest=digest,
                                      targets=targets)
    mlflow.log_input(dataset, context=context)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists are written as JSON."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return flat


def log_parent_run(*, resolved_config: dict[str, Any] | None = None,
                   tags: dict[str, str] | None = None,
                   metrics: dict[str, MetricCI | float] | None = None,
                   tables: dict[str, pd.DataFrame] | None = None,
                   files: dict[str, list[Path]] | None = None,
                   config_name: str = "train.yaml") -> None:
    """Log to the active parent run (any part, so a run can be logged as it goes): config
    as params and YAML artifact ``config/<config_name>``, tags, metrics (one with an
    interval as three, see :func:`log_metrics`), tables (as ``tables/<name>.csv``) and
    ``files`` (artifact folder -> paths)."""
    import mlflow
    import yaml

    if tags:
        mlflow.set_tags(tags)
    if resolved_config is not None:
        mlflow.log_params(flatten(resolved_config))
        mlflow.log_text(yaml.safe_dump(resolved_config, sort_keys=False),
                        f"config/{config_name}")
    if metrics:
        log_metrics(mlflow.active_run().info.run_id, metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in (tables or {}).items():
            path = Path(tmp) / f"{name}.csv"
            table.to_csv(path, index=False)
            mlflow.log_artifact(str(path), artifact_path="tables")
    for folder, paths in (files or {}).items():
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path=folder)


def example_rows(X: pd.DataFrame, *, raw: bool) -> pd.DataFrame:
    """Rows for the logged model's input example.

    With ``raw`` the first rows of ``X``; otherwise one synthetic row that is no patient's:
    the median of each numeric column and the most frequent value of the others.
    """
    if raw:
        return X.head(5)
    row = {}
    for column in X.columns:
        values = X[column]
        if pd.api.types.is_numeric_dtype(values):
            row[column] = [values.median()]
        else:
            counts = values.value_counts()
            row[column] = [counts.index[0] if len(counts) else ""]
    example = pd.DataFrame(row).astype(X.dtypes.to_dict())
    if "subject_id" in example:
        example["subject_id"] = "example"
    return example


def model_requirements(model) -> list[str]:
    """Pinned pip requirements of a logged model: the installed versions of what it
    unpickles (MLflow's own inference imports the model in a subprocess, ~6 s a model)."""
    from importlib.metadata import version

    packages = ["numpy", "pandas", "scipy", "scikit-learn", "skops"]
    if any(type(step).__module__.startswith("xgboost") for _, step in model.steps):
        packages.append("xgboost-cpu")
    return [f"{name}=={version(name)}" for name in packages]


def family_figures(result: FamilyResult, data: TrainingData, directory: str | Path, *,
                   threshold: float, ci_level: float) -> dict[str, Path]:
    """Write the PNG figures of one family into ``directory``; name -> path.

    ROC and precision-recall curves with bootstrap bands, calibration, decision curve,
    confusion matrix at ``threshold``; with SHAP values, the beeswarm, the mean |SHAP|
    bar chart and the dependence plot of the first log ratio among the features (the
    TGF-beta1/MCP-1 ratio by default).
    """
    from csf_responder import figures as fig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    y, oof, m, name = data.y, result.cv.oof, result.metrics, result.name
    out = {
        "roc": fig.roc_plot(y, oof, auc=m["roc_auc"], path=directory / "roc.png",
                            title=f"ROC, out of fold: {name}", ci_level=ci_level),
        "pr": fig.pr_plot(y, oof, pr_auc=m["pr_auc"], path=directory / "pr.png",
                          title=f"Precision-recall, out of fold: {name}", ci_level=ci_level),
        "calibration": fig.calibration_plot(
            y, oof, intercept=m["calibration_intercept"], slope=m["calibration_slope"],
            path=directory / "calibration.png", title=f"Calibration, out of fold: {name}",
            ci_level=ci_level),
        "decision_curve": fig.decision_curve_plot(
            result.decision, path=directory / "decision_curve.png",
            title=f"Decision curve: {name}"),
        "confusion_matrix": fig.confusion_matrix_plot(
            y, oof, threshold=threshold, path=directory / "confusion_matrix.png",
            title=f"Confusion matrix at p >= {threshold:g}: {name}"),
    }
    if result.shap.shape[1] > 1:  # explained: subject_id and one column per feature
        values = result.shap.drop(columns="subject_id")
        out["shap_beeswarm"] = fig.shap_beeswarm_plot(
            values, result.shap_features, path=directory / "shap_beeswarm.png",
            title=f"SHAP values of the final model: {name}")
        out["shap_bar"] = fig.shap_bar_plot(values, path=directory / "shap_bar.png",
                                            title=f"Mean |SHAP|: {name}")
        ratio = next((c for c in values.columns if c.startswith("log_ratio_")), None)
        if ratio is not None:
            out["shap_dependence"] = fig.shap_dependence_plot(
                values, result.shap_features, feature=ratio,
                path=directory / "shap_dependence.png", title=f"SHAP dependence: {ratio}")
    return out


def scoring_files(result: FamilyResult, data: TrainingData, *, contract: dict[str, Any],
                  threshold: float, trusted: list[str], directory: str | Path) -> list[str]:
    """Write what scoring needs besides the Pipeline into ``directory``; return the paths.

    The profile (:func:`csf_responder.scoring.training_profile`, JSON) and, when the
    family has them, its bootstrap refits (skops, with the same trusted types as the
    model; an interval model holding other types is refused).
    """
    import json

    import skops.io

    from csf_responder import scoring

    directory = Path(directory)
    models = list(result.interval_models)
    types = sorted(set(trusted))
    if models:
        found = skops.io.get_untrusted_types(data=skops.io.dumps(models))
        foreign = [t for t in found if not t.startswith(TRUSTED_MODULES)]
        if foreign:
            raise TypeError(f"interval models hold types outside {TRUSTED_MODULES}: "
                            f"{foreign}")
        types = sorted(set(types) | set(found))
    profile = scoring.training_profile(
        result.model, data.X, contract=contract, family=result.name, threshold=threshold,
        n_interval_models=len(models), trusted_types=types)
    paths = [directory / scoring.PROFILE_FILE]
    paths[0].write_text(json.dumps(profile, indent=1), encoding="utf-8")
    if models:
        paths.append(directory / scoring.INTERVAL_FILE)
        skops.io.dump(models, paths[1])
    return [str(p) for p in paths]


def log_family_run(result: FamilyResult, data: TrainingData, *, params: dict[str, Any],
                   metrics: dict[str, MetricCI], tags: dict[str, str], log_raw_rows: bool,
                   figures_dir: str | Path, threshold: float, ci_level: float,
                   contract: dict[str, Any] | None = None) -> tuple[str, dict[str, Path]]:
    """Log one model family in the active (child) run; return the logged model's URI and
    the figures (name -> PNG path, kept in ``figures_dir`` for the report).

    Logs every metric with its interval (``roc_auc``, ``roc_auc_ci_low``,
    ``roc_auc_ci_high``, ``pr_auc``, ``brier``, ...), the out-of-fold predictions, the
    decision curve, the figures of :func:`family_figures` under ``figures/``, the
    per-patient SHAP values (when the model was explained), and the refitted Pipeline
    (signature from the raw wide table; its pyfunc returns ``predict_proba``; the input
    example is a synthetic row unless ``log_raw_rows``). ``metrics`` are further metrics
    with intervals. With the input ``contract`` the model was trained under, what scoring
    needs travels with the model as its extra files (:func:`scoring_files`).
    """
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tags(tags)
    mlflow.log_params({f"model.{k}": v for k, v in params.items()})
    pictures = family_figures(result, data, figures_dir, threshold=threshold,
                              ci_level=ci_level)
    mlflow.log_artifacts(str(figures_dir), artifact_path="figures")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result.cv.predictions(data.subject_ids, data.y).to_csv(tmp / "oof_predictions.csv",
                                                               index=False)
        result.decision.to_csv(tmp / "decision_curve.csv", index=False)
        if result.shap.shape[1] > 1:
            result.shap.to_csv(tmp / "shap_values.csv", index=False)
        mlflow.log_artifacts(str(tmp), artifact_path="tables")
    example = example_rows(data.X, raw=log_raw_rows)
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(result.model))
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise TypeError(f"model holds types outside {TRUSTED_MODULES}: {foreign}")
    signature = infer_signature(data.X, result.model.predict_proba(example))
    with tempfile.TemporaryDirectory() as extra:
        extra_files = (scoring_files(result, data, contract=contract, threshold=threshold,
                                     trusted=untrusted, directory=extra)
                       if contract is not None else None)
        info = mlflow.sklearn.log_model(
            result.model, name="model", signature=signature, input_example=example,
            pyfunc_predict_fn="predict_proba", serialization_format="skops",
            skops_trusted_types=untrusted, pip_requirements=model_requirements(result.model),
            extra_files=extra_files,
        )
    # Logged after the model, linked to it in one batch: logged before, MLflow would
    # re-read every metric's history to link them (a query per metric).
    mlflow.log_metrics({
        **result.metric_values(),
        **{f"{name}{suffix}": value for name, ci in metrics.items()
           for suffix, value in (("", ci.estimate), ("_ci_low", ci.low),
                                 ("_ci_high", ci.high))},
        "n_labelled": float(len(data.y)),
        "n_responders": float(data.y.sum()),
    }, model_id=info.model_id)
    return info.model_uri, pictures


@dataclass(frozen=True)
class ScoringModel:
    """A logged model ready to score: the Pipeline, its profile and interval models, and
    where it came from (``version`` and ``name`` for a registered model, else empty)."""

    uri: str
    model: Any
    profile: dict[str, Any]
    interval_models: list
    run_id: str
    model_id: str
    name: str = ""
    version: str = ""


def _model_source(uri: str) -> tuple[str, str, str, str]:
    """(location to download, registered name, version, run id) of a model URI."""
    import mlflow

    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/")
        name, _, which = rest.partition("@") if "@" in rest else rest.partition("/")
        if which and name and not name.startswith("m-"):
            client = mlflow.MlflowClient()
            found = (client.get_model_version_by_alias(name, which) if "@" in rest
                     else client.get_model_version(name, which))
            return found.source, name, str(found.version), found.run_id or ""
    return uri, "", "", ""


@dataclass(frozen=True)
class ModelFiles:
    """A logged model found, its files at hand (downloaded from the store) and its
    scoring profile read, but not loaded yet (:func:`find_scoring_model`)."""

    uri: str
    path: Path
    profile: dict[str, Any]
    run_id: str
    name: str = ""
    version: str = ""
    model_id: str = ""
    #: The MLmodel's ``sklearn`` flavor: how the Pipeline is stored (file, format and
    #: the types skops may rebuild).
    flavor: dict[str, Any] = field(default_factory=dict)
    #: MLflow's ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``, as MLflow reads it.
    may_deserialize: bool = True


def find_scoring_model(uri: str) -> ModelFiles:
    """Find a model for scoring from any MLflow model URI (``models:/name@alias``,
    ``models:/name/3``, ``runs:/<run>/model``, ``models:/m-...``) or a local directory,
    and read its scoring profile: what a caller needs before the model itself (the
    input contract) without the time its loading takes (:func:`load_scoring_model`).

    Raises
    ------
    CsfResponderError
        When the URI names no model, or a model logged without what scoring needs (a
        model from before scoring existed: train again).
    """
    import mlflow
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

    from csf_responder import scoring

    local = Path(uri)
    try:
        if local.is_dir():
            path, name, version, run_id = local, "", "", ""
        else:
            source, name, version, run_id = _model_source(uri)
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
    except Exception as exc:  # MLflow raises its own exception types per store
        raise CsfResponderError(f"model {uri}: cannot be loaded ({exc})") from exc
    profile_path = path / "extra_files" / scoring.PROFILE_FILE
    if not profile_path.is_file():
        raise CsfResponderError(
            f"model {uri}: has no scoring profile ({scoring.PROFILE_FILE}); it was logged "
            "before batch scoring existed: train it again with make train")
    profile = json.loads(profile_path.read_text(encoding="utf-8"))
    try:
        meta = mlflow.models.Model.load(str(path / "MLmodel"))
    except Exception as exc:  # a missing or damaged MLmodel file
        raise CsfResponderError(f"model {uri}: cannot be loaded "
                                f"({type(exc).__name__}: {exc})") from exc
    return ModelFiles(uri=uri, path=path, profile=profile, run_id=run_id or meta.run_id or "",
                      name=name, version=version, model_id=meta.model_id or "",
                      flavor=dict(meta.flavors.get("sklearn", {})),
                      may_deserialize=bool(MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get()))


def import_model_loader() -> None:
    """Import what :func:`load_scoring_model` needs and the lookup does not (skops,
    scikit-learn and every module skops trusts: about 1.5 CPU s), say while
    :func:`find_scoring_model` runs in another process."""
    import skops.io  # noqa: F401


def load_scoring_model(model: str | ModelFiles) -> ScoringModel:
    """Load a model for scoring: the Pipeline, its interval models and its profile, from
    a model URI or directory (:func:`find_scoring_model`) or a model found already.

    A Pipeline stored with skops (as training logs it) is loaded as MLflow's scikit-learn
    flavor loads it, ``skops.io.load`` of the flavor's file with the flavor's trusted
    types, without importing MLflow here (the scoring command leaves MLflow to a process
    of its own); any other is loaded by MLflow. MLflow's
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` set to false forbids both, and the interval
    models.

    Raises
    ------
    CsfResponderError
        As :func:`find_scoring_model`; when MLflow's setting forbids loading models; or
        when a file of the model cannot be read.
    """
    import skops.io

    from csf_responder import scoring

    found = model if isinstance(model, ModelFiles) else find_scoring_model(model)
    path, profile, flavor = found.path, found.profile, found.flavor
    if not found.may_deserialize:
        raise CsfResponderError(
            f"model {found.uri}: not loaded: MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false "
            "(set it to true to load models you trust)")
    intervals_path = path / "extra_files" / scoring.INTERVAL_FILE
    try:
        if flavor.get("serialization_format") == "skops" and not flavor.get("code"):
            pipeline = skops.io.load(path / flavor["pickled_model"],
                                     trusted=flavor.get("skops_trusted_types"))
        else:
            import mlflow.sklearn

            pipeline = mlflow.sklearn.load_model(str(path))
        intervals = (skops.io.load(intervals_path, trusted=profile["trusted_types"])
                     if intervals_path.is_file() else [])
    except Exception as exc:  # a damaged file, a type not trusted: MLflow's, skops' own
        raise CsfResponderError(f"model {found.uri}: cannot be loaded "
                                f"({type(exc).__name__}: {exc})") from exc
    return ScoringModel(uri=found.uri, model=pipeline, profile=profile,
                        interval_models=list(intervals), run_id=found.run_id,
                        model_id=found.model_id, name=found.name, version=found.version)


def log_scoring_run(*, name: str, summary: dict[str, Any], files: list[Path]) -> str:
    """Log one scoring run in the active experiment; return its id.

    Tags: the model (URI, registered name and version, family) and its training run;
    metrics: the counts, the score distribution (``score_mean``, ``score_p05`` ...) and
    each CSF column's drift (``psi_<column>``, ``ks_<column>``); artifacts: ``files``
    that exist (the summary, the drift plot, the accounting). No patient row is logged.
    """
    import mlflow

    model, counts = summary["model"], summary["counts"]
    metrics = {f"n_{key}": float(value) for key, value in counts.items()
               if isinstance(value, int)}
    metrics.update({f"n_rejected_{rule}": float(n)
                    for rule, n in counts["rejected_by_rule"].items()})
    metrics.update({f"score_{key}": value
                    for key, value in summary["score_distribution"].items()})
    for column, found in summary["drift"].items():
        if found["n"]:
            metrics.update({f"psi_{column}": found["psi"], f"ks_{column}": found["ks"],
                            f"ks_p_{column}": found["ks_p"]})
    with mlflow.start_run(run_name=name) as active:
        mlflow.set_tags({
            "model_uri": model["uri"], "model_name": model["name"],
            "model_version": model["version"], "model_family": model["family"],
            "training_run_id": model["training_run_id"], "cohort": summary["cohort"],
            "data_digest": summary["data_digest"]})
        mlflow.log_params({"threshold": model["threshold"],
                           "interval_level": model["interval_level"],
                           "n_interval_models": model["n_interval_models"]})
        mlflow.log_metrics(metrics)
        for path in files:
            if Path(path).is_file():
                mlflow.log_artifact(str(path))
        return active.info.run_id


# ------------------------------------------------------------------------ effect
@dataclass(frozen=True)
class EffectChild:
    """One child run of an effect run: a benefit estimator."""

    name: str  #: the run's name
    params: dict[str, Any]
    tags: dict[str, str]
    metrics: dict[str, MetricCI | float]
    tables: dict[str, pd.DataFrame]
    figures: list[Path]


def log_effect_child(child: EffectChild) -> str:
    """Log one estimator as a child of the active run; return its id."""
    import mlflow

    with run(child.name) as run_id:
        mlflow.log_params(flatten(child.params))
        log_parent_run(tags=child.tags, metrics=child.metrics, tables=child.tables,
                       files={"figures": child.figures})
    return run_id
