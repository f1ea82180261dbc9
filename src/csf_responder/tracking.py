"""MLflow tracking: the local store, run metadata and what each training run logs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from csf_responder.metrics import MetricCI
from csf_responder.training import FamilyResult, TrainingData

__all__ = [
    "flatten", "git_state", "log_family_run", "log_parent_run", "run", "setup_tracking",
]


#: Modules whose types a logged model may hold; skops refuses to load any other type.
TRUSTED_MODULES = ("csf_responder.", "sklearn.", "numpy.", "xgboost.", "scipy.")


def setup_tracking(uri: str, *, artifact_root: str, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; return the URI used.

    ``MLFLOW_TRACKING_URI``, when set, wins over ``uri``. For a local SQLite store the
    folder is created and a new experiment keeps its artifacts under ``artifact_root``.
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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
    """Start an MLflow run in this thread (a child of run ``parent_id`` if given); yield
    its id. The run ends FINISHED, or FAILED when the block raises."""
    import mlflow

    with mlflow.start_run(run_name=name, parent_run_id=parent_id) as active:
        yield active.info.run_id


class BackgroundLogging:
    """Log runs in one background thread while the caller goes on computing.

    MLflow's active run is per thread, so each job opens its own run (see :func:`run`).
    :meth:`wait` returns the jobs' results in submission order, raises the first job's
    error, and adds the time the caller spent waiting to ``waited_seconds``: the wall
    time logging added to the run.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-log")
        self._jobs: list = []
        self.waited_seconds = 0.0

    def submit(self, fn, /, *args, **kwargs) -> None:
        self._jobs.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> list:
        start = time.perf_counter()
        try:
            return [job.result() for job in self._jobs]
        finally:
            self._jobs = []
            self.waited_seconds += time.perf_counter() - start

    def __enter__(self) -> BackgroundLogging:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def log_metrics(run_id: str, metrics: dict[str, MetricCI]) -> None:
    """Add metrics with their intervals (``m``, ``m_ci_low``, ``m_ci_high``) to a run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[
        Metric(f"{name}{suffix}", float(value), now, 0)
        for name, ci in metrics.items()
        for suffix, value in (("", ci.estimate), ("_ci_low", ci.low), ("_ci_high", ci.high))])


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


def config_digest(resolved_config: dict[str, Any]) -> str:
    """Short SHA-256 of the resolved config (canonical JSON): equal digests, equal configs."""
    canonical = json.dumps(resolved_config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def log_dataset(table: pd.DataFrame, *, name: str, source: str, digest: str, context: str,
                targets: str | None = None) -> None:
    """Record ``table`` as an input of the active run (``mlflow.log_input``): its name,
    digest, source, schema and row count; MLflow stores no row of it."""
    import mlflow

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


def log_parent_run(*, resolved_config: dict[str, Any], tags: dict[str, str],
                   metrics: dict[str, float], tables: dict[str, pd.DataFrame],
                   files: dict[str, list[Path]] | None = None) -> None:
    """Log the active parent run: config as params and YAML artifact, tags, metrics,
    tables (as ``tables/<name>.csv``) and ``files`` (artifact folder -> paths)."""
    import mlflow
    import yaml

    mlflow.set_tags(tags)
    mlflow.log_params(flatten(resolved_config))
    mlflow.log_text(yaml.safe_dump(resolved_config, sort_keys=False), "config/train.yaml")
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
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


def log_family_run(result: FamilyResult, data: TrainingData, *, params: dict[str, Any],
                   metrics: dict[str, MetricCI], tags: dict[str, str], log_raw_rows: bool,
                   figures_dir: str | Path, threshold: float, ci_level: float,
                   ) -> tuple[str, dict[str, Path]]:
    """Log one model family in the active (child) run; return the logged model's URI and
    the figures (name -> PNG path, kept in ``figures_dir`` for the report).

    Logs every metric with its interval (``roc_auc``, ``roc_auc_ci_low``,
    ``roc_auc_ci_high``, ``pr_auc``, ``brier``, ...), the out-of-fold predictions, the
    decision curve, the figures of :func:`family_figures` under ``figures/``, the
    per-patient SHAP values (when the model was explained), and the refitted Pipeline
    (signature from the raw wide table; its pyfunc returns ``predict_proba``; the input
    example is a synthetic row unless ``log_raw_rows``). ``metrics`` are further metrics
    with intervals.
    """
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tags(tags)
    mlflow.log_params({f"model.{k}": v for k, v in params.items()})
    mlflow.log_metrics({
        **result.metric_values(),
        **{f"{name}{suffix}": value for name, ci in metrics.items()
           for suffix, value in (("", ci.estimate), ("_ci_low", ci.low),
                                 ("_ci_high", ci.high))},
        "n_labelled": float(len(data.y)),
        "n_responders": float(data.y.sum()),
    })
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
    info = mlflow.sklearn.log_model(
        result.model, name="model", signature=signature, input_example=example,
        pyfunc_predict_fn="predict_proba", serialization_format="skops",
        skops_trusted_types=untrusted, pip_requirements=model_requirements(result.model),
    )
    return info.model_uri, pictures
