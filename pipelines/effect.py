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

from csf_responder import effect, figures
from csf_responder.cohort import csf_columns
from csf_responder.config import EffectConfig, SimulationConfig, load_config
from csf_responder.errors import CohortError
from csf_responder.execution import execution
from csf_responder.ingest import IngestedCohort, ingest_cohort
from csf_responder.io import cohort_digest, write_cohort
from csf_responder.labels import change_at_horizon
from csf_responder.models import baseline_features, make_classifier, make_regressor
from csf_responder.report import EffectReportInputs, render_effect_report, write_report
from csf_responder.scoring import describe_feature
from csf_responder.simulate import simulate_trial
from pipelines.console import Reporter


@dataclass(frozen=True)
class EffectOutcome:
    config: EffectConfig
    cohort: IngestedCohort
    data: effect.EffectData
    csf_per_arm: dict[str, int]
    csf_separable: bool
    analysis: effect.EffectAnalysis
    limits: list[str]                        # what this cohort cannot answer, in words
    enrichment: pd.DataFrame
    learning_curve: pd.DataFrame
    riley: dict[str, float]
    parent_run_id: str
    tracking_uri: str
    report: Path


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
    seeds = np.random.SeedSequence(config.seed).spawn(len(lc.sizes) * lc.repeats)
    for k, (size, repeat) in enumerate((s, r) for s in lc.sizes for r in range(lc.repeats)):
        study = sim.model_copy(update={"seed": int(seeds[k].generate_state(1)[0]),
                                       "n_msc": size, "n_control": 0})
        trial = simulate_trial(study)
        with tempfile.TemporaryDirectory() as tmp:
            write_cohort(tmp, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                         visits_file=config.indication.visits_file)
            cohort = ingest_cohort(tmp, panel=config.panel, indication=config.indication,
                                   labels=config.labels, drop_columns=[])
        labelled = cohort.table[cohort.table["responder"].notna()]
        yield size, repeat, labelled, labelled["responder"].astype(int).to_numpy()


def run(*, config_path: Path, overrides: list[str], reporter: Reporter) -> EffectOutcome:
    from csf_responder import tracking  # MLflow is heavy: loaded only when the run logs

    started = time.perf_counter()
    config, resolved = load_config(config_path, EffectConfig, overrides=overrides)
    e, en, lc = config.effect, config.enrichment, config.learning_curve
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
    n_with = {arm: int(np.isfinite(data.outcome(e.outcome)[data.treated == treated]).sum())
              for arm, treated in ((e.treated_arm, True), (e.control_arm, False))}
    if sum(n_with.values()) < config.ingest.min_labelled:
        raise CohortError(f"{config.cohort.path}: {sum(n_with.values())} patients have the "
                          f"{e.outcome} outcome ({n_with}); the effect analysis needs at "
                          f"least {config.ingest.min_labelled} (ingest.min_labelled)")

    # CSF features can be called prognostic or predictive only with CSF in controls
    keys = {a.name: a.column_key for a in config.panel.analytes}
    used = {*config.features.analytes, *(n for pair in config.features.ratios for n in pair)}
    baseline = csf_columns([keys[n] for n in sorted(used)], config.panel.timepoints[:1])
    csf_per_arm = effect.csf_patients_per_arm(data.X, baseline) if baseline else {}
    separable, limit = (effect.csf_separability(
        data.X, baseline, control_arm=e.control_arm, min_controls=e.min_csf_controls,
        min_fraction=e.min_csf_fraction) if baseline else (False, None))
    limits = [limit] if limit else []
    steps = baseline_features(panel=config.panel, indication=config.indication,
                              features=config.features, csf=separable)

    with execution(config.execution), reporter.progress(
            effect.estimator_steps(len(config.learners)),
            label="benefit estimators x outcomes") as advance:
        try:
            analysis = effect.analyse(
                data, features=steps, learners={n: _learner(config, n) for n in config.learners},
                outcome=e.outcome, n_folds=e.n_folds, n_bootstrap=e.n_bootstrap,
                interval_level=e.interval_level, ci_level=e.ci_level, alpha=e.alpha,
                n_groups=e.n_groups, n_qini_bootstrap=e.n_qini_bootstrap, seed=config.seed,
                n_jobs=e.n_jobs, labels=_labels(config, steps, data.X),
                treatment=e.treated_arm, on_step=advance)
        except ValueError as exc:
            raise CohortError(f"{config.cohort.path}: {exc}") from None
    reporter.notes(analysis.notes)
    if ("change" not in {o for _, o in analysis.estimates}
            or (en.score == "responder_probability"
                and (en.estimator, "responder") not in analysis.estimates)):
        raise CohortError(f"{config.cohort.path}: enrichment planning needs the change "
                          "outcome (and the responder one for responder_probability)")

    # enrichment: the planned trial's outcome is the change at the horizon
    planned = analysis.estimates[en.estimator, "change"]
    plan, _, pool_notes = effect.plan_enrichment(
        data, planned, (analysis.estimates[en.estimator, "responder"].mu1
                        if en.score == "responder_probability" else planned.benefit),
        n_thresholds=en.n_thresholds, powers=en.powers, alpha=en.alpha,
        n_trials=en.n_trials, ci_level=e.ci_level, n_bootstrap=en.n_bootstrap,
        seed=config.seed, n_max_cap=en.n_max_cap)
    reporter.notes(pool_notes)

    # how many patients a confirmatory responder-model study needs
    full = baseline_features(panel=config.panel, indication=config.indication,
                             features=config.features)
    model = Pipeline([*full.steps, ("model", make_classifier(config.learners[lc.model],
                                                             seed=config.seed))]
                     ).set_output(transform="pandas")
    curve = effect.learning_curve(
        _simulated_studies(config, Path(config_path).parent) if lc.sizes else [],
        model, n_splits=lc.n_splits, seed=config.seed)
    riley = effect.study_size(curve, n_parameters=len(
        full.fit(data.X).get_feature_names_out()))

    uri = tracking.resolve_uri(config.tracking.uri)
    now = datetime.now()
    stamp, file_stamp = now.strftime("%Y-%m-%d %H:%M"), now.strftime("%Y-%m-%d-%H%M%S")
    tags = {"cohort": config.cohort.name, "data_digest": cohort_digest(cohort.raw),
            "config_digest": tracking.config_digest(resolved),
            "csf_separable": str(separable).lower(),
            **tracking.git_state(Path(__file__).parent)}
    with (tempfile.TemporaryDirectory() as scratch,
          tracking.BackgroundRun(f"effect {config.cohort.name} {stamp}", uri=uri,
                                 artifact_root=config.tracking.artifact_root,
                                 experiment=config.tracking.experiment) as background):
        shown, per_estimator = _draw(Path(scratch), config, data, analysis, plan, curve,
                                     riley, n_with[e.treated_arm])
        background.submit(tracking.log_dataset, data.X, name=config.cohort.name,
                          digest=tags["data_digest"], source=str(config.cohort.path),
                          context="cohort")
        for name in analysis.estimators:
            background.submit(tracking.log_effect_child, _child(
                config, name, analysis, data, tags, stamp, list(per_estimator[name].values())))
        report = write_report(render_effect_report(EffectReportInputs(
            title=f"Who benefits from {e.treated_arm}: {config.cohort.name}", date=stamp,
            cohort=config.cohort.name, simulated=config.cohort.simulated,
            treated_arm=e.treated_arm, control_arm=e.control_arm, outcome=e.outcome,
            n_per_arm={e.treated_arm: int(data.treated.sum()),
                       e.control_arm: int((~data.treated).sum())},
            n_with_outcome=n_with, csf_per_arm=csf_per_arm, csf_separable=separable,
            limits=limits, notes=[*analysis.notes, *pool_notes], summary=analysis.summary,
            average=analysis.average, roles=analysis.roles, qini=analysis.qini,
            loading={n: x.loading for n, x in analysis.loading.items()},
            enrichment=plan, learning_curve=curve, riley=riley, n_folds=e.n_folds,
            interval_level=e.interval_level, ci_level=e.ci_level, alpha=e.alpha,
            estimators=analysis.estimators,
            figures=_report_figures(shown, per_estimator, analysis.estimators))),
            config.tracking.report_dir, f"effect-{config.cohort.name}-{file_stamp}")
        background.submit(
            tracking.log_parent_run, resolved_config=resolved, config_name="effect.yaml",
            tags={**tags, "summary": analysis.summary[:5000]},
            metrics={"n_patients": len(data.X), "csf_separable": float(separable),
                     **{f"effect_{o}": ci for o, ci in analysis.average.items()},
                     **{k: float(v) for k, v in riley.items()},
                     "seconds_total": time.perf_counter() - started},
            tables={"roles": analysis.roles, "enrichment": plan, "learning_curve": curve,
                    "rejects": cohort.rejects, "labels": cohort.labels},
            files={"figures": list(shown.values()), "report": [report]})
        background.wait()
        parent_id = background.run_id
    return EffectOutcome(config, cohort, data, csf_per_arm, separable, analysis, limits,
                         plan, curve, riley, parent_id, uri, report)


#: Unit of each outcome, for axis labels.
_UNITS = {"slope": "points/month", "change": "points", "responder": "probability"}


def _draw(where: Path, config: EffectConfig, data: effect.EffectData,
          analysis: effect.EffectAnalysis, plan: pd.DataFrame, curve: pd.DataFrame,
          riley: dict[str, float], n_treated: int):
    """The run's figures: (name -> PNG) of the parent, estimator -> (name -> PNG)."""
    e, unit, outcome = config.effect, _UNITS[analysis.outcome], analysis.outcome
    power = min(config.enrichment.powers)
    shown = {
        "roles": figures.roles_plot(analysis.roles, path=where / "roles.png", unit=unit,
                                    ci_level=e.ci_level,
                                    title=f"Prognostic vs predictive features ({outcome})"),
        "qini": figures.qini_plot(analysis.curves, analysis.qini, path=where / "qini.png",
                                  unit=unit, ci_level=e.ci_level,
                                  title=f"Qini curves: ranking by estimated benefit "
                                        f"({outcome})"),
        "enrichment": figures.enrichment_plot(
            plan, path=where / "enrichment.png", power=power,
            title=f"Enrichment: patients screened and randomised ({power:.0%} power)"),
    }
    if len(curve):
        shown["learning_curve"] = figures.learning_curve_plot(
            curve, path=where / "learning_curve.png", observed=n_treated,
            riley_minimum=riley.get("riley_minimum_n"),
            title="Responder model: cross-validated AUC vs study size (simulated)")
    per_estimator = {}
    for name in analysis.estimators:
        estimate = analysis.estimates[name, outcome]
        per_estimator[name] = {
            "benefit": figures.benefit_plot(
                estimate.benefit, estimate.low, estimate.high, data.treated,
                path=where / name / "benefit.png", unit=unit, level=e.interval_level,
                title=f"{name}: expected benefit per patient ({outcome})"),
            "calibration": figures.benefit_calibration_plot(
                analysis.calibration[name], path=where / name / "calibration.png",
                unit=unit, ci_level=e.ci_level,
                title=f"{name}: calibration of benefit ({outcome})"),
        }
    return shown, per_estimator


def _report_figures(shown, per_estimator, estimators):
    return {
        "roles": [("Prognostic and predictive effect of each feature", shown["roles"])],
        "benefit": [(f"{n}: expected benefit per patient, with the interval of the expected "
                     f"benefit of patients with these covariates", per_estimator[n]["benefit"])
                    for n in estimators],
        "ranking": [("Qini curves", shown["qini"]),
                    *((f"{n}: calibration of benefit", per_estimator[n]["calibration"])
                      for n in estimators)],
        "enrichment": [("Patients screened and randomised by threshold", shown["enrichment"])],
        "study-size": ([("Learning curve", shown["learning_curve"])]
                       if "learning_curve" in shown else []),
    }


def _child(config: EffectConfig, name: str, analysis: effect.EffectAnalysis,
           data: effect.EffectData, tags: dict[str, str], stamp: str, pictures: list[Path]):
    """One estimator's child run: its parameters, Qini area and benefit loading on the
    primary outcome, mean benefit per outcome, per-patient benefits and figures."""
    from csf_responder.tracking import EffectChild

    outcome = analysis.outcome
    spec = config.learners.get(name)
    table = pd.DataFrame({"subject_id": data.subject_id, "treated": data.treated.astype(int)})
    for (estimator, o), estimate in analysis.estimates.items():
        if estimator == name:
            table = table.join(estimate.frame(data.subject_id).drop(columns=["subject_id"])
                               .add_prefix(f"{o}_"))
    return EffectChild(
        name=f"{name} {config.cohort.name} {stamp}",
        params={"estimator": name, "n_folds": config.effect.n_folds,
                **({"family": spec.family, **spec.params} if spec else {})},
        tags={**tags, "estimator": name},
        metrics={f"qini_area_{outcome}": analysis.qini[name],
                 f"benefit_loading_{outcome}": analysis.loading[name].loading,
                 **{f"mean_benefit_{o}": float(np.mean(x.benefit))
                    for (n, o), x in analysis.estimates.items() if n == name}},
        tables={"benefit": table, "calibration": analysis.calibration[name]},
        figures=pictures)
