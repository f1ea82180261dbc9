"""Terminal output of the pipelines: progress bars, notes and end-of-run summaries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from csf_responder.ingest import IngestedCohort
    from pipelines.effect import EffectOutcome
    from pipelines.score import ScoreOutcome
    from pipelines.simulate import ScoringOutcome, SimulateOutcome
    from pipelines.train import TrainOutcome
    from pipelines.validate import ValidateOutcome


class Reporter:
    """What a pipeline shows while it works; quiet in tests, a rich console for people."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def notes(self, notes: list[str]) -> None:
        for note in notes:
            self.console.print(f"[dim]note:[/dim] {note}")

    @contextmanager
    def progress(self, total: int | None, label: str = "cross-validation folds"
                 ) -> Iterator[Callable[..., None]]:
        """A progress bar of ``total`` steps (None: not known in advance); yields
        ``advance(steps=1)``."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(label, total=total)
            yield lambda steps=1: bar.advance(task, steps)


def print_simulate_summary(outcome: SimulateOutcome, console: Console) -> None:
    table = Table(title="Simulated cohort", show_header=False)
    table.add_row("cohort directory", str(outcome.cohort_dir))
    table.add_row("patients", f"{outcome.n_msc} MSC, {outcome.n_control} control")
    table.add_row("ALSFRS-R visits", str(outcome.n_visits))
    table.add_row("CSF rows", str(outcome.n_csf_rows))
    table.add_row("oracle truth (not for training)", str(outcome.truth_file))
    console.print(table)


def print_scoring_summary(outcome: ScoringOutcome, console: Console) -> None:
    table = Table(title="Simulated scoring cohort (new patients, not randomised)",
                  show_header=False)
    table.add_row("cohort directory", str(outcome.cohort_dir))
    table.add_row("patients", f"{outcome.n_patients:,} (no arm column)")
    table.add_row("ALSFRS-R visits", f"{outcome.n_visits:,} (lead-in and baseline only)")
    table.add_row("CSF samples", f"{outcome.n_csf_samples:,} (wide layout, "
                                 f"{outcome.n_csf_values:,} values)")
    for name, size in outcome.files.items():
        table.add_row(name, _size(size))
    if outcome.removed:
        table.add_row("removed (a cohort holds one CSF file)", ", ".join(outcome.removed))
    table.add_row("oracle truth", "none (the oracle is too slow for scoring cohorts)")
    console.print(table)


def print_ingest_summary(cohort: IngestedCohort, console: Console) -> None:
    """One screen: rows per file, rejects by rule, replicate QC, patients and labels."""
    files = Table(title="Ingest: every row used or rejected")
    for column in ("file", "rows read", "used", "rejected"):
        files.add_column(column, justify="left" if column == "file" else "right")
    for row in cohort.checked.accounting.itertuples(index=False):
        files.add_row(row.file, str(row.rows_read), str(row.rows_used), str(row.rows_rejected))
    console.print(files)
    contract = cohort.checked.rejects
    if len(contract):
        rules = Table(title="Rejected rows by rule (details in rejects.csv)")
        for column in ("file", "rule", "action", "rows"):
            rules.add_column(column, justify="right" if column == "rows" else "left")
        counts = contract.groupby(["file", "rule", "action"]).size().reset_index(name="n")
        for row in counts.itertuples(index=False):
            rules.add_row(row.file, row.rule, row.action, str(row.n))
        console.print(rules)
    table = cohort.table
    patients = Table(title="Patients", show_header=False)
    for arm, group in table.groupby("arm"):
        labelled = group["responder"].notna()
        patients.add_row(f"{arm}", f"{len(group)} patients, {int(labelled.sum())} labelled, "
                                   f"{int(group.loc[labelled, 'responder'].sum())} good responders")
    for reason, count in cohort.labels["exclusion"].value_counts().items():
        patients.add_row(f"no label: {reason}", str(count))
    qc = cohort.checked.qc
    if len(qc):
        patients.add_row("replicate samples above the CV limit", f"{int(qc['flagged'].sum())} "
                                                                  f"of {len(qc)}")
    console.print(patients)


def print_validate_summary(outcome: ValidateOutcome, console: Console) -> None:
    print_ingest_summary(outcome.cohort, console)
    console.print(f"Wrote cohort.parquet, rejects.csv, qc_replicates.csv and accounting.csv "
                  f"to [bold]{outcome.out}[/bold].")


def print_train_summary(outcome: TrainOutcome, console: Console) -> None:
    config = outcome.config
    level = round(100 * config.validation.ci_level)
    print_ingest_summary(outcome.cohort, console)
    rates = Table(title="Good responders", show_header=False)
    rates.add_row(f"MSC ({level}% CI), training labels", _rate(outcome.msc_rate))
    rates.add_row(f"control ({level}% CI): what noise alone gives", _rate(outcome.control_rate))
    console.print(rates)

    models = Table(title=f"Responder models on {outcome.n_labelled} labelled MSC patients "
                         f"(cut-off {config.labels.cutoff:g}, "
                         f"{config.labels.horizon_months:g} months)")
    models.add_column("model")
    models.add_column(f"ROC AUC ({level}% CI)", justify="right")
    models.add_column("vs clinical-only (ΔAUC)", justify="right")
    models.add_column("AUC optimism-corrected", justify="right")
    models.add_column("Brier", justify="right")
    v = config.validation
    for name, result in {**outcome.results, **outcome.references}.items():
        label = name if name in outcome.results else f"[dim]{name} (reference)[/dim]"
        delta = outcome.delta_vs_clinical[name]
        models.add_row(label, str(result.auc),
                       "" if name == "clinical_only" else f"{delta.estimate:+.2f} "
                       f"({delta.low:+.2f} to {delta.high:+.2f})",
                       _corrected(result.optimism.get("roc_auc_optimism_corrected")),
                       f"{result.metrics['brier'].estimate:.3f}")
    console.print(models)
    console.print(f"[dim]{v.n_repeats}x repeated {v.n_splits}-fold CV, out-of-fold; "
                  f"hyperparameters tuned by a {v.inner_splits}-fold search inside each "
                  "training fold; intervals: patient-level bootstrap.[/dim]")
    needed = outcome.sample_size
    if needed["n_labelled"] < needed["riley_minimum_n"]:
        console.print(
            f"[yellow]warning:[/yellow] {needed['n_labelled']:.0f} labelled patients, "
            f"below the Riley et al. (2020) minimum of {needed['riley_minimum_n']:.0f} for "
            f"a model with {needed['n_parameters']:.0f} candidate parameters: this run can "
            "explore, not develop, a model.")
    registered = outcome.registered
    if registered.promoted:
        console.print(f"Registry: {registered.model_name} version {registered.version} "
                      f"({outcome.best}) passed the gate and is now "
                      f"@{registered.alias}.", highlight=False)
    else:
        console.print(f"Registry: {registered.model_name} version {registered.version} "
                      f"({outcome.best}) registered; @{registered.alias} stays "
                      f"{_version(registered.previous_champion)}: "
                      f"{'; '.join(registered.reasons)}.", highlight=False)
    console.print(f"Report: [bold]{outcome.report}[/bold]", highlight=False)
    console.print(f"MLflow run [bold]{outcome.parent_run_id}[/bold] in experiment "
                  f"'{config.tracking.experiment}' ({outcome.tracking_uri}).")
    console.print(_where_to_look(outcome.tracking_uri, config.tracking.experiment),
                  highlight=False)


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    if n_bytes < 2**20:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / 2**20:,.1f} MiB"


def _corrected(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _version(version: int | None) -> str:
    return "unset" if version is None else f"on version {version}"


def _rate(rate) -> str:
    if rate.estimate != rate.estimate:  # NaN: no labelled patient in that arm
        return "no labelled patient"
    return f"{100 * rate.estimate:.0f}% ({100 * rate.low:.0f}-{100 * rate.high:.0f}%)"


def print_score_summary(outcome: ScoreOutcome, console: Console) -> None:
    """Counts, score distribution, drift and where everything went."""
    model = outcome.model_family + (f", version {outcome.model_version}"
                                    if outcome.model_version else "")
    table = Table(title=f"Scored {outcome.cohort}", show_header=False)
    table.add_row("model", f"{outcome.model_uri} ({model})")
    table.add_row("patients", f"{outcome.n_input:,} in, {outcome.n_scored:,} scored, "
                              f"{sum(outcome.rejected.values()):,} rejected")
    for rule, n in sorted(outcome.rejected.items(), key=lambda item: -item[1]):
        table.add_row(f"  rejected: {rule}", f"{n:,}")
    table.add_row("predicted responders", f"{outcome.n_predicted_responders:,}")
    if outcome.distribution:
        d = outcome.distribution
        table.add_row("probability", f"mean {d['mean']:.2f}, median {d['p50']:.2f} "
                                     f"(5-95%: {d['p05']:.2f}-{d['p95']:.2f})")
    table.add_row("out of training range", f"{outcome.n_ood_range:,} (a feature), "
                                           f"{outcome.n_ood_multivariate:,} (multivariate)")
    shifted = [c for c, v in outcome.drift.items() if v["n"] and v["ks_p"] < 0.01]
    table.add_row("drift (KS p < 0.01)", ", ".join(shifted) or "none")
    table.add_row("outputs", str(outcome.out))
    table.add_row("seconds", f"{outcome.seconds:.1f}")
    console.print(table)
    console.print(f"MLflow run {outcome.run_id} in experiment '{outcome.experiment}' "
                  f"({outcome.tracking_uri}). "
                  + _where_to_look(outcome.tracking_uri, outcome.experiment),
                  highlight=False)


def print_effect_summary(outcome: EffectOutcome, console: Console) -> None:
    """Average effects, the prognostic/predictive calls in words, the benefit rankings,
    the enrichment headline and where everything went."""
    from csf_responder.report import format_ci
    config, e, analysis = outcome.config, outcome.config.effect, outcome.analysis
    level = f"{e.ci_level:.0%} CI"
    arms = Table(title=f"{e.treated_arm} vs {e.control_arm} on {config.cohort.name}")
    arms.add_column("outcome")
    arms.add_column(f"{e.treated_arm} minus {e.control_arm} ({level})", justify="right")
    for name, ci in analysis.average.items():
        arms.add_row(name, format_ci(ci))
    console.print(arms)
    roles = Table(title=f"Features ({analysis.outcome}): Holm-adjusted at {e.alpha:g}")
    for column in ("feature", "prognostic", "predictive", "role"):
        roles.add_column(column)
    for row in analysis.roles.itertuples(index=False):
        roles.add_row(row.label, f"{row.prognostic:+.3f} (p {row.prognostic_p_holm:.3g})",
                      f"{row.predictive:+.3f} (p {row.predictive_p_holm:.3g})", row.role)
    console.print(roles)
    for limit in outcome.limits:
        console.print(f"[yellow]limit:[/yellow] {limit}", highlight=False)
    console.print(analysis.summary, highlight=False)
    ranking = Table(title=f"Benefit rankings ({analysis.outcome}, cross-fitted)")
    ranking.add_column("estimator")
    ranking.add_column(f"Qini area ({level})", justify="right")
    ranking.add_column("heterogeneity loading (1 = real, 0 = none)", justify="right")
    for name in analysis.estimators:
        q, b = analysis.qini[name], analysis.loading[name].loading
        ranking.add_row(name, f"{q.estimate:.3f} ({q.low:.3f} to {q.high:.3f})", format_ci(b))
    console.print(ranking)
    plan = outcome.enrichment
    power = min(config.enrichment.powers)
    column = f"n_per_arm_{round(100 * power)}_simulated"
    if len(plan) and column in plan and plan[column].notna().any():
        first, best = plan.iloc[0], plan.loc[plan[column].idxmin()]
        screened = f"total_screened_{round(100 * power)}"
        console.print(
            f"Enrichment ({power:.0%} power, calibrated benefit): unenriched "
            f"{first[column]:.0f} per arm; smallest trial at threshold "
            f"{best['threshold']:.3g} ({best['fraction_screened_out']:.0%} screened out): "
            f"{best[column]:.0f} per arm, {best[screened]:.0f} patients to screen.",
            highlight=False)
    if outcome.riley:
        console.print(f"Riley minimum to develop the responder model: "
                      f"{outcome.riley['riley_minimum_n']:.0f} labelled treated patients.",
                      highlight=False)
    console.print(f"Report: [bold]{outcome.report}[/bold]", highlight=False)
    console.print(f"MLflow run [bold]{outcome.parent_run_id}[/bold] in experiment "
                  f"'{config.tracking.experiment}' ({outcome.tracking_uri}). "
                  + _where_to_look(outcome.tracking_uri, config.tracking.experiment),
                  highlight=False)


def _where_to_look(uri: str, experiment: str) -> str:
    """How to open a run's experiment in the MLflow UI: the local store through make ui,
    a tracking server at its own address."""
    if uri.startswith(("http://", "https://")):
        return f"Open {uri} -> Experiments -> {experiment}."
    return f"Open it with make ui, then http://127.0.0.1:5000 -> Experiments -> {experiment}."
