"""The input contract: check the raw cohort tables and give them types.

A value that breaks the contract (an unknown arm, a score that is no integer) is an
error naming file, line and column. A row that is well-formed but cannot be used (a
visit of a subject who is not in ``patients.csv``, an analyte outside the panel) goes
to the rejects table with its reason. Every input row is thus used, rejected with a
reason, or stops the run with a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from csf_responder.censoring import parse_concentrations
from csf_responder.config import AnalyteSpec, analyte_match_key
from csf_responder.errors import CohortError
from csf_responder.io import LINE, RawCohort
from csf_responder.units import conversion_factor

__all__ = ["REJECT_COLUMNS", "CheckedCohort", "check_cohort"]

PATIENT_COLUMNS = ("subject_id", "arm", "age", "sex", "onset_site", "onset_months")
ALSFRS_COLUMNS = ("subject_id", "day", "alsfrs_r")
ALSFRS_ITEMS = tuple(f"q{i}" for i in range(1, 13))
CSF_COLUMNS = ("subject_id", "timepoint", "analyte", "value", "unit")
CSF_OPTIONAL = ("lloq", "uloq", "plate", "replicate")
ARMS = {"msc": "MSC", "control": "control"}
SEXES = {"male": "male", "m": "male", "female": "female", "f": "female"}
ONSET_SITES = {"bulbar": "bulbar", "spinal": "spinal", "limb": "spinal"}

#: Columns of every rejects table: where the row came from and why it was not used.
REJECT_COLUMNS = ("file", "line", "subject_id", "reason")


@dataclass(frozen=True)
class CheckedCohort:
    """Typed cohort tables that passed the contract.

    Attributes
    ----------
    patients : DataFrame
        One row per subject: ``subject_id``, ``arm`` (``MSC``/``control``), ``age`` (years),
        ``sex``, ``onset_site``, ``onset_months`` (symptom onset to baseline, months).
    alsfrs : DataFrame
        One row per visit: ``subject_id``, ``day`` (int, days from baseline), ``alsfrs_r`` (int).
    csf : DataFrame
        One row per subject, timepoint and analyte: ``value`` in the analyte's canonical
        unit (the limit when censored), ``flag`` and ``limit``.
    rejects : DataFrame
        Rows not used, with :data:`REJECT_COLUMNS`.
    notes : list of str
        What a user should know (ignored columns, merged replicates).
    """

    patients: pd.DataFrame
    alsfrs: pd.DataFrame
    csf: pd.DataFrame
    rejects: pd.DataFrame
    notes: list[str]


def _require_columns(table: pd.DataFrame, required: Sequence[str], file: str) -> None:
    for column in required:
        if column not in table.columns:
            raise CohortError("required column is missing", file=file, column=column)


def _extra_columns(
    table: pd.DataFrame, known: Sequence[str], file: str, notes: list[str]
) -> None:
    extra = [c for c in table.columns if c not in known and c != LINE]
    if extra:
        notes.append(f"{file}: ignored extra column(s) {', '.join(extra)}")


def _first_bad(table: pd.DataFrame, mask: pd.Series, file: str, column: str, what: str):
    if mask.any():
        row = table.loc[mask].iloc[0]
        raise CohortError(f"{what}, got {row[column]!r}", file=file, row=int(row[LINE]),
                          column=column)


def _categorical(table: pd.DataFrame, column: str, allowed: dict[str, str], file: str) -> pd.Series:
    mapped = table[column].str.strip().str.lower().map(allowed)
    choices = " or ".join(sorted(set(allowed.values())))
    _first_bad(table, mapped.isna(), file, column, f"expected {choices}")
    return mapped.astype(object)


def _numeric(
    table: pd.DataFrame, column: str, file: str, *, integer: bool = False,
    allow_blank: bool = False, low: float | None = None, high: float | None = None,
) -> pd.Series:
    text = table[column].str.strip()
    blank = text.eq("")
    number = pd.to_numeric(text.where(~blank), errors="coerce")
    kind = "an integer" if integer else "a number"
    _first_bad(table, number.isna() & ~blank, file, column, f"expected {kind}")
    if not allow_blank:
        _first_bad(table, blank, file, column, f"expected {kind}")
    if integer:
        _first_bad(table, number.notna() & (number % 1 != 0), file, column, "expected an integer")
    if low is not None:
        _first_bad(table, number < low, file, column, f"expected a value >= {low:g}")
    if high is not None:
        _first_bad(table, number > high, file, column, f"expected a value <= {high:g}")
    return number.astype("float64")


def _rejects(table: pd.DataFrame, mask: pd.Series, file: str, reason) -> pd.DataFrame:
    chosen = table.loc[mask]
    reasons = reason(chosen) if callable(reason) else reason
    return pd.DataFrame({
        "file": file,
        "line": chosen[LINE].astype(int).to_numpy(),
        "subject_id": chosen["subject_id"].to_numpy(),
        "reason": reasons,
    })


def _check_patients(raw: RawCohort, notes: list[str]) -> pd.DataFrame:
    file, table = raw.file("patients.csv"), raw.patients
    _require_columns(table, PATIENT_COLUMNS, file)
    _extra_columns(table, PATIENT_COLUMNS, file, notes)
    ids = table["subject_id"].str.strip()
    _first_bad(table, ids.eq(""), file, "subject_id", "expected a subject identifier")
    duplicated = ids.duplicated(keep="first")
    if duplicated.any():
        line = int(table.loc[duplicated, LINE].iloc[0])
        raise CohortError(f"subject_id {ids[duplicated].iloc[0]!r} appears twice",
                          file=file, row=line, column="subject_id")
    return pd.DataFrame({
        "subject_id": ids.astype(object),
        "arm": _categorical(table, "arm", ARMS, file),
        "age": _numeric(table, "age", file, allow_blank=True, low=0, high=120),
        "sex": _categorical(table, "sex", SEXES, file),
        "onset_site": _categorical(table, "onset_site", ONSET_SITES, file),
        "onset_months": _numeric(table, "onset_months", file, allow_blank=True, low=0),
    }).reset_index(drop=True)


def _check_alsfrs(raw: RawCohort, subjects: set[str], notes: list[str]):
    file, table = raw.file("alsfrs.csv"), raw.alsfrs
    _require_columns(table, ALSFRS_COLUMNS, file)
    _extra_columns(table, ALSFRS_COLUMNS + ALSFRS_ITEMS, file, notes)
    table = table.assign(subject_id=table["subject_id"].str.strip())
    day = _numeric(table, "day", file, integer=True)
    score = _numeric(table, "alsfrs_r", file, integer=True, allow_blank=True, low=0, high=48)
    unknown = ~table["subject_id"].isin(subjects)
    blank = score.isna() & ~unknown
    usable = ~unknown & ~blank
    keys = pd.DataFrame({"s": table["subject_id"], "d": day})
    duplicate = usable & keys.where(usable).duplicated(keep="first")
    rejects = pd.concat([
        _rejects(table, unknown, file, "subject_id not in patients.csv"),
        _rejects(table, blank, file, "alsfrs_r is blank"),
        _rejects(table, duplicate, file,
                 "duplicate visit: same subject_id and day as an earlier line"),
    ])
    keep = ~(unknown | blank | duplicate)
    visits = pd.DataFrame({
        "subject_id": table.loc[keep, "subject_id"].astype(object),
        "day": day[keep].astype("int64"),
        "alsfrs_r": score[keep].astype("int64"),
    }).sort_values(["subject_id", "day"], kind="stable").reset_index(drop=True)
    return visits, rejects


def _check_csf(raw: RawCohort, subjects: set[str], analytes: Sequence[AnalyteSpec],
               timepoints: Sequence[str], notes: list[str]):
    file, table = raw.file("csf.csv"), raw.csf
    _require_columns(table, CSF_COLUMNS, file)
    _extra_columns(table, CSF_COLUMNS + CSF_OPTIONAL, file, notes)
    table = table.assign(
        subject_id=table["subject_id"].str.strip(),
        timepoint=table["timepoint"].str.strip(),
    )
    by_key = {analyte_match_key(spec.name): spec for spec in analytes}
    matched = table["analyte"].map(lambda name: by_key.get(analyte_match_key(name)))
    unknown_subject = ~table["subject_id"].isin(subjects)
    unknown_analyte = matched.isna() & ~unknown_subject
    unknown_timepoint = ~table["timepoint"].isin(timepoints) & ~unknown_subject & ~unknown_analyte
    rejects = pd.concat([
        _rejects(table, unknown_subject, file, "subject_id not in patients.csv"),
        _rejects(table, unknown_analyte, file,
                 lambda rows: [f"analyte {a!r} is not in the panel" for a in rows["analyte"]]),
        _rejects(table, unknown_timepoint, file,
                 lambda rows: [f"timepoint {t!r} is not one of {', '.join(timepoints)}"
                               for t in rows["timepoint"]]),
    ])
    keep = ~(unknown_subject | unknown_analyte | unknown_timepoint)
    table, matched = table.loc[keep], matched[keep]
    parsed = parse_concentrations(
        table["value"],
        lloq=table.get("lloq"),
        uloq=table.get("uloq"),
    )
    _first_bad(table, parsed["flag"].eq("invalid"), file, "value",
               "expected a concentration or a censored notation such as <15.6")
    no_limit = parsed["flag"].isin(["below", "above"]) & parsed["value"].isna()
    _first_bad(table, no_limit, file, "value",
               "censored value without a limit (write it as <15.6 or fill the lloq/uloq column)")
    factors = np.ones(len(table))
    for i, (unit, spec) in enumerate(zip(table["unit"], matched, strict=True)):
        try:
            factors[i] = conversion_factor(unit, spec.unit)
        except KeyError:
            line = int(table[LINE].iloc[i])
            raise CohortError(f"unit {unit!r} cannot be converted to {spec.unit}",
                              file=file, row=line, column="unit") from None
    measurements = pd.DataFrame({
        "subject_id": table["subject_id"].astype(object),
        "timepoint": table["timepoint"].astype(object),
        "analyte": [spec.name for spec in matched],
        "value": parsed["value"] * factors,
        "flag": parsed["flag"],
        "limit": parsed["limit"] * factors,
    })
    return _merge_replicates(measurements, file, notes), rejects


def _merge_replicates(measurements: pd.DataFrame, file: str, notes: list[str]) -> pd.DataFrame:
    """One row per subject, timepoint and analyte: replicate wells are averaged.

    Quantified replicates are averaged; censored replicates are used only when no
    replicate of that sample was quantified.
    """
    keys = ["subject_id", "timepoint", "analyte"]
    if not measurements.duplicated(keys).any():
        return measurements.reset_index(drop=True)
    quantified = measurements["flag"].isin(["observed", "extrapolated"])
    ranked = measurements.assign(_rank=np.where(quantified, 0, 1))
    best = ranked.groupby(keys, sort=False)["_rank"].transform("min")
    chosen = ranked[ranked["_rank"] == best]
    merged = chosen.groupby(keys, sort=False, as_index=False).agg(
        value=("value", "mean"), flag=("flag", "first"), limit=("limit", "first"))
    notes.append(f"{file}: averaged replicate rows into {len(merged)} sample values "
                 f"(from {len(measurements)} rows)")
    return merged


def check_cohort(
    raw: RawCohort, *, analytes: Sequence[AnalyteSpec], timepoints: Sequence[str]
) -> CheckedCohort:
    """Check a raw cohort against the input contract and return typed tables.

    Parameters
    ----------
    raw : RawCohort
        Tables as read by :func:`csf_responder.io.read_cohort`.
    analytes : sequence of AnalyteSpec
        The panel; analyte names in ``csf.csv`` match it ignoring case and punctuation.
    timepoints : sequence of str
        CSF timepoints the panel uses.

    Raises
    ------
    CohortError
        On a missing column or a value that breaks the contract.
    """
    notes: list[str] = []
    patients = _check_patients(raw, notes)
    subjects = set(patients["subject_id"])
    alsfrs, alsfrs_rejects = _check_alsfrs(raw, subjects, notes)
    csf, csf_rejects = _check_csf(raw, subjects, analytes, timepoints, notes)
    rejects = pd.concat([alsfrs_rejects, csf_rejects], ignore_index=True)
    rejects = rejects.reindex(columns=list(REJECT_COLUMNS))
    return CheckedCohort(patients, alsfrs, csf, rejects, notes)
