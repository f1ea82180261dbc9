"""Recipe: simulate a phase 2 cohort in the input contract, and its truth file (the oracle
probability of response ``p_responder`` and the true expected benefit of MSC,
``true_benefit_slope`` and ``true_benefit_change``, of every patient); or a scoring cohort
of new patients, streamed to disk block by block."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from csf_responder.config import SimulationConfig, load_config
from csf_responder.io import CSF_SUFFIXES, write_cohort, write_table
from csf_responder.simulate import (
    oracle_probabilities,
    scoring_blocks,
    simulate_trial,
    true_benefit,
)


@dataclass(frozen=True)
class SimulateOutcome:
    cohort_dir: Path
    truth_file: Path
    n_msc: int
    n_control: int
    n_visits: int
    n_csf_rows: int


@dataclass(frozen=True)
class ScoringOutcome:
    cohort_dir: Path
    files: dict[str, int]  # file name -> bytes
    n_patients: int
    n_visits: int
    n_csf_samples: int
    n_csf_values: int
    removed: list[str]  # stale csf.* files of another format, replaced


def run(*, config_path: Path, out: Path, truth: Path, overrides: list[str]) -> SimulateOutcome:
    config, _ = load_config(config_path, SimulationConfig, overrides=overrides)
    trial = simulate_trial(config)
    write_cohort(out, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    oracle = oracle_probabilities(
        trial, config, draws=config.oracle_draws, cutoff=config.oracle_cutoff,
        horizon_months=config.oracle_horizon_months, seed=config.seed,
    )
    # each patient's true expected benefit of MSC (both arms), next to the oracle
    benefit = true_benefit(trial, config, horizon_months=config.oracle_horizon_months)
    write_table(oracle.merge(benefit, on="subject_id", how="left", validate="one_to_one"),
                truth)
    return SimulateOutcome(out, truth, config.n_msc, config.n_control,
                           len(trial.alsfrs), len(trial.csf))


def _writer(path: Path, schema):
    """A streaming writer: Parquet (zstd), or CSV with a plain header (the header pandas
    writes, unquoted) and unquoted values (none holds a comma, quote or line break)."""
    import csv
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.ParquetWriter(path, schema, compression="zstd")
    sink = pa.OSFile(str(path), "wb")
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(schema.names)
    sink.write(header.getvalue().encode())
    return _ClosingWriter(pacsv.CSVWriter(sink, schema, write_options=pacsv.WriteOptions(
        include_header=False, quoting_style="none")), sink)


class _ClosingWriter:
    """A CSV writer that closes its file too (pyarrow's leaves a passed stream open)."""

    def __init__(self, writer, sink):
        self._writer, self._sink = writer, sink

    def write_table(self, table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def run_scoring(*, config_path: Path, out: Path, n: int, csf_format: Literal["csv", "parquet"],
                overrides: list[str], block_size: int = 100_000) -> ScoringOutcome:
    """Write a scoring cohort of ``n`` new patients (no truth file: the oracle costs a few
    milliseconds per patient) to ``out``: ``patients.csv``, ``alsfrs.csv`` and
    ``csf.csv`` or ``csf.parquet`` (wide layout).

    Blocks of ``block_size`` patients are appended to the files as they are drawn, in a
    staging directory next to ``out`` whose files replace those of ``out`` only when all
    are complete; a ``csf.*`` file of another format left in ``out`` is removed (a
    cohort holds one).
    """
    config, _ = load_config(config_path, SimulationConfig, overrides=overrides)
    csf_name = f"csf.{csf_format}"
    names = ("patients.csv", "alsfrs.csv", csf_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    writers: dict = {}
    counts = {name: 0 for name in names}
    try:
        for block in scoring_blocks(config, n, block_size=block_size):
            for name, table in zip(names, (block.patients, block.alsfrs, block.csf),
                                   strict=True):
                if name not in writers:
                    writers[name] = _writer(staging / name, table.schema)
                writers[name].write_table(table)
                counts[name] += table.num_rows
        for writer in writers.values():
            writer.close()
        writers.clear()
        out.mkdir(exist_ok=True)
        sizes = {}
        for name in names:
            sizes[name] = (staging / name).stat().st_size
            os.replace(staging / name, out / name)
        removed = []
        for suffix in CSF_SUFFIXES:
            stale = out / f"csf{suffix}"
            if stale.name != csf_name and stale.is_file():
                stale.unlink()
                removed.append(stale.name)
    finally:
        for writer in writers.values():
            writer.close()
        for path in staging.glob("*"):
            path.unlink()
        staging.rmdir()
    n_values = counts[csf_name] * len(config.analytes)
    return ScoringOutcome(out, sizes, n, counts["alsfrs.csv"], counts[csf_name], n_values,
                          removed)
