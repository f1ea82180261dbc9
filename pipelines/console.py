"""Terminal output of the pipelines: progress bars, notes and end-of-run summaries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from pipelines.simulate import SimulateOutcome
    from pipelines.train import TrainOutcome


class Reporter:
    """What a pipeline shows while it works; quiet in tests, a rich console for people."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def notes(self, notes: list[str]) -> None:
        for note in notes:
            self.console.print(f"[dim]note:[/dim] {note}")

    @contextmanager
    def progress(self, total: int, label: str = "cross-validation folds"
                 ) -> Iterator[Callable[[], None]]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(label, total=total)
            yield lambda: bar.advance(task)


def print_simulate_summary(outcome: SimulateOutcome, console: Console) -> None:
    table = Table(title="Simulated cohort", show_header=False)
    table.add_row("cohort directory", str(outcome.cohort_dir))
    table.add_row("patients", f"{outcome.n_msc} MSC, {outcome.n_control} control")
    table.add_row("ALSFRS-R visits", str(outcome.n_visits))
    table.add_row("CSF rows", str(outcome.n_csf_rows))
    table.add_row("oracle truth (not for training)", str(outcome.truth_file))
    console.print(table)


def print_train_summary(outcome: TrainOutcome, console: Console) -> None:
    config = outcome.config
    level = round(100 * config.validation.ci_level)
    cohort = Table(title=f"Cohort {config.cohort.name}", show_header=False)
    cohort.add_row("patients", str(outcome.n_patients))
    cohort.add_row("MSC patients labelled (training)", str(outcome.n_labelled))
    for reason, count in outcome.exclusions.items():
        cohort.add_row(f"no label (both arms): {reason}", str(count))
    cohort.add_row("rejected input rows", str(outcome.n_rejected_rows))
    cohort.add_row(f"good responders, MSC ({level}% CI)", _rate(outcome.msc_rate))
    cohort.add_row(f"good responders, control ({level}% CI): noise alone",
                   _rate(outcome.control_rate))
    console.print(cohort)

    models = Table(title=f"Responder models (cut-off {config.labels.cutoff:g}, "
                         f"{config.labels.horizon_months:g} months)")
    models.add_column("model")
    models.add_column(f"ROC AUC ({level}% CI)", justify="right")
    models.add_column("validation")
    v = config.validation
    for name, result in outcome.results.items():
        models.add_row(name, str(result.auc),
                       f"{v.n_repeats}x repeated {v.n_splits}-fold CV, out-of-fold")
    console.print(models)
    console.print(f"MLflow run [bold]{outcome.parent_run_id}[/bold] in experiment "
                  f"'{outcome.experiment}' ({outcome.tracking_uri}).")
    if outcome.tracking_uri.startswith("sqlite:"):
        console.print("Open it with [bold]make ui[/bold], then http://127.0.0.1:5000 "
                      f"-> Experiments -> {outcome.experiment}.")


def _rate(rate) -> str:
    if rate.estimate != rate.estimate:  # NaN: no labelled patient in that arm
        return "no labelled patient"
    return f"{100 * rate.estimate:.0f}% ({100 * rate.low:.0f}-{100 * rate.high:.0f}%)"
