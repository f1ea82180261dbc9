"""The ``csf-responder`` command line. Heavy libraries load only inside the commands."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

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


class CsfFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


@app.command()
def simulate(
    out: Annotated[Path | None, typer.Option(
        help="Cohort directory to write (patients.csv, alsfrs.csv, csf.csv); default "
             "data/raw/phase2, or data/raw/scoring with --scoring.")] = None,
    truth: Annotated[Path | None, typer.Option(
        help="Truth file (subject_id, p_responder, true_benefit_slope, "
             "true_benefit_change), kept apart from the cohort; "
             "default data/truth/<cohort directory name>.csv. Not with --scoring.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's).")] = None,
    n_msc: Annotated[int | None, typer.Option(help="Patients in the MSC arm.")] = None,
    n_control: Annotated[int | None, typer.Option(help="Patients in the control arm.")] = None,
    scoring: Annotated[bool, typer.Option(
        "--scoring",
        help="Write a cohort of NEW patients to score instead of a trial: drawn like the "
             "MSC arm, no arm column, ALSFRS-R at lead-in and baseline only, CSF at every "
             "timepoint in the wide layout, ids SC0000001...; streamed in blocks (a million "
             "patients in well under a minute). No truth file: the oracle costs about 6 ms "
             "per patient.")] = False,
    n: Annotated[int | None, typer.Option(
        "--n", min=1, help="Patients in the scoring cohort (--scoring; default 200).")] = None,
    csf_format: Annotated[CsfFormat | None, typer.Option(
        "--format", help="Format of the scoring cohort's CSF file: csf.csv or csf.parquet "
                         "(--scoring; default csv). patients.csv and alsfrs.csv are CSV.")
    ] = None,
    config: Annotated[Path, typer.Option(help="Simulation config (YAML).")] = Path(
        "configs/simulate.yaml"),
    set_: SetOption = None,
) -> None:
    """Simulate a phase 2 cohort (Oh et al. 2018 design) in the input contract, or with
    --scoring a cohort of new patients to score."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import simulate as recipe
    from pipelines.console import print_scoring_summary, print_simulate_summary

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    if scoring:
        given = [name for name, value in (("--truth", truth), ("--n-msc", n_msc),
                                           ("--n-control", n_control)) if value is not None]
        if given:
            _fail(f"{', '.join(given)}: not with --scoring (a scoring cohort has no arms "
                  "and no truth file)")
        out = out or Path("data/raw/scoring")
        try:
            outcome = recipe.run_scoring(
                config_path=config, out=out, n=n or 200, overrides=overrides,
                csf_format=(csf_format or CsfFormat.csv).value)
        except CsfResponderError as exc:
            _fail(str(exc))
        print_scoring_summary(outcome, Console())
        return
    given = [name for name, value in (("--n", n), ("--format", csf_format)) if value is not None]
    if given:
        _fail(f"{', '.join(given)}: only with --scoring")
    for key, value in (("n_msc", n_msc), ("n_control", n_control)):
        if value is not None:
            overrides.append(f"{key}={value}")
    out = out or Path("data/raw/phase2")
    truth = truth or Path("data/truth") / f"{out.name}.csv"
    try:
        outcome = recipe.run(config_path=config, out=out, truth=truth, overrides=overrides)
    except CsfResponderError as exc:
        _fail(str(exc))
    print_simulate_summary(outcome, Console())


CohortOption = Annotated[Path | None, typer.Option(
    help="Cohort directory in the input contract (default: the config's cohort.path).")]
ConfigOption = Annotated[Path, typer.Option(help="Training config (YAML).")]
DecimalCommaOption = Annotated[bool, typer.Option(
    "--decimal-comma", help="Read numbers written with a decimal comma (12,5): CSF values "
                            "and limits, and the clinical covariates of patients.csv.")]


def _train_overrides(cohort: Path | None, set_: list[str] | None, decimal_comma: bool
                     ) -> list[str]:
    overrides = list(set_ or [])
    if cohort is not None:
        overrides += [f"cohort.path={cohort}", f"cohort.name={cohort.name}",
                      "cohort.simulated=false"]
    if decimal_comma:
        overrides.append("panel.decimal_comma=true")
    return overrides


@app.command()
def validate(
    cohort: CohortOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Directory for cohort.parquet, rejects.csv, qc_replicates.csv and "
             "accounting.csv (default data/interim/<cohort name>).")] = None,
    config: ConfigOption = Path("configs/train.yaml"),
    decimal_comma: DecimalCommaOption = False,
    set_: SetOption = None,
) -> None:
    """Check a cohort (ingest, contract, labels) without training; write the model's input."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import validate as recipe
    from pipelines.console import print_validate_summary

    overrides = _train_overrides(cohort, set_, decimal_comma)
    name = cohort.name if cohort is not None else None
    try:
        if out is None:
            from csf_responder.config import TrainConfig, load_config

            name = name or load_config(config, TrainConfig, overrides=overrides)[0].cohort.name
            out = Path("data/interim") / name
        outcome = recipe.run(config_path=config, overrides=overrides, out=out)
    except CsfResponderError as exc:
        _fail(str(exc))
    print_validate_summary(outcome, Console())


#: What the training run's MLflow worker imports while training imports its own stack.
LOGGING_MODULES = ("csf_responder.tracking", "csf_responder.registry", "mlflow",
                   "mlflow.sklearn", "skops.io", "matplotlib.backends.backend_agg")


@app.command()
def train(
    cohort: CohortOption = None,
    config: ConfigOption = Path("configs/train.yaml"),
    decimal_comma: DecimalCommaOption = False,
    permutation_test: Annotated[bool, typer.Option(
        "--permutation-test",
        help="Add each family's permutation p-value (validation.n_permutations times the "
             "whole nested cross-validation; slow)")] = False,
    set_: SetOption = None,
) -> None:
    """Derive responder labels, cross-validate the models and log them to MLflow."""
    from csf_responder.background import call, import_modules, start_worker

    # The MLflow worker starts first and imports what logging needs on the idle core
    # while this process imports the training stack.
    with start_worker() as worker:
        worker.submit(import_modules, *LOGGING_MODULES)
        worker.submit(call, "csf_responder.tracking:warm_up")
        from rich.console import Console

        from csf_responder.errors import CsfResponderError
        from pipelines import train as recipe
        from pipelines.console import Reporter, print_train_summary

        overrides = _train_overrides(cohort, set_, decimal_comma)
        if permutation_test:
            overrides.append("validation.permutation_test=true")
        try:
            outcome = recipe.run(config_path=config, overrides=overrides,
                                 reporter=Reporter(), worker=worker)
        except CsfResponderError as exc:
            _fail(str(exc))
    print_train_summary(outcome, Console())


@app.command()
def promote(
    version: Annotated[int, typer.Option(min=1, help="Registered model version to move the "
                                                    "alias to.")],
    reason: Annotated[str, typer.Option(help="Why, recorded with the version "
                                             "(promoted_by_hand_reason).")],
    config: ConfigOption = Path("configs/train.yaml"),
    set_: SetOption = None,
) -> None:
    """Move the registry alias (registry.alias, e.g. champion) to a version by hand."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import promote as recipe

    try:
        outcome = recipe.run(config_path=config, overrides=list(set_ or []), version=version,
                             reason=reason)
    except CsfResponderError as exc:
        _fail(str(exc))
    Console().print(recipe.summary(outcome), highlight=False, soft_wrap=True)


@app.command()
def score(
    cohort: Annotated[Path, typer.Option(help="Cohort directory to score, in the input "
                                               "contract (lead-in and baseline visits; arm "
                                               "optional).")],
    model: Annotated[str | None, typer.Option(
        help="Model: models:/csf-responder@champion (default: the config's), "
             "models:/csf-responder/3, runs:/<run id>/model, or a local model directory.")
    ] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory (default: data/scores/<cohort>-<date>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output "
                                                        "directory.")] = False,
    explain_plots: Annotated[int, typer.Option(
        min=0, help="SHAP waterfall plots for the first N scored patients.")] = 0,
    config: Annotated[Path, typer.Option(help="Scoring config (YAML).")] = Path(
        "configs/score.yaml"),
    set_: SetOption = None,
) -> None:
    """Score a new cohort: probability, 90% interval, class, top reasons and
    out-of-distribution flags per patient; rejects with reasons; drift vs training."""
    import signal

    from csf_responder.execution import keep_freed_memory, single_threaded_blas

    keep_freed_memory()  # before numpy and pyarrow load: chunks reuse the same memory
    single_threaded_blas()  # no BLAS work worth a thread: none spins idle

    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import score as recipe
    from pipelines.console import Reporter, print_score_summary

    def terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C: no partial output stays
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        outcome = recipe.run(cohort=cohort, config_path=config, overrides=list(set_ or []),
                             reporter=Reporter(), model=model, out=out, force=force,
                             explain_plots=explain_plots)
    except CsfResponderError as exc:
        _fail(str(exc))
    print_score_summary(outcome, Console())


@app.command()
def effect(
    cohort: CohortOption = None,
    config: Annotated[Path, typer.Option(help="Effect config (YAML).")] = Path(
        "configs/effect.yaml"),
    set_: SetOption = None,
) -> None:
    """Who benefits: each patient's benefit of MSC from both arms, prognostic vs
    predictive features, Qini, and trial-enrichment sample sizes; logged to MLflow."""
    from rich.console import Console

    from csf_responder.errors import CsfResponderError
    from pipelines import effect as recipe
    from pipelines.console import Reporter, print_effect_summary

    overrides = list(set_ or [])
    if cohort is not None:
        overrides += [f"cohort.path={cohort}", f"cohort.name={cohort.name}",
                      "cohort.simulated=false"]
    try:
        outcome = recipe.run(config_path=config, overrides=overrides, reporter=Reporter())
    except CsfResponderError as exc:
        _fail(str(exc))
    print_effect_summary(outcome, Console())


def leave(code: int | str | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without the interpreter's teardown.

    The exit handlers run (MLflow's, logging's, temporary files') and the output is
    flushed; what is skipped is freeing, one by one, every object of the libraries a
    command imported (mlflow, SQLAlchemy, pandas, scikit-learn): 1.3 s after scoring a
    large cohort, for nothing the operating system does not do at once. While a thread
    other than a daemon is still running, it is the ordinary exit (which waits for it).
    """
    import atexit
    import os
    import threading

    if isinstance(code, str):  # as sys.exit does: the message on stderr, status 1
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else 0 if code is None else 1
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue
        try:
            stream.flush()
        except OSError:  # output lost (a full disk, a closed pipe): as Python's own exit
            status = status or 120
    os._exit(status)


#: The cyclic garbage collector's thresholds in a command's process (Python's own: 700,
#: 10, 10). Importing the stack a command needs (pandas, scikit-learn, xgboost, MLflow:
#: millions of objects, next to none of them garbage) made the default collector run
#: seven full collections, each walking every object made so far: 0.6-1.1 s of CPU before
#: scoring's first patient, on its serial start. With a young generation of 50,000
#: objects those imports run no full collection; cycles are still collected.
GC_THRESHOLDS = (50_000, 20, 20)


def collect_less() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (and the processes it forks)."""
    import gc

    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    """Entry point of the ``csf-responder`` console script."""
    import os

    collect_less()  # before the commands import their stack
    # MLflow logs its store migrations at INFO; keep the terminal to results unless asked
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        app(prog_name="csf-responder")
    except SystemExit as exc:  # how every command ends (typer's standalone mode)
        leave(exc.code)
