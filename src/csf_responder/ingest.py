"""The ingest stage: files -> contract -> labels -> the wide cohort table.

``csf-responder validate`` runs exactly this stage and writes its outputs; training
runs it and goes on with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from csf_responder.cohort import cohort_table
from csf_responder.config import IndicationSpec, LabelSpec, PanelSpec, analyte_match_key
from csf_responder.contracts import CheckedCohort, check_cohort
from csf_responder.io import RawCohort, read_cohort
from csf_responder.labels import column_labels, derive_labels, exclusion_rejects

__all__ = ["IngestedCohort", "ingest_cohort"]


@dataclass(frozen=True)
class IngestedCohort:
    """Everything ingest produced.

    Attributes
    ----------
    raw : RawCohort
        The files as read.
    checked : CheckedCohort
        Typed tables, contract rejects, replicate QC, accounting and notes.
    labels : DataFrame
        Responder labels and exclusions, one row per patient.
    table : DataFrame
        The wide cohort table (the model's raw input) plus ``responder``.
    rejects : DataFrame
        Contract rejects followed by patients without a label.
    """

    raw: RawCohort
    checked: CheckedCohort
    labels: pd.DataFrame
    table: pd.DataFrame
    rejects: pd.DataFrame


def ingest_cohort(
    directory: str | Path,
    *,
    panel: PanelSpec,
    indication: IndicationSpec,
    labels: LabelSpec,
    drop_columns: Sequence[str],
) -> IngestedCohort:
    """Read, check and label a cohort directory, and build its wide table.

    Raises
    ------
    CohortError
        When the files cannot be used at all (missing, unreadable, breaking the header
        contract).
    """
    spellings = panel.spellings()
    raw = read_cohort(directory, visits_file=indication.visits_file,
                      is_analyte=lambda name: getattr(spellings.get(analyte_match_key(name)),
                                                      "name", False))
    checked = check_cohort(raw, panel=panel, indication=indication,
                           label_column=labels.column, drop_columns=drop_columns)
    subjects = checked.patients["subject_id"]
    if labels.source == "column":
        labelled = column_labels(checked.visits, subjects=subjects,
                                 label=checked.patients[labels.column],
                                 lead_in_days=labels.lead_in_days,
                                 horizon_tolerance_days=labels.horizon_tolerance_days)
    else:
        labelled = derive_labels(checked.visits, subjects=subjects,
                                 higher_is_better=indication.score.higher_is_better,
                                 **labels.slope_settings())
    table = cohort_table(checked.patients, labelled, checked.csf,
                         covariates=list(indication.covariates), analytes=panel.analytes,
                         timepoints=panel.timepoints, bridges=checked.bridges)
    table = table.merge(labelled[["subject_id", "responder"]], on="subject_id",
                        how="left", validate="one_to_one")
    source = (("patients.csv", labels.column) if labels.source == "column"
              else (indication.visits_file, indication.score.column))
    exclusions = exclusion_rejects(labelled, file=raw.file(source[0]), column=source[1])
    parts = [part for part in (checked.rejects, exclusions) if len(part)]
    rejects = (pd.concat(parts, ignore_index=True) if parts
               else checked.rejects.iloc[0:0])
    return IngestedCohort(raw, checked, labelled, table, rejects)
