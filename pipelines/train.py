"""Recipe: ingest (as `validate`) -> validated models per family -> MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from csf_responder.config import TrainConfig, load_config
from csf_responder.ingest import IngestedCohort, ingest_cohort
from csf_responder.io import cohort_digest
from csf_responder.metrics import MetricCI, proportion_ci
from csf_responder.models import make_pipeline, prevalence_pipeline
from csf_responder.training import (
    FamilyResult,
    delta_auc,
    evaluate_family,
    sample_size,
    training_data,
)
from pipelines.console import Reporter


@dataclass(frozen=True)
class TrainOutcome:
    config: TrainConfig
    cohort: IngestedCohort
    n_labelled: int
    msc_rate: MetricCI
    control_rate: MetricCI
    results: dict[str, FamilyResult]
    references: dict[str, FamilyResult]
    delta_vs_clinical: dict[str, MetricCI]
    sample_size: dict[str, float]
    parent_run_id: str
    tracking_uri: str


def _arm_rate(table: pd.DataFrame, arm: str, level: float) -> MetricCI:
    labelled = table.loc[table["arm"].eq(arm) & table["responder"].notna(), "responder"]
    return proportion_ci(int(labelled.sum()), len(labelled), ci_level=level)


def run(*, config_path: Path, overrides: list[str], reporter: Reporter) -> TrainOutcome:
    from csf_responder import tracking  # MLflow is heavy: loaded only when training runs

    config, resolved = load_config(config_path, TrainConfig, overrides=overrides)
    cohort = ingest_cohort(config.cohort.path, panel=config.panel,
                           indication=config.indication, labels=config.labels,
                           drop_columns=config.ingest.drop_columns)
    reporter.notes(cohort.checked.notes)
    data = training_data(cohort.table, arm="MSC", minimum=config.ingest.min_labelled)
    level, v = config.validation.ci_level, config.validation
    msc_rate = _arm_rate(cohort.table, "MSC", level)
    control_rate = _arm_rate(cohort.table, "control", level)

    uri = tracking.setup_tracking(config.tracking.uri, artifact_root=config.tracking.artifact_root,
                                  experiment=config.tracking.experiment)
    tags = {"cohort": config.cohort.name, "data_digest": cohort_digest(cohort.raw),
            "label_cutoff": str(config.labels.cutoff),
            "label_horizon_months": str(config.labels.horizon_months),
            **tracking.git_state(Path(__file__).parent)}
    def evaluate(name, pipeline, search, advance, explain=True) -> FamilyResult:
        return evaluate_family(
            name, pipeline, data, search=search, n_splits=v.n_splits, n_repeats=v.n_repeats,
            inner_splits=v.inner_splits, n_jobs=v.n_jobs, n_bootstrap=v.n_bootstrap,
            ci_level=level, threshold=v.threshold, n_optimism=v.n_optimism if explain else 0,
            n_permutations=v.n_permutations if explain and v.permutation_test else 0,
            seed=config.seed, explain=explain, on_fold=advance, on_permutation=advance)

    def pipeline_of(spec, csf=True):
        return make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=config.seed, csf=csf)

    steps = (len(config.models) + 2) * v.n_splits * v.n_repeats  # folds, references included
    if v.permutation_test:  # every family and the clinical-only reference
        steps += (len(config.models) + 1) * v.n_permutations
    arms = cohort.table["arm"].value_counts()
    n_excluded = int(cohort.labels["exclusion"].notna().sum())
    tags.update({
        "config_digest": tracking.config_digest(resolved),
        "n_msc": str(int(arms.get("MSC", 0))), "n_control": str(int(arms.get("control", 0))),
        "n_labelled_msc": str(len(data.y)), "n_excluded": str(n_excluded),
        "label_definition": (f"slope improvement >= {config.labels.cutoff:.0%} at "
                             f"{config.labels.horizon_months:g} months vs lead-in"
                             if config.labels.source == "slope"
                             else f"column {config.labels.column} of patients.csv"),
    })
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    digest = tags["data_digest"]

    def log_child(parent_id: str, name: str, result: FamilyResult, role: str) -> tuple[str, str]:
        spec = config.models.get(name, best_spec if name == "clinical_only" else None)
        fixed = spec.params if spec is not None else {}
        with tracking.run(f"{name} {config.cohort.name} {stamp}", parent_id=parent_id) as rid:
            tracking.log_dataset(data.X.assign(responder=data.y), targets="responder",
                                 name=f"{config.cohort.name} labelled MSC", digest=digest,
                                 source=str(config.cohort.path), context="training")
            model_uri = tracking.log_family_run(
                result, data, params={**fixed, **result.params}, metrics={},
                tags={**tags, "family": name, "role": role},
                log_raw_rows=config.tracking.log_raw_rows)
        return rid, model_uri

    # Each family is logged in a background thread while the next one is validated.
    with (tracking.run(f"train {config.cohort.name} {stamp}") as parent_id,
          tracking.BackgroundLogging() as background):
        tracking.log_dataset(cohort.table, name=config.cohort.name, digest=digest,
                             source=str(config.cohort.path), context="cohort")
        with reporter.progress(steps, label="folds and permutations") as advance:
            results = {}
            for name, spec in config.models.items():
                results[name] = evaluate(name, pipeline_of(spec), spec.search, advance)
                background.submit(log_child, parent_id, name, results[name], "model")
            best = max(results, key=lambda name: results[name].auc.estimate)
            best_spec = config.models[best]
            references = {
                "prevalence": evaluate("prevalence", prevalence_pipeline(), {}, advance,
                                       explain=False),
                "clinical_only": evaluate("clinical_only", pipeline_of(best_spec, csf=False),
                                          best_spec.search, advance),
            }
            for name, result in references.items():
                background.submit(log_child, parent_id, name, result, "reference")
        deltas = {name: delta_auc(result, references["clinical_only"], data,
                                  n_bootstrap=v.n_bootstrap, ci_level=level, seed=config.seed)
                  for name, result in {**results, **references}.items()}
        needed = sample_size(results[best], data)
        children = dict(zip([*results, *references], background.wait(), strict=True))
        waited = background.waited_seconds
        for name, (run_id, _) in children.items():
            tracking.log_metrics(run_id, {"delta_auc_vs_clinical": deltas[name]})
        tracking.log_parent_run(
            resolved_config=resolved, tags={**tags, "best_family": best},
            metrics={"n_patients": len(cohort.table), "n_labelled_msc": len(data.y),
                     "n_excluded": n_excluded,
                     "n_rejected_rows": int(cohort.checked.accounting["rows_rejected"].sum()),
                     "msc_responder_rate": msc_rate.estimate,
                     "control_responder_rate": control_rate.estimate,
                     "seconds_waiting_for_logging": waited,
                     **{k: float(x) for k, x in needed.items()}},
            tables={"rejects": cohort.rejects, "labels": cohort.labels,
                    "qc_replicates": cohort.checked.qc,
                    "accounting": cohort.checked.accounting})
    return TrainOutcome(config, cohort, len(data.y), msc_rate, control_rate, results,
                        references, deltas, needed, parent_id, uri)
