"""Recipe: ingest, contract and labels without training; write what training would use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from csf_responder.config import TrainConfig, load_config
from csf_responder.ingest import IngestedCohort, ingest_cohort
from csf_responder.io import write_outputs


@dataclass(frozen=True)
class ValidateOutcome:
    config: TrainConfig
    cohort: IngestedCohort
    out: Path


def run(*, config_path: Path, overrides: list[str], out: Path) -> ValidateOutcome:
    config, _ = load_config(config_path, TrainConfig, overrides=overrides)
    cohort = ingest_cohort(config.cohort.path, panel=config.panel,
                           indication=config.indication, labels=config.labels,
                           drop_columns=config.ingest.drop_columns)
    write_outputs(out, parquet={"cohort": cohort.table},
                  csv={"rejects": cohort.rejects, "qc_replicates": cohort.checked.qc,
                       "accounting": cohort.checked.accounting})
    return ValidateOutcome(config, cohort, out)
