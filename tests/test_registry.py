"""The release gate: the pure decision, then the MLflow registry on a temporary SQLite
store (register, gate, alias, promotion by hand) and the ``promote`` command."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from csf_responder.config import Bound, RegistrySpec, TrainConfig, load_config
from csf_responder.errors import CsfResponderError
from csf_responder.registry import gate, promote, register_best
from pipelines.cli import app
from tests.conftest import CONFIGS

SPEC = RegistrySpec(
    model_name="csf-responder", alias="champion", primary_metric="roc_auc_optimism_corrected",
    thresholds={"roc_auc_ci_low": Bound(above=0.5),
                "calibration_slope": Bound(above=0.5, below=2.0)})
GOOD = {"roc_auc_optimism_corrected": 0.74, "roc_auc_ci_low": 0.61, "calibration_slope": 1.1}


# ---------------------------------------------------------------------------- gate
def test_the_project_config_holds_this_gate():
    config, _ = load_config(CONFIGS / "train.yaml", TrainConfig)
    assert config.registry == SPEC


def test_a_good_candidate_without_champion_passes():
    decision = gate(GOOD, None, SPEC)
    assert decision.promote and decision.reasons == []


@pytest.mark.parametrize(("metric", "value", "reason"), [
    ("roc_auc_ci_low", 0.41, "roc_auc_ci_low 0.41 is not above 0.5"),
    ("roc_auc_ci_low", 0.5, "roc_auc_ci_low 0.5 is not above 0.5"),        # strict
    ("calibration_slope", 0.5, "calibration_slope 0.5 is not above 0.5"),
    ("calibration_slope", 0.3, "calibration_slope 0.3 is not above 0.5"),
    ("calibration_slope", 2.0, "calibration_slope 2 is not below 2"),        # strict
    ("calibration_slope", 3.75, "calibration_slope 3.75 is not below 2"),
    ("calibration_slope", math.inf, "calibration_slope inf is not below 2"),
    ("calibration_slope", math.nan, "calibration_slope is NaN (undefined)"),
    ("roc_auc_ci_low", None, "roc_auc_ci_low is missing"),
    ("roc_auc_optimism_corrected", math.nan,
     "roc_auc_optimism_corrected (the primary metric) is NaN (undefined)"),
])
def test_each_threshold_fails_with_a_reason(metric, value, reason):
    candidate = {**GOOD, metric: value}
    decision = gate(candidate, None, SPEC)
    assert not decision.promote
    assert decision.reasons == [reason]


def test_just_inside_the_bounds_passes():
    candidate = {**GOOD, "roc_auc_ci_low": 0.5001, "calibration_slope": 1.9999}
    assert gate(candidate, None, SPEC).promote
    assert gate({**GOOD, "calibration_slope": 0.5001}, None, SPEC).promote


def test_a_missing_metric_fails_and_every_reason_is_listed():
    candidate = {"roc_auc_ci_low": 0.3}
    decision = gate(candidate, {"roc_auc_optimism_corrected": 0.7}, SPEC)
    assert not decision.promote
    assert decision.reasons == [
        "roc_auc_ci_low 0.3 is not above 0.5",
        "calibration_slope is missing",
        "roc_auc_optimism_corrected (the primary metric) is missing",
    ]


@pytest.mark.parametrize(("champion", "passes"), [
    (None, True),
    ({"roc_auc_optimism_corrected": 0.70}, True),     # better
    ({"roc_auc_optimism_corrected": 0.74}, True),     # a tie is not worse
    ({"roc_auc_optimism_corrected": 0.7401}, False),  # worse, however little
    ({"roc_auc_optimism_corrected": 0.90, "roc_auc_ci_low": 0.1}, False),
])
def test_the_candidate_must_not_be_worse_than_the_champion(champion, passes):
    decision = gate(GOOD, champion, SPEC)
    assert decision.promote is passes
    if not passes:
        (reason,) = decision.reasons
        assert reason.startswith("roc_auc_optimism_corrected 0.74 is worse than the champion's")


@pytest.mark.parametrize("champion", [{}, {"roc_auc_optimism_corrected": math.nan}])
def test_a_champion_without_the_primary_metric_cannot_be_replaced_by_the_gate(champion):
    decision = gate(GOOD, champion, SPEC)
    assert not decision.promote
    assert "cannot compare, promote by hand" in decision.reasons[0]


def test_bounds_on_one_side_and_no_thresholds():
    spec = RegistrySpec(model_name="m", alias="a", primary_metric="auc",
                        thresholds={"brier": Bound(below=0.25), "auc": Bound(above=0.6)})
    assert gate({"auc": 0.7, "brier": 0.2}, None, spec).promote
    assert gate({"auc": 0.7, "brier": 0.3}, None, spec).reasons == ["brier 0.3 is not below 0.25"]
    assert gate({"auc": 0.6, "brier": 0.2}, None, spec).reasons == ["auc 0.6 is not above 0.6"]
    bare = RegistrySpec(model_name="m", alias="a", primary_metric="auc", thresholds={})
    assert gate({"auc": 0.1}, None, bare).promote
    assert not gate({"auc": 0.1}, {"auc": 0.2}, bare).promote


# ------------------------------------------------------------------------ registry
def _isolate_mlflow(mp: pytest.MonkeyPatch, uri: str) -> None:
    """Point MLflow at ``uri`` and undo, after the test, the process-wide state that
    ``mlflow.set_tracking_uri``/``set_experiment`` (the CLI's setup_tracking) leave."""
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mp.setattr(tracking_utils, "_tracking_uri", None)
    mp.setattr(fluent, "_active_experiment_id", None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with one run per candidate, each with a tiny logged sklearn model."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=40) > 0).astype(int)
    candidates = {
        "good": GOOD,
        "worse": {**GOOD, "roc_auc_optimism_corrected": 0.69},
        "failing": {**GOOD, "roc_auc_optimism_corrected": 0.81, "roc_auc_ci_low": 0.41},
    }
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        _isolate_mlflow(mp, uri)
        client = MlflowClient()
        experiment = client.create_experiment("registry-test",
                                              artifact_location=(root / "artifacts").as_uri())
        for name, metrics in candidates.items():
            with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
                model = LogisticRegression(C=0.5 + len(runs)).fit(X, y)
                info = mlflow.sklearn.log_model(model, name="model",
                                                pip_requirements=["scikit-learn"])
                mlflow.log_metrics({**metrics, "roc_auc": metrics["roc_auc_optimism_corrected"]})
            runs[name] = {"run_id": run.info.run_id, "model_uri": info.model_uri,
                          "metrics": metrics}
    return {"uri": uri, "runs": runs, "X": X}


@pytest.fixture
def at_store(store, monkeypatch):
    _isolate_mlflow(monkeypatch, store["uri"])
    return store


def _spec(name: str) -> RegistrySpec:
    return SPEC.model_copy(update={"model_name": name})


def _register(store, which: str, spec: RegistrySpec):
    run = store["runs"][which]
    return register_best(run_id=run["run_id"], model_uri=run["model_uri"],
                         metrics=run["metrics"], spec=spec,
                         tags={"family": which, "cohort": "test"})


def test_register_gate_alias_and_promotion_by_hand(at_store):
    import mlflow
    from mlflow import MlflowClient

    spec, client = _spec("csf-responder"), MlflowClient()
    first = _register(at_store, "good", spec)             # no champion yet: the alias moves
    assert (first.version, first.promoted, first.previous_champion) == (1, True, None)
    assert first.reasons == []
    assert client.get_model_version_by_alias(spec.model_name, "champion").version == 1
    v1 = client.get_model_version(spec.model_name, "1")
    assert v1.run_id == at_store["runs"]["good"]["run_id"]
    assert v1.tags["gate"] == "passed" and "gate_failed_reasons" not in v1.tags
    assert v1.tags["family"] == "good" and v1.tags["gate_champion_version"] == "none"
    assert float(v1.tags["roc_auc_optimism_corrected"]) == 0.74
    assert float(v1.tags["calibration_slope"]) == 1.1
    # the logged model knows its registered version (what mlflow.register_model records)
    model_id = at_store["runs"]["good"]["model_uri"].removeprefix("models:/")
    linked = client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    assert '"version": 1' in linked and spec.model_name in linked

    worse = _register(at_store, "worse", spec)            # worse than the champion: stays
    assert (worse.version, worse.promoted, worse.previous_champion) == (2, False, 1)
    assert worse.reasons == ["roc_auc_optimism_corrected 0.69 is worse than the champion's 0.74"]
    v2 = client.get_model_version(spec.model_name, "2")
    assert v2.tags["gate"] == "failed" and v2.tags["gate_champion_version"] == "1"
    assert v2.tags["gate_failed_reasons"] == worse.reasons[0]

    failing = _register(at_store, "failing", spec)        # better, but fails a bound
    assert (failing.version, failing.promoted) == (3, False)
    assert failing.reasons == ["roc_auc_ci_low 0.41 is not above 0.5"]
    assert client.get_model_version(spec.model_name, "3").tags["gate_failed_reasons"] == \
        "roc_auc_ci_low 0.41 is not above 0.5"
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 1}

    done = promote(version=3, reason="bound waived: CI from 31 patients", spec=spec)
    assert (done.version, done.previous_champion) == (3, 1)
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 3}
    v3 = client.get_model_version(spec.model_name, "3")
    assert v3.tags["promoted_by_hand_reason"] == "bound waived: CI from 31 patients"
    assert v3.tags["promoted_by_hand_by"] == done.by and done.by
    assert v3.tags["promoted_by_hand_at"] == done.at and done.at.endswith("+00:00")
    assert v3.tags["promoted_by_hand_previous_champion"] == "1"
    assert v3.tags["gate_failed_reasons"]  # the gate's word stays on record

    # the next run is compared with the champion set by hand (0.81): 0.74 is worse
    again = _register(at_store, "good", spec)
    assert (again.version, again.promoted, again.previous_champion) == (4, False, 3)

    # scoring loads the alias
    model = mlflow.pyfunc.load_model(f"models:/{spec.model_name}@champion")
    assert model.metadata.run_id == at_store["runs"]["failing"]["run_id"]
    assert model.predict(at_store["X"][:5]).shape == (5,)

    with pytest.raises(CsfResponderError, match=r"has no version 9 \(versions: 1, 2, 3, 4\)"):
        promote(version=9, reason="typo", spec=spec)
    with pytest.raises(CsfResponderError, match="needs a reason"):
        promote(version=2, reason="  ", spec=spec)
    with pytest.raises(CsfResponderError, match="'nothing-here' does not exist"):
        promote(version=1, reason="x", spec=_spec("nothing-here"))
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 3}


def test_a_champion_moved_by_another_run_meanwhile_is_the_one_a_candidate_must_beat(
        at_store, monkeypatch):
    """On a tracking server there is no lock: while this run registers its version,
    another one's better candidate takes the alias. Before moving it, this run looks
    again and is gated against that champion, so the better model keeps the alias."""
    from mlflow import MlflowClient

    from csf_responder import registry

    spec, client = _spec("raced"), MlflowClient()
    link = registry._link_logged_model
    other = at_store["runs"]["good"]

    def meanwhile(*args, **kwargs):  # the other run registers and gates, unlocked
        monkeypatch.setattr(registry, "_link_logged_model", link)
        link(*args, **kwargs)
        registry._register_and_gate(client, run_id=other["run_id"],
                                    model_uri=registry._resolve(client, other["model_uri"]),
                                    metrics=other["metrics"], spec=spec, tags=None)

    monkeypatch.setattr(registry, "_link_logged_model", meanwhile)
    worse = _register(at_store, "worse", spec)  # no champion when it looked first
    assert (worse.version, worse.promoted, worse.previous_champion) == (1, False, 2)
    assert worse.reasons == ["roc_auc_optimism_corrected 0.69 is worse than the champion's 0.74"]
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 2}
    tags = client.get_model_version(spec.model_name, "1").tags
    assert tags["gate"] == "failed" and tags["gate_champion_version"] == "2"
    assert tags["gate_failed_reasons"] == worse.reasons[0]

    # and when the champion holds still, one look more changes nothing
    good = _register(at_store, "good", _spec("still"))
    assert (good.version, good.promoted, good.previous_champion) == (1, True, None)


def test_promote_command(at_store):
    from mlflow import MlflowClient

    spec, client = _spec("csf-responder-cli"), MlflowClient()
    assert _register(at_store, "good", spec).promoted
    assert not _register(at_store, "failing", spec).promoted
    runner = CliRunner()
    base = ["promote", "--config", str(CONFIGS / "train.yaml"),
            "--set", f"registry.model_name={spec.model_name}"]
    result = runner.invoke(app, [*base, "--version", "2", "--reason", "reviewed by the board"])
    assert result.exit_code == 0, result.output
    line = " ".join(result.output.split())
    assert line.startswith(f"{spec.model_name} version 2 is now @champion (was version 1); "
                           'reason recorded: "reviewed by the board" by ')
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 2}
    assert client.get_model_version(spec.model_name, "2").tags["promoted_by_hand_reason"] == \
        "reviewed by the board"

    missing = runner.invoke(app, [*base, "--version", "7", "--reason", "x"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    message = " ".join(missing.output.split())
    assert "error:" in message and "has no version 7 (versions: 1, 2)" in message
    assert runner.invoke(app, [*base, "--version", "0", "--reason", "x"]).exit_code == 2
    assert runner.invoke(app, [*base, "--version", "1"]).exit_code == 2  # no reason
    assert client.get_registered_model(spec.model_name).aliases == {"champion": 2}
