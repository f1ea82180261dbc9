"""Recipe: ingest both arms -> cross-fitted individual benefit (interaction model and
T-learners) -> prognostic vs predictive features -> Qini and benefit calibration ->
enrichment planning and study size -> MLflow and an HTML report."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from csf_responder import effect, enrichment, figures
from csf_responder.cohort import csf_columns
from csf_responder.config import EffectConfig, SimulationConfig, load_config
from csf_responder.errors import CohortError
from csf_responder.ingest import IngestedCohort, ingest_cohort
from csf_responder.io import cohort_digest, write_cohort
from csf_responder.labels import change_at_horizon
from csf_responder.metrics import MetricCI
from csf_responder.models import feature_steps, make_classifier, make_regressor
from csf_responder.report import EffectReportInputs, render_effect_report, write_report
from csf_responder.scoring import describe_feature
from csf_responder.simulate import simulate_trial
from pipelines.console import Reporter

#: Outcomes of the estimators, in the order they run.
OUTCOMES = ("slope", "change", "responder")


@dataclass(frozen=True)
class EffectOutcome:
    config: EffectConfig
    cohort: IngestedCohort
    data: effect.EffectData
    csf_per_arm: dict[str, int]
    csf_separable: bool
    average: dict[str, MetricCI]             # outcome -> treated minus control
    estimates: dict[tuple[str, str], effect.BenefitEstimate]  # (estimator, outcome)
    qini: dict[str, MetricCI]                # estimator -> Qini area, primary outcome
    roles: pd.DataFrame
    summary: str
    limits: list[str]
    enrichment: pd.DataFrame
    learning_curve: pd.DataFrame
    riley: dict[str, float]
    parent_run_id: str
    tracking_uri: str
    report: Path


def _features(config: EffectConfig, *, csf: bool) -> Pipeline:
    f = config.features
    return Pipeline(feature_steps(
        panel=config.panel, indication=config.indication,
        analytes=f.analytes if csf else (), ratios=f.ratios if csf else (),
        clinical=f.clinical, censoring=f.censoring, plate_correction=f.plate_correction,
        levels=config.panel.timepoints[:1])).set_output(transform="pandas")


def _labels(config: EffectConfig, steps: Pipeline, X: pd.DataFrame) -> dict[str, str]:
    """Readable label of each feature (``TGF-beta1/MCP-1 ratio at baseline``)."""
    names = steps.fit(X).get_feature_names_out()
    analytes = {a.column_key: (a.name, a.unit) for a in config.panel.analytes}
    covariates = {n: c.unit or "" for n, c in config.indication.covariates.items()
                  if c.type == "number"}
    return {str(n): describe_feature(str(n), analytes=analytes, covariates=covariates,
                                     score_name=config.indication.score.name,
                                     timepoints=config.panel.timepoints)["label"]
            for n in names}


def _learner(config: EffectConfig, name: str):
    spec = config.learners[name]

    def learner(kind: str):
        if kind == "binary":
            return make_classifier(spec, seed=config.seed), spec.search
        return make_regressor(spec, seed=config.seed)
    return learner


def _simulated_studies(config: EffectConfig, config_dir: Path):
    """Simulated treated-only studies for the learning curve, through the same ingest."""
    lc = config.learning_curve
    sim, _ = load_config(config_dir / lc.simulation, SimulationConfig)
    for size in lc.sizes:
        for repeat in range(lc.repeats):
            study = sim.model_copy(update={"seed": config.seed * 1000 + size * 10 + repeat,
                                           "n_msc": size, "n_control": 0})
            trial = simulate_trial(study)
            with tempfile.TemporaryDirectory() as tmp:
                write_cohort(tmp, patients=trial.patients, visits=trial.alsfrs,
                             csf=trial.csf, visits_file=config.indication.visits_file)
                cohort = ingest_cohort(tmp, panel=config.panel, indication=config.indication,
                                       labels=config.labels, drop_columns=[])
            labelled = cohort.table[cohort.table["responder"].notna()]
            yield size, repeat, labelled, labelled["responder"].astype(int).to_numpy()


def run(*, config_path: Path, overrides: list[str], reporter: Reporter) -> EffectOutcome:
    from csf_responder import tracking  # MLflow is heavy: loaded only when the run logs

    started = time.perf_counter()
    config, resolved = load_config(config_path, EffectConfig, overrides=overrides)
    e, en = config.effect, config.enrichment
    cohort = ingest_cohort(config.cohort.path, panel=config.panel,
                           indication=config.indication, labels=config.labels,
                           drop_columns=config.ingest.drop_columns)
    reporter.notes(cohort.checked.notes)
    change = change_at_horizon(cohort.checked.visits, cohort.labels,
                               horizon_months=config.labels.horizon_months,
                               horizon_tolerance_days=config.labels.horizon_tolerance_days)
    data = effect.effect_data(cohort.table, cohort.labels, change, treated_arm=e.treated_arm,
                              control_arm=e.control_arm,
                              higher_is_better=config.indication.score.higher_is_better)
    primary = data.outcome(e.outcome)
    n_with = {arm: int(np.isfinite(primary[data.treated == treated]).sum())
              for arm, treated in ((e.treated_arm, True), (e.control_arm, False))}
    if min(n_with.values()) < 2 or sum(n_with.values()) < config.ingest.min_labelled:
        raise CohortError(f"{config.cohort.path}: the effect analysis needs patients with "
                          f"the {e.outcome} outcome in both arms (found {n_with}; at least "
                          f"{config.ingest.min_labelled} in all)")

    # CSF features can be called prognostic or predictive only with CSF in controls
    keys = {a.name: a.column_key for a in config.panel.analytes}
    used = {*config.features.analytes, *(n for pair in config.features.ratios for n in pair)}
    baseline = csf_columns([keys[n] for n in used], config.panel.timepoints[:1])
    csf_per_arm = effect.csf_patients_per_arm(data.X, baseline) if baseline else {}
    separable = bool(baseline) and csf_per_arm.get(e.control_arm, 0) >= e.min_csf_controls
    limits = []
    if baseline and not separable:
        limits.append(
            f"CSF was measured in {csf_per_arm.get(e.control_arm, 0)} of "
            f"{int((~data.treated).sum())} {e.control_arm} patients (fewer than "
            f"{e.min_csf_controls}): without CSF in controls the CSF biomarkers cannot be "
            f"separated into prognostic and predictive, so this analysis uses the clinical "
            f"covariates only. A trial with CSF in both arms (a sham lumbar puncture in "
            f"controls) is needed to tell whether CSF predicts who benefits.")
    steps = _features(config, csf=separable)
    labels = _labels(config, steps, data.X)

    # cross-fitted benefit of each estimator on each outcome
    jobs = [("interaction", o) for o in OUTCOMES if effect.OUTCOME_KINDS[o] == "continuous"]
    jobs += [(name, o) for name in config.learners for o in OUTCOMES]
    estimates = {}
    with reporter.progress(len(jobs), label="benefit estimators x outcomes") as advance:
        for name, outcome in jobs:
            y = data.outcome(outcome)
            common = dict(features=steps, outcome=outcome, n_folds=e.n_folds,
                          level=e.interval_level, seed=config.seed)
            if name == "interaction":
                estimates[name, outcome] = effect.interaction_benefit(
                    data.X, data.treated, y, **common)
            else:
                estimates[name, outcome] = effect.t_learner_benefit(
                    data.X, data.treated, y, learner=_learner(config, name), name=name,
                    kind=effect.OUTCOME_KINDS[outcome], n_bootstrap=e.n_bootstrap,
                    n_jobs=e.n_jobs, **common)
            advance()

    average = {o: effect.treatment_effect(data.treated, data.outcome(o), ci_level=e.ci_level)
               for o in OUTCOMES}
    roles = effect.prognostic_predictive(data.X, data.treated, primary, features=steps,
                                         ci_level=e.ci_level, alpha=e.alpha, labels=labels)
    summary = effect.summarise_roles(roles, alpha=e.alpha, treatment=e.treated_arm)
    estimators = ["interaction", *config.learners]
    qini, curves, calibration = {}, {}, {}
    for name in estimators:
        estimate = estimates[name, e.outcome]
        curves[name], qini[name] = effect.qini(
            estimate.benefit, data.treated, primary, n_bootstrap=e.n_qini_bootstrap,
            ci_level=e.ci_level, seed=config.seed)
        calibration[name] = effect.benefit_calibration(
            estimate.benefit, data.treated, primary, n_groups=e.n_groups,
            ci_level=e.ci_level)

    # enrichment: the planned trial's outcome is the change at the horizon
    planned = estimates[en.estimator, "change"]
    score = (estimates[en.estimator, "responder"].mu1 if en.score == "responder_probability"
             else planned.benefit)
    usable = np.isfinite(score) & np.isfinite(planned.mu0) & np.isfinite(planned.mu1)
    plan = enrichment.enrichment_table(
        score[usable], planned.mu0[usable], planned.mu1[usable],
        effect.residual_sd(planned, data.treated, data.outcome("change")),
        thresholds=enrichment.threshold_grid(score[usable], n=en.n_thresholds),
        powers=tuple(en.powers), alpha=en.alpha, n_trials=en.n_trials,
        ci_level=e.ci_level, n_bootstrap=en.n_bootstrap, seed=config.seed,
        n_max_cap=en.n_max_cap)

    # how many patients a confirmatory responder-model study needs
    lc = config.learning_curve
    model = Pipeline([*_features(config, csf=True).steps,
                      ("model", make_classifier(config.learners[lc.model],
                                                seed=config.seed))]).set_output(
        transform="pandas")
    curve = effect.learning_curve(
        _simulated_studies(config, Path(config_path).parent) if lc.sizes else [],
        model, n_splits=lc.n_splits, seed=config.seed)
    riley = effect.study_size(curve, n_parameters=len(
        _features(config, csf=True).fit(data.X).get_feature_names_out()))

    uri = tracking.resolve_uri(config.tracking.uri)
    now = datetime.now()
    stamp, file_stamp = now.strftime("%Y-%m-%d %H:%M"), now.strftime("%Y-%m-%d-%H%M%S")
    tags = {"cohort": config.cohort.name, "data_digest": cohort_digest(cohort.raw),
            "config_digest": tracking.config_digest(resolved),
            "csf_separable": str(separable).lower(),
            **tracking.git_state(Path(__file__).parent)}
    units = {o: _OUTCOME_UNITS[o] for o in OUTCOMES}
    with (tempfile.TemporaryDirectory() as scratch,
          tracking.BackgroundRun(f"effect {config.cohort.name} {stamp}", uri=uri,
                                 artifact_root=config.tracking.artifact_root,
                                 experiment=config.tracking.experiment) as background):
        where = Path(scratch)
        shown = {
            "roles": figures.roles_plot(
                roles, path=where / "roles.png", unit=units[e.outcome], ci_level=e.ci_level,
                title=f"Prognostic vs predictive features ({e.outcome})"),
            "qini": figures.qini_plot(
                curves, qini, path=where / "qini.png", unit=units[e.outcome],
                ci_level=e.ci_level, title=f"Qini curves: ranking by estimated benefit "
                                           f"({e.outcome})"),
            "enrichment": figures.enrichment_plot(
                plan, path=where / "enrichment.png", power=min(en.powers),
                title=f"Enrichment: patients screened and randomised ({min(en.powers):.0%} "
                      f"power)"),
        }
        if len(curve):
            shown["learning_curve"] = figures.learning_curve_plot(
                curve, path=where / "learning_curve.png", observed=n_with[e.treated_arm],
                riley_minimum=riley.get("riley_minimum_n"),
                title="Responder model: cross-validated AUC vs study size (simulated)")
        per_estimator = {}
        for name in estimators:
            estimate = estimates[name, e.outcome]
            per_estimator[name] = {
                "benefit": figures.benefit_plot(
                    estimate.benefit, estimate.low, estimate.high, data.treated,
                    path=where / name / "benefit.png", unit=units[e.outcome],
                    level=e.interval_level, title=f"{name}: benefit per patient ({e.outcome})"),
                "calibration": figures.benefit_calibration_plot(
                    calibration[name], path=where / name / "calibration.png",
                    unit=units[e.outcome], ci_level=e.ci_level,
                    title=f"{name}: calibration of benefit ({e.outcome})"),
            }
        background.submit(tracking.log_dataset, data.X, name=config.cohort.name,
                          digest=tags["data_digest"], source=str(config.cohort.path),
                          context="cohort")
        for name in estimators:
            background.submit(tracking.log_effect_child, tracking.EffectChild(
                name=f"{name} {config.cohort.name} {stamp}",
                params={"estimator": name, "n_folds": e.n_folds,
                        **({"family": config.learners[name].family,
                            **config.learners[name].params} if name in config.learners
                           else {})},
                tags={**tags, "estimator": name},
                metrics={f"qini_area_{e.outcome}": qini[name],
                         **{f"mean_benefit_{o}": float(np.nanmean(estimates[name, o].benefit))
                            for o in OUTCOMES if (name, o) in estimates}},
                tables={"benefit": _benefit_table(data, estimates, name),
                        "calibration": calibration[name]},
                figures=list(per_estimator[name].values())))
        report = write_report(render_effect_report(EffectReportInputs(
            title=f"Who benefits from {e.treated_arm}: {config.cohort.name}", date=stamp,
            cohort=config.cohort.name, simulated=config.cohort.simulated,
            treated_arm=e.treated_arm, control_arm=e.control_arm, outcome=e.outcome,
            n_per_arm={e.treated_arm: int(data.treated.sum()),
                       e.control_arm: int((~data.treated).sum())},
            n_with_outcome=n_with, csf_per_arm=csf_per_arm, csf_separable=separable,
            limits=limits, summary=summary, average=average, roles=roles, qini=qini,
            calibration=calibration, enrichment=plan, learning_curve=curve, riley=riley,
            n_folds=e.n_folds, interval_level=e.interval_level, ci_level=e.ci_level,
            alpha=e.alpha, estimators=estimators, figures={
                "roles": [("Prognostic and predictive effect of each feature", shown["roles"])],
                "benefit": [(f"{n}: estimated benefit per patient", per_estimator[n]["benefit"])
                            for n in estimators],
                "ranking": [("Qini curves", shown["qini"]),
                            *((f"{n}: calibration of benefit", per_estimator[n]["calibration"])
                              for n in estimators)],
                "enrichment": [("Patients screened and randomised by threshold",
                                shown["enrichment"])],
                "study-size": ([("Learning curve", shown["learning_curve"])]
                               if "learning_curve" in shown else []),
            })), config.tracking.report_dir, f"effect-{config.cohort.name}-{file_stamp}")
        background.submit(
            tracking.log_parent_run, resolved_config=resolved, config_name="effect.yaml",
            tags={**tags, "summary": summary[:5000]},
            metrics={"n_patients": len(data.X), "csf_separable": float(separable),
                     **{f"effect_{o}": ci for o, ci in average.items()},
                     **{k: float(v) for k, v in riley.items()},
                     "seconds_total": time.perf_counter() - started},
            tables={"roles": roles, "enrichment": plan, "learning_curve": curve,
                    "rejects": cohort.rejects, "labels": cohort.labels},
            files={"figures": list(shown.values()), "report": [report]})
        background.wait()
        parent_id = background.run_id
    return EffectOutcome(config, cohort, data, csf_per_arm, separable, average, estimates,
                         qini, roles, summary, limits, plan, curve, riley, parent_id, uri,
                         report)


#: Unit of each outcome, for axis labels.
_OUTCOME_UNITS = {"slope": "points/month", "change": "points", "responder": "probability"}


def _benefit_table(data: effect.EffectData, estimates, name: str) -> pd.DataFrame:
    """Per-patient benefit of one estimator on every outcome it ran on."""
    table = pd.DataFrame({"subject_id": data.subject_id,
                          "arm_treated": data.treated.astype(int)})
    for (estimator, outcome), estimate in estimates.items():
        if estimator == name:
            frame = estimate.frame(data.subject_id).drop(columns=["subject_id"])
            table = table.join(frame.add_prefix(f"{outcome}_"))
    return table
