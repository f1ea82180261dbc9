"""The release gate over the MLflow model registry.

Every training run registers its best family as a new version of
``registry.model_name``; the alias (``registry.alias``, what scoring loads as
``models:/<name>@<alias>``) moves to it only when :func:`gate` says so. A version the
gate stops says why in its tags, and :func:`promote` moves the alias by hand, with a
recorded reason. Only :class:`mlflow.MlflowClient` calls are used, so a local SQLite
store and an HTTP tracking server behave alike; the store is the one MLflow points at
(:func:`csf_responder.tracking.setup_tracking`).
"""

from __future__ import annotations

import getpass
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from csf_responder.config import RegistrySpec
from csf_responder.errors import CsfResponderError

__all__ = [
    "GateDecision",
    "PromotionOutcome",
    "RegistryOutcome",
    "gate",
    "promote",
    "register_best",
]

#: Version tag keys written by :func:`register_best` and :func:`promote`.
TAG_GATE = "gate"                                   # passed | failed
TAG_FAILED = "gate_failed_reasons"                  # "; "-joined reasons, when failed
TAG_COMPARED = "gate_champion_version"              # the champion it was compared with
TAG_PRIMARY = "gate_primary_metric"
TAG_HAND_REASON = "promoted_by_hand_reason"
TAG_HAND_BY = "promoted_by_hand_by"
TAG_HAND_AT = "promoted_by_hand_at"
TAG_HAND_PREVIOUS = "promoted_by_hand_previous_champion"


@dataclass(frozen=True)
class GateDecision:
    """Whether the alias may move to a candidate, and every reason it may not."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RegistryOutcome:
    """What :func:`register_best` did: the new version and whether it became the alias."""

    model_name: str
    alias: str
    version: int
    promoted: bool
    reasons: list[str]
    previous_champion: int | None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


@dataclass(frozen=True)
class PromotionOutcome:
    """What :func:`promote` did: which version holds the alias now, and why."""

    model_name: str
    alias: str
    version: int
    previous_champion: int | None
    reason: str
    by: str
    at: str


# --------------------------------------------------------------------------- gate
def _number(value: Any) -> str:
    return f"{value:.4g}"


def _usable(metrics: dict[str, float], name: str) -> tuple[float | None, str | None]:
    """The metric as a float, or why it cannot be judged (missing, NaN)."""
    value = metrics.get(name)
    if value is None:
        return None, "is missing"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"is not a number ({value!r})"
    if math.isnan(value):
        return None, "is NaN (undefined)"
    return value, None


def gate(candidate: dict[str, float], champion: dict[str, float] | None,
         spec: RegistrySpec) -> GateDecision:
    """Decide whether ``candidate`` may take the alias from ``champion``.

    The candidate passes when every bound of ``spec.thresholds`` holds strictly
    (``above < value < below``) and it is not worse than the champion on
    ``spec.primary_metric`` (higher is better; a tie passes). A missing or NaN metric
    fails its check. With no champion only the bounds (and the candidate having the
    primary metric) count; a champion without a usable primary metric cannot be compared
    with and stops the candidate, so that only a person (:func:`promote`) replaces it.
    """
    reasons: list[str] = []
    for name, bound in spec.thresholds.items():
        value, problem = _usable(candidate, name)
        if problem is not None:
            reasons.append(f"{name} {problem}")
            continue
        if bound.above is not None and not value > bound.above:
            reasons.append(f"{name} {_number(value)} is not above {_number(bound.above)}")
        if bound.below is not None and not value < bound.below:
            reasons.append(f"{name} {_number(value)} is not below {_number(bound.below)}")
    primary = spec.primary_metric
    value, problem = _usable(candidate, primary)
    if problem is not None:
        reasons.append(f"{primary} (the primary metric) {problem}")
    elif champion is not None:
        best, champion_problem = _usable(champion, primary)
        if champion_problem is not None:
            reasons.append(f"the champion's {primary} {champion_problem}: cannot compare, "
                           "promote by hand")
        elif value < best:
            reasons.append(f"{primary} {_number(value)} is worse than the champion's "
                           f"{_number(best)}")
    return GateDecision(promote=not reasons, reasons=reasons)


# ----------------------------------------------------------------------- registry
def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _is_missing(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _registered_model(client, name: str, *, create: bool):
    """The registered model ``name`` (created when missing and ``create``), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):
            raise
    if not create:
        return None
    try:
        return client.create_registered_model(
            name, description="csf-responder: P(good responder to intrathecal BM-MSC) from "
                              "CSF cytokines and clinical data")
    except MlflowException as exc:  # created meanwhile by another run
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        return client.get_registered_model(name)


def _champion_version(registered, alias: str) -> int | None:
    if registered is None:
        return None
    aliases = registered.aliases or {}
    version = aliases.get(alias)
    return int(version) if version is not None else None


def _version_metrics(client, version) -> dict[str, float]:
    """Metrics of the run a version was registered from; its own numeric tags otherwise
    (a run since deleted, or a version registered without a run)."""
    from mlflow.exceptions import MlflowException

    if version.run_id:
        try:
            return dict(client.get_run(version.run_id).data.metrics)
        except MlflowException as exc:
            if not _is_missing(exc):
                raise
    metrics = {}
    for key, value in (version.tags or {}).items():
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            continue
    return metrics


def _model_id(model_uri: str) -> str | None:
    """``models:/m-<id>`` (what ``log_model`` returns in MLflow 3) -> ``m-<id>``."""
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri and "/" not in rest and "@" not in rest and rest.startswith("m-"):
        return rest
    return None


def _resolve(client, model_uri: str) -> str:
    """``runs:/<run>/<name>`` -> ``models:/<model id>`` of the model that run logged under
    that name: in MLflow 3 a logged model's files live apart from its run's artifacts, so
    a version whose source is a runs:/ URI would point at nothing."""
    if not model_uri.startswith("runs:/"):
        return model_uri
    run_id, _, name = model_uri.removeprefix("runs:/").partition("/")
    run = client.get_run(run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name.strip('/')}'")
    if len(found) != 1:
        raise CsfResponderError(f"{model_uri}: run {run_id} logged {len(found)} models named "
                                f"'{name}'; give the models:/m-... URI log_model returned")
    return f"models:/{found[0].model_id}"


def _link_logged_model(client, model_id: str | None, name: str, version: int) -> None:
    """Record the version on the logged model (tag ``mlflow.modelVersions``), as
    ``mlflow.register_model`` does: the store keeps no model id with a version, and the
    UI's model page lists registered versions from this tag."""
    import json

    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    if model_id is None:
        return
    try:
        model = client.get_logged_model(model_id)
        linked = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
        linked.append({"name": name, "version": version})
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})
    except MlflowException as exc:
        if not _is_missing(exc):
            raise


def register_best(*, run_id: str, model_uri: str, metrics: dict[str, float],
                  spec: RegistrySpec, tags: dict[str, str] | None = None) -> RegistryOutcome:
    """Register ``model_uri`` as a new version of ``spec.model_name`` and gate it.

    ``model_uri`` is what ``log_model`` returned (``models:/m-<id>``; a
    ``runs:/<run>/model`` URI is resolved to it). The version is linked to ``run_id`` and
    tagged with ``tags``, the candidate's primary and threshold metrics and the gate's
    decision (``gate``: passed|failed, ``gate_champion_version``, ``gate_failed_reasons``).
    The champion is the version holding ``spec.alias``; its metrics are read from its run.
    The alias moves to the new version only when :func:`gate` passes.

    On a local SQLite store, runs registering at the same time take turns (reading the
    champion, creating the version and moving the alias is one step under
    :func:`csf_responder.tracking.store_lock`), so a candidate is always gated against
    the champion it replaces. A tracking server gives no such lock: a candidate about to
    take the alias looks again once its version is made and is gated again against a
    champion that another run put there meanwhile; only two moves within milliseconds of
    each other still race (the later wins). Versions are tagged with the champion they
    were compared with.
    """
    from mlflow import get_tracking_uri

    from csf_responder.tracking import store_lock

    client = _client()
    model_uri = _resolve(client, model_uri)
    with store_lock(get_tracking_uri()):
        return _register_and_gate(client, run_id=run_id, model_uri=model_uri,
                                  metrics=metrics, spec=spec, tags=tags)


#: How many times a candidate is gated again when the champion changed meanwhile.
REGATES = 5


def _gate_against_champion(client, metrics: dict[str, float], spec: RegistrySpec
                           ) -> tuple[int | None, GateDecision]:
    """The version holding the alias now (None: none) and the gate's word on ``metrics``
    against it."""
    previous = _champion_version(_registered_model(client, spec.model_name, create=False),
                                 spec.alias)
    champion = None
    if previous is not None:
        champion = _version_metrics(client, client.get_model_version(spec.model_name,
                                                                     str(previous)))
    return previous, gate(metrics, champion, spec)


def _gate_tags(previous: int | None, decision: GateDecision) -> dict[str, str]:
    tags = {TAG_GATE: "passed" if decision.promote else "failed",
            TAG_COMPARED: str(previous) if previous is not None else "none"}
    if not decision.promote:
        tags[TAG_FAILED] = "; ".join(decision.reasons)
    return tags


def _register_and_gate(client, *, run_id: str, model_uri: str, metrics: dict[str, float],
                       spec: RegistrySpec, tags: dict[str, str] | None) -> RegistryOutcome:
    _registered_model(client, spec.model_name, create=True)
    previous, decision = _gate_against_champion(client, metrics, spec)

    key_metrics = [spec.primary_metric, *(m for m in spec.thresholds if m != spec.primary_metric)]
    version_tags = {**(tags or {}),
                    **{name: str(metrics[name]) for name in key_metrics if name in metrics},
                    TAG_PRIMARY: spec.primary_metric, **_gate_tags(previous, decision)}
    version = client.create_model_version(
        spec.model_name, source=model_uri, run_id=run_id, tags=version_tags,
        model_id=_model_id(model_uri),
        description=f"registered from run {run_id}")
    number = int(version.version)
    _link_logged_model(client, _model_id(model_uri), spec.model_name, number)
    # Without a lock (a tracking server), another run may have moved the alias since it
    # was read: a candidate about to take it is gated again against the champion it would
    # now replace, until that holds still, so two runs race only in the moment between
    # this last look and the move, not over the whole registration. (A candidate that
    # failed moves nothing: its tags say what it was compared with.)
    for _ in range(REGATES):
        if not decision.promote:
            break
        now, again = _gate_against_champion(client, metrics, spec)
        if now == previous:
            break
        previous, decision = now, again
        for key, value in _gate_tags(previous, decision).items():
            client.set_model_version_tag(spec.model_name, str(number), key, value)
    if decision.promote:
        client.set_registered_model_alias(spec.model_name, spec.alias, str(number))
    return RegistryOutcome(spec.model_name, spec.alias, number, decision.promote,
                           list(decision.reasons), previous)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def promote(*, version: int, reason: str, spec: RegistrySpec) -> PromotionOutcome:
    """Move ``spec.alias`` to ``version`` by hand, whatever the gate said.

    The reason, who (the login name) and when (UTC) are
    recorded as tags of the version (``promoted_by_hand_reason``, ``promoted_by_hand_by``,
    ``promoted_by_hand_at``, ``promoted_by_hand_previous_champion``). A version that does
    not exist, or an empty reason, is a :class:`CsfResponderError`.
    """
    from mlflow.exceptions import MlflowException

    if not reason.strip():
        raise CsfResponderError("promote needs a reason (--reason \"...\"): it is recorded "
                                "with the version")
    client = _client()
    registered = _registered_model(client, spec.model_name, create=False)
    if registered is None:
        raise CsfResponderError(f"registered model '{spec.model_name}' does not exist in this "
                                "store: train first (make train)")
    try:
        client.get_model_version(spec.model_name, str(version))
    except MlflowException as exc:
        if not _is_missing(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        known = sorted(int(v.version) for v in
                       client.search_model_versions(f"name = '{spec.model_name}'"))
        listed = ", ".join(map(str, known)) if known else "none"
        raise CsfResponderError(f"'{spec.model_name}' has no version {version} "
                                f"(versions: {listed})") from None
    previous = _champion_version(registered, spec.alias)
    by, at = _who(), datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in ((TAG_HAND_REASON, reason.strip()), (TAG_HAND_BY, by),
                       (TAG_HAND_AT, at),
                       (TAG_HAND_PREVIOUS, str(previous) if previous is not None else "none")):
        client.set_model_version_tag(spec.model_name, str(version), key, value)
    client.set_registered_model_alias(spec.model_name, spec.alias, str(version))
    return PromotionOutcome(spec.model_name, spec.alias, version, previous, reason.strip(),
                            by, at)
