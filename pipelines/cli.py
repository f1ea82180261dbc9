"""The ``csf-responder`` command line. Heavy libraries load only inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="csf-responder",
    help="Predict which ALS patients respond to intrathecal BM-MSC therapy from CSF "
         "cytokines and clinical data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY.PATH=VALUE",
                 help="Override one config value (repeatable), e.g. --set validation.n_repeats=2."),
]


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/bold red] {message}", highlight=False,
                               soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Cohort directory to write (patients.csv, "
                                           "alsfrs.csv, csf.csv).")] = Path("data/raw/phase2"),
    truth: Annotated[Path | None, typer.Option(
        help="Oracle file (subject_id, p_responder), kept apart from the cohort; "
             "default data/truth/<cohort directory name>.csv.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's).")] = None,
    n_msc: Annotated[int | None, typer.Option(help="Patients in the MSC arm.")] = None,
    n_control: Annotated[int | None, typer.Option(help="Patients in the control arm.")] = None,
    config: Annotated[Path, typer.Option(help="Simulation config (YAML).")] = Path(
        "configs/simulate.yaml"),
    set_: SetOption = None,
) -> None:
    """Simulate a phase 2 cohort (Oh et al. 2018 design) in the input contract."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import simulate as recipe
    from pipelines.console import print_simulate_summary

    overrides = list(set_ or [])
    for key, value in (("seed", seed), ("n_msc", n_msc), ("n_control", n_control)):
        if value is not None:
            overrides.append(f"{key}={value}")
    truth = truth or Path("data/truth") / f"{out.name}.csv"
    try:
        outcome = recipe.run(config_path=config, out=out, truth=truth, overrides=overrides)
    except CsfResponderError as exc:
        _fail(str(exc))
    print_simulate_summary(outcome, Console())


@app.command()
def train(
    cohort: Annotated[Path | None, typer.Option(
        help="Cohort directory in the input contract (default: the config's cohort.path).")
    ] = None,
    config: Annotated[Path, typer.Option(help="Training config (YAML).")] = Path(
        "configs/train.yaml"),
    set_: SetOption = None,
) -> None:
    """Derive responder labels, cross-validate the models and log them to MLflow."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import train as recipe
    from pipelines.console import Reporter, print_train_summary

    overrides = list(set_ or [])
    if cohort is not None:
        overrides += [f"cohort.path={cohort}", f"cohort.name={cohort.name}"]
    try:
        outcome = recipe.run(config_path=config, overrides=overrides, reporter=Reporter())
    except CsfResponderError as exc:
        _fail(str(exc))
    print_train_summary(outcome, Console())


def main() -> None:
    """Entry point of the ``csf-responder`` console script."""
    import os

    # MLflow logs its store migrations at INFO; keep the terminal to results unless asked
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    app(prog_name="csf-responder")
