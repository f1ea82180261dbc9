"""Recipe: cohort files -> contract -> labels -> wide table -> validated models -> MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from csf_responder.cohort import cohort_table
from csf_responder.config import TrainConfig, load_config
from csf_responder.contracts import check_cohort
from csf_responder.io import cohort_digest, read_cohort
from csf_responder.labels import derive_labels, exclusion_rejects
from csf_responder.models import make_pipeline
from csf_responder.training import FamilyResult, evaluate_family, training_data
from csf_responder.validation import MetricCI, proportion_ci
from pipelines.console import Reporter


@dataclass(frozen=True)
class TrainOutcome:
    config: TrainConfig
    n_patients: int
    n_labelled: int
    exclusions: pd.Series
    n_rejected_rows: int
    msc_rate: MetricCI
    control_rate: MetricCI
    results: dict[str, FamilyResult]
    parent_run_id: str
    tracking_uri: str
    experiment: str


def _arm_rate(labels: pd.DataFrame, patients: pd.DataFrame, arm: str, level: float) -> MetricCI:
    labelled = labels[patients["arm"].eq(arm).to_numpy() & labels["responder"].notna().to_numpy()]
    return proportion_ci(int(labelled["responder"].sum()), len(labelled), ci_level=level)


def run(*, config_path: Path, overrides: list[str], reporter: Reporter) -> TrainOutcome:
    from csf_responder import tracking  # MLflow is heavy: loaded only when training runs

    config, resolved = load_config(config_path, TrainConfig, overrides=overrides)
    raw = read_cohort(config.cohort.path)
    checked = check_cohort(raw, analytes=config.panel.analytes,
                           timepoints=config.panel.timepoints)
    reporter.notes(checked.notes)
    labels = derive_labels(checked.alsfrs, subjects=checked.patients["subject_id"],
                           **config.labels.model_dump())
    table = cohort_table(checked.patients, labels, checked.csf,
                         analytes=config.panel.analytes, timepoints=config.panel.timepoints)
    data = training_data(table, labels, arm="MSC")
    rejects = pd.concat([checked.rejects,
                         exclusion_rejects(labels, file=raw.file("alsfrs.csv"))],
                        ignore_index=True)
    level = config.validation.ci_level
    msc_rate = _arm_rate(labels, checked.patients, "MSC", level)
    control_rate = _arm_rate(labels, checked.patients, "control", level)

    uri = tracking.setup_tracking(config.tracking.uri, artifact_root=config.tracking.artifact_root,
                                  experiment=config.tracking.experiment)
    tags = {"cohort": config.cohort.name, "data_digest": cohort_digest(raw.directory),
            "label_cutoff": str(config.labels.cutoff),
            "label_horizon_months": str(config.labels.horizon_months),
            **tracking.git_state(Path(__file__).parent)}
    results: dict[str, FamilyResult] = {}
    v = config.validation
    with tracking.run(f"train {config.cohort.name}") as parent_id:
        tracking.log_parent_run(
            resolved_config=resolved, tags=tags,
            metrics={"n_patients": len(table), "n_labelled_msc": len(data.y),
                     "n_excluded": int(labels["exclusion"].notna().sum()),
                     "n_rejected_rows": len(checked.rejects),
                     "msc_responder_rate": msc_rate.estimate,
                     "control_responder_rate": control_rate.estimate},
            tables={"rejects": rejects, "labels": labels})
        with reporter.progress(len(config.models) * v.n_splits * v.n_repeats) as advance:
            for name, spec in config.models.items():
                pipeline = make_pipeline(spec, panel=config.panel, features=config.features,
                                         seed=config.seed)
                result = evaluate_family(
                    name, pipeline, data, n_splits=v.n_splits, n_repeats=v.n_repeats,
                    n_bootstrap=v.n_bootstrap, ci_level=level, seed=config.seed,
                    on_fold=advance)
                with tracking.run(f"{name} {config.cohort.name}", nested=True):
                    tracking.log_family_run(result, data, params=spec.params,
                                            tags={**tags, "family": name})
                results[name] = result
    return TrainOutcome(
        config=config, n_patients=len(table), n_labelled=len(data.y),
        exclusions=labels["exclusion"].value_counts(), n_rejected_rows=len(checked.rejects),
        msc_rate=msc_rate, control_rate=control_rate, results=results,
        parent_run_id=parent_id, tracking_uri=uri, experiment=config.tracking.experiment)
