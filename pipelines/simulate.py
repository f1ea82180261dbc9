"""Recipe: simulate a phase 2 cohort in the input contract, and its oracle truth file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from csf_responder.config import SimulationConfig, load_config
from csf_responder.io import write_cohort, write_table
from csf_responder.simulate import oracle_probabilities, simulate_trial


@dataclass(frozen=True)
class SimulateOutcome:
    cohort_dir: Path
    truth_file: Path
    n_msc: int
    n_control: int
    n_visits: int
    n_csf_rows: int


def run(*, config_path: Path, out: Path, truth: Path, overrides: list[str]) -> SimulateOutcome:
    config, _ = load_config(config_path, SimulationConfig, overrides=overrides)
    trial = simulate_trial(config)
    write_cohort(out, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    oracle = oracle_probabilities(
        trial, config, draws=config.oracle_draws, cutoff=config.oracle_cutoff,
        horizon_months=config.oracle_horizon_months, seed=config.seed,
    )
    write_table(oracle, truth)
    return SimulateOutcome(out, truth, config.n_msc, config.n_control,
                           len(trial.alsfrs), len(trial.csf))
