"""The ingest stage: files -> contract -> labels -> the wide cohort table.

``csf-responder validate`` runs exactly this stage and writes its outputs; training
runs it and goes on with the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from csf_responder.cohort import cohort_table
from csf_responder.config import IndicationSpec, LabelSpec, PanelSpec, analyte_match_key
from csf_responder.contracts import CheckedCohort, _isin, check_cohort
from csf_responder.io import (
    CohortFiles,
    RawCohort,
    layout_chunk,
    read_cohort,
    read_cohort_chunks,
    read_cohort_files,
    subject_ids,
)
from csf_responder.labels import (
    EXCLUSIONS,
    column_labels,
    derive_labels,
    exclusion_rejects,
    lead_in_summary,
)

__all__ = ["IngestedCohort", "SCORING_REJECT_COLUMNS", "ScoringCohort", "ScoringRead",
           "check_scoring_chunk", "ingest_cohort", "scoring_chunks"]

#: Columns of a scoring run's patient rejects: one row per patient not scored.
SCORING_REJECT_COLUMNS = ("subject_id", "line", "rule", "column", "value", "detail")


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
    raw = read_cohort(directory, visits_file=indication.visits_file,
                      is_analyte=_analyte_names(panel))
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


@dataclass(frozen=True)
class ScoringCohort:
    """A cohort to score, after ingest.

    Attributes
    ----------
    raw, checked
        The files as read, and as checked by the contract (``arm`` optional).
    table : DataFrame
        The wide cohort table of every patient that passed the contract and has what
        the clinical inputs need (a baseline visit, a lead-in slope that declines).
    rejects : DataFrame
        One row per patient not in ``table``, :data:`SCORING_REJECT_COLUMNS`: the
        patients.csv rule its row broke (``subject_id_missing``, ``age_invalid``, ...;
        one row per line without a subject_id) or the lead-in exclusion
        (``no_visits``, ``no_baseline_visit``, ``too_few_lead_in_visits``,
        ``no_lead_in_decline``).
    subjects : Series
        Every distinct subject_id of patients.csv ("" for lines without one, each
        counted): what scoring must account for.
    """

    raw: RawCohort
    checked: CheckedCohort
    table: pd.DataFrame
    rejects: pd.DataFrame
    subjects: pd.Series


def _patient_rejects(checked: CheckedCohort, file: str) -> pd.DataFrame:
    """The patients.csv contract rejects, one row per patient (exact copies of a kept
    row are not patients: they stay in the row-level report only)."""
    found = checked.rejects.loc[(checked.rejects["file"] == file)
                                & (checked.rejects["rule"] != "exact_duplicate")]
    if found.empty:  # the usual case (a grouping of no rows still costs 7 ms a chunk)
        return pd.DataFrame(columns=["subject_id", "line", "rule", "column", "value",
                                     "detail"])
    blank = found["subject_id"].astype(str).str.strip().eq("")
    named = (found.loc[~blank].groupby("subject_id", sort=False)
             .agg(line=("line", lambda s: ";".join(str(v) for v in s)),
                  rule=("rule", "first"), column=("column", "first"),
                  value=("value", "first")).reset_index())
    unnamed = found.loc[blank, ["subject_id", "line", "rule", "column", "value"]]
    out = pd.concat([named, unnamed.assign(subject_id="", line=unnamed["line"].astype(str))],
                    ignore_index=True)
    return out.assign(detail="patients.csv row breaks the input contract")


def scoring_chunks(
    directory: str | Path,
    *,
    panel: PanelSpec,
    indication: IndicationSpec,
    lead_in_days: int,
    baseline_tolerance_days: int,
    min_visits_lead_in: int,
    drop_columns: Sequence[str] = (),
    chunk_size: int | None,
) -> Iterator[ScoringCohort]:
    """Read and check a cohort to score (lead-in and baseline visits; ``arm`` optional)
    with the same readers and contract as training, and build its wide table, in chunks
    of at most ``chunk_size`` patients (:func:`csf_responder.io.read_cohort_chunks`).

    Visits after baseline are not needed and not used (a note says how many there
    were). The lead-in settings are the trained model's (see
    :func:`csf_responder.scoring.model_contract`), so the clinical inputs are made the
    way the model saw them. Each chunk's accounting, rejects and notes are its own;
    ``chunk_size=None`` gives the whole cohort as one.
    """
    raws = read_cohort_chunks(directory, visits_file=indication.visits_file,
                              chunk_size=chunk_size, melt=False)
    for raw in raws:
        yield check_scoring_chunk(raw, panel=panel, indication=indication,
                                  lead_in_days=lead_in_days,
                                  baseline_tolerance_days=baseline_tolerance_days,
                                  min_visits_lead_in=min_visits_lead_in,
                                  drop_columns=drop_columns)


class ScoringRead:
    """A cohort to score, read in a background thread while the model loads: the first
    half of :func:`scoring_chunks`, whose chunks :func:`check_scoring_chunk` checks
    (wherever it runs).

    patients.csv and the CSF file are read, and their chunks found, at once; the visits
    file once :meth:`name_visits` names it (the model's contract does), or at once when
    the directory holds a single other CSV file: an indication's visits file is a CSV
    file, so that one is it, or the named one is missing (then read again, for the same
    error as without the guess). Reading text files is mostly Arrow's, outside the
    interpreter lock, so it overlaps with the model's loading. Use it as a context
    manager: leaving waits for a read under way (a guessed visits file is read to the
    end), and before the visits file is named or guessed stops the reading there.
    """

    def __init__(self, directory: str | Path, *, chunk_size: int | None) -> None:
        self._visits: Future[str] = Future()
        others = [path.name for path in Path(directory).glob("*.csv")
                  if path.name not in ("patients.csv", "csf.csv")]
        self._guess = others[0] if len(others) == 1 else None
        if self._guess is not None:
            self._visits.set_result(self._guess)
        self._read = partial(read_cohort_files, directory, chunk_size=chunk_size)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="read-cohort")
        self._files = self._thread.submit(self._read, visits_file=self._visits.result)

    def name_visits(self, indication: IndicationSpec) -> None:
        """The visits file is the indication's."""
        if self._guess is None:
            self._visits.set_result(indication.visits_file)
        elif indication.visits_file != self._guess:
            self._files = self._thread.submit(self._read, visits_file=indication.visits_file)

    def files(self) -> CohortFiles:
        """The files read and each chunk's rows, when the reading is done.

        Raises
        ------
        CohortError
            From the reading (a missing or unreadable file).
        """
        return self._files.result()

    def chunks(self) -> Iterator[RawCohort]:
        """The raw chunks of at most ``chunk_size`` patients, their CSF rows as read
        (checked by :func:`check_scoring_chunk`: a wide CSF in its layout, melted
        when some cell needs the long one), when the reading is done.

        Raises
        ------
        CohortError
            As :meth:`files`.
        """
        return self.files().chunks(melt=False)

    def __enter__(self) -> ScoringRead:
        return self

    def __exit__(self, *exc) -> None:
        self._visits.cancel()  # not named yet: the reading stops there
        self._thread.shutdown(wait=True, cancel_futures=True)  # and a second read with it


def _analyte_names(panel: PanelSpec):
    """The panel's analyte named by a wide CSF header, if any (for
    :func:`csf_responder.readers.csf_to_long`)."""
    spellings = panel.spellings()
    return lambda name: getattr(spellings.get(analyte_match_key(name)), "name", False)


def check_scoring_chunk(raw: RawCohort, *, panel: PanelSpec, indication: IndicationSpec,
                        lead_in_days: int, baseline_tolerance_days: int,
                        min_visits_lead_in: int, drop_columns: Sequence[str]
                        ) -> ScoringCohort:
    """The second half of :func:`scoring_chunks`, one raw chunk at a time (each chunk's
    patients are its own, so chunks can be checked in any order, or in parallel)."""
    raw, wide = layout_chunk(raw, _analyte_names(panel))
    checked = check_cohort(raw, panel=panel, indication=indication,
                           drop_columns=drop_columns, arm_required=False, wide_csf=wide)
    later = int((checked.visits["day"] > 0).sum())
    if later:
        checked.notes.append(f"{raw.file(indication.visits_file)}: {later} visit(s) after "
                             "baseline not used (scoring needs the lead-in and baseline)")
    subjects = checked.patients["subject_id"]
    summary = lead_in_summary(checked.visits, subjects=subjects, lead_in_days=lead_in_days,
                              baseline_tolerance_days=baseline_tolerance_days)
    no_visits = ~_isin(subjects, checked.visits["subject_id"]).to_numpy()  # by Arrow
    lead = summary["leadin_slope"].to_numpy()
    declines = (lead if indication.score.higher_is_better else -lead) < 0
    checks = [
        ("no_visits", no_visits),
        ("no_baseline_visit", summary["baseline_day"].isna().to_numpy()),
        ("too_few_lead_in_visits",
         (summary["n_lead_in"].to_numpy() < min_visits_lead_in) | pd.isna(lead)),
        ("no_lead_in_decline", ~declines),
    ]
    reason = pd.Series(pd.NA, index=summary.index, dtype="string")
    for rule, failed in checks:
        reason = reason.mask(reason.isna() & failed, rule)
    excluded = reason.notna().to_numpy()
    exclusions = pd.DataFrame({
        "subject_id": subjects[excluded].to_numpy(), "line": "",
        "rule": reason[excluded].to_numpy(dtype=object), "column": indication.score.column,
        "value": "", "detail": [EXCLUSIONS[r] for r in reason[excluded]]})
    # the wide table of the patients kept only (each row is its patient's alone)
    csf = checked.csf if checked.csf_cells is None else checked.csf_cells
    table = cohort_table(checked.patients.loc[~excluded].reset_index(drop=True), summary,
                         csf, covariates=list(indication.covariates),
                         analytes=panel.analytes, timepoints=panel.timepoints,
                         bridges=checked.bridges)
    p_file = raw.file("patients.csv")
    parts = [part for part in (_patient_rejects(checked, p_file), exclusions) if len(part)]
    rejects = (pd.concat(parts, ignore_index=True)[list(SCORING_REJECT_COLUMNS)] if parts
               else pd.DataFrame(columns=list(SCORING_REJECT_COLUMNS)))
    ids = subject_ids(raw.patients)
    subjects_all = pd.concat([pd.Series(ids[ids.ne("")].unique()), ids[ids.eq("")]],
                             ignore_index=True)
    return ScoringCohort(raw, checked, table, rejects, subjects_all)
