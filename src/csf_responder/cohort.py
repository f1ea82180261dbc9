"""The wide cohort table: one row per patient, the single input of the model Pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from csf_responder.config import AnalyteSpec
from csf_responder.readers import arrow_text, index_in, take_text

__all__ = ["BRIDGE_SUFFIX", "FLAG_SUFFIX", "VISIT_COLUMNS", "CsfCells", "cohort_table",
           "csf_columns"]

#: Suffix of the column that holds each CSF value's censoring flag.
FLAG_SUFFIX = "_flag"

#: Suffix of the column that holds the bridging sample's value on each sample's plate.
BRIDGE_SUFFIX = "_bridge"

#: Columns summarising the visits up to baseline (what is known before treatment).
VISIT_COLUMNS = ("score_baseline", "leadin_slope")


def csf_columns(keys: Sequence[str], timepoints: Sequence[str]) -> list[str]:
    """Names of the value columns of a panel: ``{analyte_key}_{timepoint}``."""
    return [f"{key}_{tp}" for key in keys for tp in timepoints]


@dataclass(frozen=True)
class CsfCells:
    """A checked CSF panel as the cells of the wide table: one row per subject, one
    column per analyte and timepoint (``a * n_timepoints + t``), and an extra last row
    (no value, flag ``missing``, no plate) for patients without a CSF sample.

    Attributes
    ----------
    subjects : Index
        The subjects of the rows, in order (without the extra last row).
    values : ndarray
        Values in the canonical unit (the limit when censored), NaN without one.
    flags, flag_names
        Codes into ``flag_names``, whose last name is ``missing``.
    plates, plate_names
        One column per timepoint: codes into ``plate_names``, whose last name is ""
        (no plate).
    """

    subjects: pd.Index
    values: np.ndarray
    flags: np.ndarray
    flag_names: list[str]
    plates: np.ndarray
    plate_names: list[str]


def cohort_table(
    patients: pd.DataFrame,
    lead_in: pd.DataFrame,
    csf: pd.DataFrame | CsfCells,
    *,
    covariates: Sequence[str],
    analytes: Sequence[AnalyteSpec],
    timepoints: Sequence[str],
    bridges: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assemble the raw wide cohort table.

    Parameters
    ----------
    patients : DataFrame
        Checked patients table (one row per subject) with ``subject_id``, ``arm`` and the
        ``covariates``.
    lead_in : DataFrame
        ``subject_id``, ``score_baseline`` and ``leadin_slope`` (points/month) of the
        same subjects (:func:`csf_responder.labels.lead_in_summary`).
    covariates : sequence of str
        The indication's clinical covariates, in order.
    csf : DataFrame or CsfCells
        Checked CSF table: ``subject_id``, ``timepoint``, ``analyte``, ``value`` (canonical
        unit; the limit when censored), ``flag`` and optionally ``plate``; or its cells
        already (a wide CSF file checked in its layout, see
        :func:`csf_responder.contracts.check_cohort`).
    analytes, timepoints
        The panel, which fixes the CSF columns whether or not a patient has the sample.
    bridges : DataFrame, optional
        Bridging-sample values per ``plate`` and ``analyte`` (``value``, canonical unit).

    Returns
    -------
    DataFrame
        One row per patient: ``subject_id``, ``arm``, the covariates, ``score_baseline``
        and ``leadin_slope``, then for each
        analyte and timepoint a value column ``{key}_{timepoint}`` (float, canonical
        unit, e.g. pg/mL) and a flag column ``{key}_{timepoint}_flag`` (``observed``,
        ``below``, ``above``, ``extrapolated`` or ``missing``). A censored value holds
        its limit; imputing it is a step of the model Pipeline. Then ``plate_{timepoint}``:
        the assay plate of each sample ("" when unknown), for plate correction, and
        ``{key}_{timepoint}_bridge``: the bridging sample's value for that analyte on
        that plate (NaN without one), for bridging-sample normalisation.
    """
    table = _join_lead_in(patients, lead_in)
    table = table[["subject_id", "arm", *covariates, *VISIT_COLUMNS]].copy()
    by_name = {spec.name: spec.column_key for spec in analytes}
    cells = csf if isinstance(csf, CsfCells) else _long_cells(csf, list(by_name), timepoints)
    row = index_in(table["subject_id"], cells.subjects)  # -1: no CSF row
    columns: dict[str, np.ndarray | pd.Series] = {}
    alike: dict[int, pd.Series] = {}  # flag columns of one flag, each made once

    def flag_text(codes: np.ndarray) -> pd.Series:
        """The flags' names (an analyte of the panel that no file holds: all missing,
        shared by its columns)."""
        if not len(codes) or codes.min() != codes.max():
            return _text(cells.flag_names, codes)
        if int(codes[0]) not in alike:
            alike[int(codes[0])] = _text(cells.flag_names, codes)
        return alike[int(codes[0])]

    for a, key in enumerate(by_name.values()):
        for t, tp in enumerate(timepoints):
            columns[f"{key}_{tp}"] = cells.values[row, a * len(timepoints) + t]
            columns[f"{key}_{tp}{FLAG_SUFFIX}"] = flag_text(
                cells.flags[row, a * len(timepoints) + t])
    for t, tp in enumerate(timepoints):
        columns[f"plate_{tp}"] = _text(cells.plate_names, cells.plates[row, t])
    has_bridges = bridges is not None and not bridges.empty
    for name, key in by_name.items():
        mine = bridges.loc[bridges["analyte"] == name] if has_bridges else None
        by_plate = (pd.Series(mine["value"].to_numpy(), index=mine["plate"].astype(str))
                    if has_bridges else None)
        of_plate = (pd.Series(cells.plate_names).map(by_plate).to_numpy(dtype="float64")
                    if by_plate is not None and len(by_plate) else None)
        for t, tp in enumerate(timepoints):
            columns[f"{key}_{tp}{BRIDGE_SUFFIX}"] = (
                of_plate[cells.plates[row, t]] if of_plate is not None
                else np.full(len(row), np.nan))
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(columns)], axis=1)


def _long_cells(csf: pd.DataFrame, analytes: Sequence[str], timepoints: Sequence[str]
                ) -> CsfCells:
    """The :class:`CsfCells` of a checked CSF table in long layout (one row per subject,
    timepoint and analyte)."""
    subject, subjects = _codes(csf["subject_id"])
    analyte = _positions(csf["analyte"], analytes)
    timepoint = _positions(csf["timepoint"], list(timepoints))
    _refuse_repeats(subject, analyte, timepoint, len(analytes), len(timepoints))
    known = (analyte >= 0) & (timepoint >= 0)
    cell = analyte * len(timepoints) + timepoint
    shape = (len(subjects), len(analytes) * len(timepoints))
    values = _scatter(csf["value"].to_numpy(dtype="float64"), subject, cell, known, shape,
                      np.nan)
    flag_code, flag_names = _codes(csf["flag"])
    flag_names = [*flag_names, "missing"]  # a NaN flag: missing
    flag_code = np.where(flag_code < 0, len(flag_names) - 1, flag_code)
    flags = _scatter(flag_code, subject, cell, known, shape, len(flag_names) - 1)
    plates, plate_names = _plates(csf, subject, timepoint, len(subjects), len(timepoints))
    return CsfCells(pd.Index(subjects), values, flags, flag_names, plates, plate_names)


def _join_lead_in(patients: pd.DataFrame, lead_in: pd.DataFrame) -> pd.DataFrame:
    """``patients`` with the :data:`VISIT_COLUMNS` of ``lead_in`` by subject_id: the left
    merge that validates one-to-one, matched by Arrow hashing in the usual case (distinct
    ids on both sides, float columns); otherwise by ``DataFrame.merge`` itself."""
    ids, theirs = (arrow_text(t["subject_id"]) for t in (patients, lead_in))
    # ids distinct: counted by unique (count_distinct takes twice the time)
    if (set(VISIT_COLUMNS) & set(patients.columns)
            or any(lead_in[c].dtype != np.float64 for c in VISIT_COLUMNS)
            or any(len(pc.unique(a)) < len(a) for a in (ids, theirs))):
        return patients.merge(lead_in[["subject_id", *VISIT_COLUMNS]], on="subject_id",
                              how="left", validate="one_to_one")
    where = index_in(patients["subject_id"], lead_in["subject_id"])
    joined = {c: np.append(lead_in[c].to_numpy(dtype="float64"), np.nan)[where]
              for c in VISIT_COLUMNS}  # position -1 (no lead-in row): the NaN appended
    return patients.reset_index(drop=True).assign(**joined)


def _text(names: Sequence[str], codes: np.ndarray) -> pd.Series:
    """``names[codes]`` as a pandas ``str`` column, built in Arrow (what a column of
    Python strings becomes in a DataFrame, without a pass over Python objects)."""
    return take_text(pa.array(list(names), pa.large_string()), codes)


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes (-1: missing) and distinct values of a column; a categorical column's own
    codes and categories (no hashing)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return np.asarray(values.cat.codes, dtype=np.int64), values.cat.categories
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64), pd.Index(uniques)


def _positions(values: pd.Series, wanted: Sequence[str]) -> np.ndarray:
    """Each row's position in ``wanted`` (-1: missing or not wanted)."""
    codes, uniques = _codes(values)
    where = np.append(pd.Index(wanted).get_indexer(uniques), -1)  # code -1: the last
    return where[codes]


def _refuse_repeats(subject: np.ndarray, analyte: np.ndarray, timepoint: np.ndarray,
                    n_analytes: int, n_timepoints: int) -> None:
    """Raise, as a pivot would, when two CSF rows of the panel share subject, analyte
    and timepoint (the contract combines replicates before, so this is a bug)."""
    ok = (subject >= 0) & (analyte >= 0) & (timepoint >= 0)
    key = (subject[ok] * n_analytes + analyte[ok]) * n_timepoints + timepoint[ok]
    if len(key) and np.bincount(key).max() > 1:
        raise ValueError("Index contains duplicate entries, cannot reshape")


def _scatter(values: np.ndarray, subject: np.ndarray, cell: np.ndarray, rows: np.ndarray,
             shape: tuple[int, int], fill) -> np.ndarray:
    """A (subjects + 1, cells) matrix holding ``values[rows]`` at (subject, cell) and
    ``fill`` elsewhere; the extra last row (all ``fill``) is what position -1 takes."""
    out = np.full((shape[0] + 1, shape[1]), fill, dtype=values.dtype)
    ok = rows & (subject >= 0)
    out[subject[ok], cell[ok]] = values[ok]
    return out


def _plates(csf: pd.DataFrame, subject: np.ndarray, timepoint: np.ndarray,
            n_subjects: int, n_timepoints: int) -> tuple[np.ndarray, list[str]]:
    """The plate of each subject's first CSF row at each timepoint: (a (subjects + 1,
    timepoints) matrix of codes into the plate names, and the names, "" last: the code
    of no plate)."""
    if "plate" not in csf:
        return np.zeros((n_subjects + 1, n_timepoints), dtype=np.int64), [""]
    plate, names = _codes(csf["plate"])
    plate = np.where(plate < 0, len(names), plate)  # a missing plate: ""
    code = np.full((n_subjects + 1, n_timepoints), len(names), dtype=np.int64)
    ok = np.flatnonzero((subject >= 0) & (timepoint >= 0))
    first = ok[~pd.Series(subject[ok] * n_timepoints + timepoint[ok]).duplicated().to_numpy()]
    code[subject[first], timepoint[first]] = plate[first]
    return code, [*(str(v) for v in names), ""]
