"""Recipe: ingest (as `validate`) -> validated models per family -> MLflow."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from csf_responder import figures, registry
from csf_responder.config import ModelSpec, TrainConfig, load_config
from csf_responder.execution import execution
from csf_responder.ingest import IngestedCohort, ingest_cohort
from csf_responder.io import cohort_digest
from csf_responder.metrics import MetricCI, proportion_ci
from csf_responder.models import make_pipeline, prevalence_pipeline
from csf_responder.registry import RegistryOutcome
from csf_responder.report import (
    Counts,
    FamilyRow,
    LabelDefinition,
    ReportInputs,
    SampleSize,
    ValidationSettings,
    render_report,
    write_report,
)
from csf_responder.scoring import model_contract
from csf_responder.training import (
    FamilyResult,
    TrainingData,
    best_family,
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
    best: str
    report: Path
    registered: RegistryOutcome


def _arm_rate(table: pd.DataFrame, arm: str, level: float) -> MetricCI:
    labelled = table.loc[table["arm"].eq(arm) & table["responder"].notna(), "responder"]
    return proportion_ci(int(labelled.sum()), len(labelled), ci_level=level)


#: Figures of the best family in the report: (section, figure name, caption).
REPORT_FIGURES = (
    ("performance", "roc", "ROC curve, out of fold, with its bootstrap band"),
    ("performance", "pr", "Precision-recall curve, out of fold"),
    ("performance", "calibration", "Calibration of the out-of-fold probabilities"),
    ("performance", "decision_curve", "Decision curve: net benefit vs treat all / none"),
    ("performance", "confusion_matrix", "Confusion matrix at the threshold"),
    ("explanations", "shap_beeswarm", "SHAP values of the final model"),
    ("explanations", "shap_bar", "Mean |SHAP| per feature"),
    ("explanations", "shap_dependence", "SHAP dependence of the TGF-beta1/MCP-1 log ratio"),
)


def _report_inputs(config, cohort, data, tags, stamp, results, references, deltas, needed,
                   best, rates, children, comparison) -> ReportInputs:
    table, v = cohort.table, config.validation
    labelled = table[table["responder"].notna()]
    accounting = cohort.checked.accounting
    rows = [FamilyRow(
        name=name, role="model" if name in results else "reference",
        hyperparameters=result.params,
        metrics={**result.metrics, "delta_auc_vs_clinical": deltas[name]},
        optimism_corrected={k.removesuffix("_optimism_corrected"): x
                            for k, x in result.optimism.items()
                            if k.endswith("_optimism_corrected")},
        permutation_p=None if np.isnan(result.permutation_p) else result.permutation_p)
        for name, result in {**results, **references}.items()]
    pictures = children[best].figures
    shown = {}
    for section, name, caption in REPORT_FIGURES:
        if name in pictures:
            shown.setdefault(section, []).append((f"{best}: {caption}", pictures[name]))
    shown["development"] = [("Families and references side by side", comparison)]
    return ReportInputs(
        title=f"Responder models: {config.cohort.name}", date=stamp,
        cohort=config.cohort.name, data_digest=tags["data_digest"],
        config_digest=tags["config_digest"], git_commit=tags["git_commit"],
        counts=Counts(
            patients_per_arm=table["arm"].value_counts().to_dict(),
            labelled_per_arm=labelled["arm"].value_counts().to_dict(),
            excluded=cohort.labels["exclusion"].value_counts().to_dict(),
            rejected_rows=dict(zip(accounting["file"], accounting["rows_rejected"],
                                   strict=True))),
        label=LabelDefinition(source=config.labels.source, cutoff=config.labels.cutoff,
                              horizon_months=config.labels.horizon_months,
                              description=tags["label_definition"]),
        censoring=config.features.censoring, plate_correction=config.features.plate_correction,
        analytes=list(config.features.analytes),
        features=list(results[best].model[:-1].get_feature_names_out()),
        validation=ValidationSettings(
            outer_splits=v.n_splits, repeats=v.n_repeats, inner_splits=v.inner_splits,
            n_bootstrap=v.n_bootstrap, ci_level=v.ci_level, n_optimism=v.n_optimism,
            permutation_test=v.permutation_test, n_permutations=v.n_permutations,
            threshold=v.threshold),
        families=rows, best_family=best,
        sample_size=SampleSize(riley_minimum_n=int(needed["riley_minimum_n"]),
                               n_parameters=int(needed["n_parameters"]),
                               n_labelled=len(data.y),
                               anticipated_r2_cs=needed["anticipated_r2_cs"]),
        responder_rate=rates, figures=shown, simulated=config.cohort.simulated)


#: Called as each family or reference is validated: (name, result, role, its spec).
OnResult = Callable[[str, FamilyResult, str, ModelSpec | None], None]


@dataclass(frozen=True)
class Development:
    """What training computes, before anything is logged."""

    results: dict[str, FamilyResult]
    references: dict[str, FamilyResult]
    best: str
    deltas: dict[str, MetricCI]
    sample_size: dict[str, float]


def develop(config: TrainConfig, data: TrainingData, *, reporter: Reporter,
            on_result: OnResult | None = None) -> Development:
    """Validate every family, pick the best, then the prevalence and clinical-only
    references; AUC deltas vs clinical-only and the sample size check.

    ``on_result(name, result, role, spec)`` is called as each family or reference is
    done (training hands it to background logging); nothing here touches MLflow.
    """
    v, level = config.validation, config.validation.ci_level
    on_result = on_result or (lambda *_: None)

    def evaluate(name, pipeline, search, advance, explain=True) -> FamilyResult:
        return evaluate_family(
            name, pipeline, data, search=search, n_splits=v.n_splits, n_repeats=v.n_repeats,
            inner_splits=v.inner_splits, n_jobs=v.n_jobs, n_bootstrap=v.n_bootstrap,
            ci_level=level, threshold=v.threshold, n_optimism=v.n_optimism if explain else 0,
            n_permutations=v.n_permutations if explain and v.permutation_test else 0,
            seed=config.seed, explain=explain, n_interval_models=v.n_interval_models,
            on_fold=advance, on_permutation=advance)

    def pipeline_of(spec, csf=True):
        return make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=config.seed, csf=csf)

    steps = (len(config.models) + 2) * v.n_splits * v.n_repeats  # folds, references included
    if v.permutation_test:  # every family and the clinical-only reference
        steps += (len(config.models) + 1) * v.n_permutations
    with execution(config.execution), reporter.progress(
            steps, label="folds and permutations") as advance:
        results = {}
        for name, spec in config.models.items():
            results[name] = evaluate(name, pipeline_of(spec), spec.search, advance)
            on_result(name, results[name], "model", spec)
        best = best_family(results, config.registry.primary_metric)
        best_spec = config.models[best]
        references = {
            "prevalence": evaluate("prevalence", prevalence_pipeline(), {}, advance,
                                   explain=False),
            "clinical_only": evaluate("clinical_only", pipeline_of(best_spec, csf=False),
                                      best_spec.search, advance),
        }
        on_result("prevalence", references["prevalence"], "reference", None)
        on_result("clinical_only", references["clinical_only"], "reference", best_spec)
    deltas = {name: delta_auc(result, references["clinical_only"], data,
                              n_bootstrap=v.n_bootstrap, ci_level=level, seed=config.seed)
              for name, result in {**results, **references}.items()}
    return Development(results, references, best, deltas, sample_size(results[best], data))


def run(*, config_path: Path, overrides: list[str], reporter: Reporter,
        worker: Executor | None = None) -> TrainOutcome:
    """Train and log; MLflow's work goes to ``worker`` (see
    :func:`csf_responder.background.start_worker`), or to one started here."""
    from csf_responder import tracking  # MLflow is heavy: loaded only when training runs

    started = time.perf_counter()
    config, resolved = load_config(config_path, TrainConfig, overrides=overrides)
    cohort = ingest_cohort(config.cohort.path, panel=config.panel,
                           indication=config.indication, labels=config.labels,
                           drop_columns=config.ingest.drop_columns)
    reporter.notes(cohort.checked.notes)
    data = training_data(cohort.table, arm="MSC", minimum=config.ingest.min_labelled)
    level, v = config.validation.ci_level, config.validation
    msc_rate = _arm_rate(cohort.table, "MSC", level)
    control_rate = _arm_rate(cohort.table, "control", level)

    tags = {"cohort": config.cohort.name, "data_digest": cohort_digest(cohort.raw),
            "label_cutoff": str(config.labels.cutoff),
            "label_horizon_months": str(config.labels.horizon_months),
            **tracking.git_state(Path(__file__).parent)}
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
    now = datetime.now()
    stamp, file_stamp = now.strftime("%Y-%m-%d %H:%M"), now.strftime("%Y-%m-%d-%H%M%S")
    digest = tags["data_digest"]
    contract = model_contract(config.panel, config.indication, config.labels)

    def child(name: str, result: FamilyResult, role: str,
              spec: ModelSpec | None) -> tracking.ChildRun:
        return tracking.ChildRun(
            name=f"{name} {config.cohort.name} {stamp}", result=result, data=data,
            params={**(spec.params if spec else {}), **result.params},
            tags={**tags, "family": name, "role": role},
            dataset={"name": f"{config.cohort.name} labelled MSC", "digest": digest,
                     "source": str(config.cohort.path)},
            figures_dir=Path(scratch) / name, threshold=v.threshold, ci_level=level,
            log_raw_rows=config.tracking.log_raw_rows, contract=contract)

    logging: dict[str, Future[tracking.LoggedChild]] = {}

    def log_family(name: str, result: FamilyResult, role: str, spec: ModelSpec | None) -> None:
        logging[name] = background.submit(tracking.log_child_run,
                                          child(name, result, role, spec))

    # MLflow works in a background process (the parent run, then each family's child run
    # as soon as it is validated) while this one validates the next family. It finishes
    # its jobs before the scratch folder, which holds the figures, is removed.
    uri = tracking.resolve_uri(config.tracking.uri)
    with (tempfile.TemporaryDirectory() as scratch,
          tracking.BackgroundRun(f"train {config.cohort.name} {stamp}", uri=uri,
                                 artifact_root=config.tracking.artifact_root,
                                 experiment=config.tracking.experiment,
                                 worker=worker) as background):
        background.submit(tracking.log_dataset, cohort.table, name=config.cohort.name,
                          digest=digest, source=str(config.cohort.path), context="cohort")
        background.submit(
            tracking.log_parent_run, resolved_config=resolved, tags=tags,
            metrics={"n_patients": len(cohort.table), "n_labelled_msc": len(data.y),
                     "n_excluded": n_excluded,
                     "n_rejected_rows": int(cohort.checked.accounting["rows_rejected"].sum()),
                     "msc_responder_rate": msc_rate.estimate,
                     "control_responder_rate": control_rate.estimate},
            tables={"rejects": cohort.rejects, "labels": cohort.labels,
                    "qc_replicates": cohort.checked.qc,
                    "accounting": cohort.checked.accounting})
        developing = time.perf_counter()
        developed = develop(config, data, reporter=reporter, on_result=log_family)
        results, references, best = developed.results, developed.references, developed.best
        deltas, needed = developed.deltas, developed.sample_size
        developed_at = time.perf_counter()
        comparison = figures.family_comparison_plot(
            [(name, r.auc, r.metrics["calibration_slope"])
             for name, r in {**results, **references}.items()],
            path=Path(scratch) / "family_comparison.png",
            title=f"Model families on {len(data.y)} labelled MSC patients")
        background.wait()
        children = {name: job.result() for name, job in logging.items()}
        parent_id = background.run_id
        for name, logged in children.items():
            background.submit(tracking.log_metrics, logged.run_id,
                              {"delta_auc_vs_clinical": deltas[name]})
        registered = background.call(
            registry.register_best,
            run_id=children[best].run_id, model_uri=children[best].model_uri,
            metrics={**results[best].metric_values(),
                     "delta_auc_vs_clinical": deltas[best].estimate},
            spec=config.registry,
            tags={"family": best, "parent_run_id": parent_id, "cohort": config.cohort.name,
                  **{k: tags[k] for k in ("data_digest", "config_digest", "git_commit")}})
        report = write_report(render_report(_report_inputs(
            config, cohort, data, tags, stamp, results, references, deltas, needed, best,
            {"MSC": msc_rate, "control": control_rate}, children, comparison)),
            config.tracking.report_dir, f"{config.cohort.name}-{file_stamp}")
        background.submit(
            tracking.log_parent_run,
            tags={"best_family": best, "registered_version": str(registered.version),
                  "champion_moved": str(registered.promoted).lower()},
            metrics={k: float(x) for k, x in needed.items()},
            files={"figures": [comparison], "report": [report]})
        # Where the wall time went (make bench reads these): developing is validation,
        # with MLflow working alongside; waiting is the time training then waited
        # for MLflow; the rest of the total is ingest, the comparison figure and the report.
        background.submit(tracking.log_metrics, parent_id, {
            "seconds_total": time.perf_counter() - started,
            "seconds_developing": developed_at - developing,
            "seconds_waiting_for_tracking": background.waited_seconds})
    return TrainOutcome(config, cohort, len(data.y), msc_rate, control_rate, results,
                        references, deltas, needed, parent_id, uri, best, report,
                        registered)
