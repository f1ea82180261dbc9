"""The input contract: pandera schemas that check the cohort tables and give them types.

Every input row ends in one of three places:

- **used**: it passed every rule;
- **rejects**: it broke a rule; one row per broken rule with file, line, subject, column,
  the offending value, the rule and the action taken (``row dropped``, ...);
- **an error** that stops the run, only when the file cannot be read as the contract
  says at all (a required column is missing, a unit cannot be converted, an identifier
  column is present) or when a required analyte has no value anywhere.

Rows read = rows used + rows rejected is checked for every file before returning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from csf_responder.censoring import parse_concentrations, parse_numbers
from csf_responder.config import PanelSpec, analyte_match_key
from csf_responder.errors import CohortError
from csf_responder.io import LINE, RawCohort
from csf_responder.units import conversion_factor

__all__ = ["ACCOUNT_COLUMNS", "QC_COLUMNS", "REJECT_COLUMNS", "RULES", "CheckedCohort",
           "check_cohort"]

PATIENT_COLUMNS = ("subject_id", "arm", "age", "sex", "onset_site", "onset_months")
ALSFRS_COLUMNS = ("subject_id", "day", "alsfrs_r")
ALSFRS_ITEMS = tuple(f"q{i}" for i in range(1, 13))
CSF_COLUMNS = ("subject_id", "timepoint", "analyte", "value", "unit")
CSF_OPTIONAL = ("lloq", "uloq", "plate", "replicate")
ARMS = {"msc": "MSC", "control": "control"}
SEXES = {"male": "male", "m": "male", "female": "female", "f": "female"}
ONSET_SITES = {"bulbar": "bulbar", "spinal": "spinal", "limb": "spinal"}

#: Column names that look like direct identifiers; refused unless the config drops them.
IDENTIFIER_PATTERN = re.compile(
    r"^(patient_?|subject_?|first_?|last_?|full_?|sur)?name$|^initials?$|^dob$|"
    r"birth|^address|street|^zip|postcode|postal|phone|e_?mail|^mrn$|medical_record|"
    r"^notes?$|comment|free_?text|remark|^ssn$|social_security|insurance_?(no|number)")

#: Columns of every rejects table.
REJECT_COLUMNS = ("file", "line", "subject_id", "column", "value", "rule", "action")
#: Columns of the replicate QC report (one row per sample and analyte with replicates).
QC_COLUMNS = ("subject_id", "timepoint", "analyte", "n_replicates", "mean", "cv_percent",
              "flagged")
#: Columns of the accounting table.
ACCOUNT_COLUMNS = ("file", "rows_read", "rows_used", "rows_rejected")

#: Every rule a row can break: what it means and what is done.
RULES: dict[str, tuple[str, str]] = {
    "subject_id_missing": ("subject_id is blank", "row dropped"),
    "subject_id_duplicate": ("the same subject_id with different data", "patient dropped"),
    "exact_duplicate": ("an exact copy of an earlier row", "copy dropped"),
    "arm_unknown": ("arm is not MSC or control", "patient dropped"),
    "sex_unknown": ("sex is not male or female", "patient dropped"),
    "onset_site_unknown": ("onset_site is not bulbar or spinal", "patient dropped"),
    "age_invalid": ("age is not a number in 0-120", "patient dropped"),
    "onset_months_invalid": ("onset_months is not a positive number", "patient dropped"),
    "subject_unknown": ("subject_id is not in patients.csv", "row dropped"),
    "subject_rejected": ("the subject's row in patients.csv was rejected", "row dropped"),
    "day_invalid": ("day is not an integer", "row dropped"),
    "score_missing": ("the score is blank", "row dropped"),
    "score_invalid": ("the score is not an integer in its range", "row dropped"),
    "visit_conflict": ("visits on the same day with different scores", "all such visits dropped"),
    "analyte_unknown": ("the analyte is not in the panel", "row dropped"),
    "timepoint_unknown": ("the timepoint is not one of the panel's", "row dropped"),
    "value_invalid": ("the value is no concentration or censored notation", "row dropped"),
    "value_negative": ("a concentration below zero", "row dropped"),
    "limit_missing": ("a censored value without any limit (file or panel)", "row dropped"),
    "limit_invalid": ("lloq/uloq is not a positive number", "row dropped"),
    "measurement_conflict": ("the same sample, analyte and replicate with different values",
                             "all such rows dropped"),
}


@dataclass(frozen=True)
class CheckedCohort:
    """Typed cohort tables that passed the contract, and what did not.

    Attributes
    ----------
    patients : DataFrame
        One row per subject: ``subject_id``, ``arm`` (``MSC``/``control``), ``age``
        (years), ``sex``, ``onset_site``, ``onset_months`` (symptom onset to baseline).
    alsfrs : DataFrame
        One row per visit: ``subject_id``, ``day`` (int, days from baseline), ``alsfrs_r``.
    csf : DataFrame
        One row per subject, timepoint and analyte: ``value`` in the analyte's canonical
        unit (the limit when censored), ``flag``, ``limit``, ``plate``, ``n_replicates``
        and ``cv_percent`` (NaN with fewer than two quantified replicates).
    rejects : DataFrame
        One row per broken rule, :data:`REJECT_COLUMNS`.
    qc : DataFrame
        Replicate QC, :data:`QC_COLUMNS`.
    accounting : DataFrame
        Per file, rows read = rows used + rows rejected, :data:`ACCOUNT_COLUMNS`.
    notes : list of str
        What a user should know (dropped columns, assumed units, merged replicates).
    """

    patients: pd.DataFrame
    alsfrs: pd.DataFrame
    csf: pd.DataFrame
    rejects: pd.DataFrame
    qc: pd.DataFrame
    accounting: pd.DataFrame
    notes: list[str]


# ------------------------------------------------------------------ schema helpers
def _rule(name: str, passes: Callable[[pd.Series], pd.Series]) -> pa.Check:
    """A pandera check named after a rule of :data:`RULES` (the name is what failure
    cases report; the rule's description lives in :data:`RULES`)."""
    return pa.Check(passes, name=name)


#: Internal column of rejects: the position of the rejected row in its raw table.
ROW = "_row"


def _validate(raw: pd.DataFrame, schema: pa.DataFrameSchema, file: str) -> pd.DataFrame:
    """Run ``schema`` lazily on the raw text table; return its failures as rejects rows.

    ``raw`` must have a default RangeIndex; the rejects carry it in :data:`ROW`.
    """
    try:
        schema.validate(raw, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        cases = cases[cases["index"].notna() & cases["check"].isin(list(RULES))]
        index = cases["index"].astype("int64").to_numpy()
        columns = cases["column"].to_numpy()
        cells = raw.to_numpy()[index, [raw.columns.get_loc(c) for c in columns]] \
            if len(index) else []
        if "_column" in raw:  # a wide file: name the column the value came from
            columns = np.where(columns == "value", raw["_column"].to_numpy()[index], columns)
        return pd.DataFrame({
            "file": file,
            "line": raw[LINE].to_numpy()[index],
            "subject_id": raw["subject_id"].to_numpy()[index],
            "column": columns,
            "value": cells,
            "rule": cases["check"].to_numpy(),
            "action": [RULES[r][1] for r in cases["check"]],
            ROW: index,
        })
    return pd.DataFrame(columns=[*REJECT_COLUMNS, ROW])


def _kept(raw: pd.DataFrame, rejects: pd.DataFrame) -> np.ndarray:
    keep = np.ones(len(raw), dtype=bool)
    keep[rejects[ROW].to_numpy(dtype="int64")] = False
    return keep


def _columns(table: pd.DataFrame, required: Sequence[str], known: Sequence[str], file: str,
             drop: Sequence[str], notes: list[str]) -> pd.DataFrame:
    """Check the header: required columns present, identifiers refused, extras dropped."""
    for column in required:
        if column not in table.columns:
            raise CohortError("required column is missing", file=file, column=column)
    extra = [c for c in table.columns if c not in known and c != LINE]
    identifying = [c for c in extra
                   if IDENTIFIER_PATTERN.search(c.lower()) and c not in drop]
    if identifying:
        raise CohortError(
            "looks like a direct identifier; remove it from the file or list it in "
            "ingest.drop_columns to drop it", file=file, column=identifying[0])
    if extra:
        notes.append(f"{file}: dropped column(s) not in the contract: {', '.join(extra)} "
                     "(never logged)")
    return table.drop(columns=extra)


def _number(text: pd.Series) -> pd.Series:
    return parse_numbers(text)


def _arrow_text(values) -> pyarrow.Array:
    """Text values as an Arrow string array (zero-copy for Arrow-backed pandas text)."""
    if isinstance(values, pd.Series | pd.Index):
        return pyarrow.array(values.astype("string[pyarrow]").array)
    return pyarrow.array(list(values), pyarrow.string())


def _isin(text: pd.Series, values) -> pd.Series:
    """``text.isin(values)`` for text columns, hashed in Arrow (fast on millions of rows)."""
    found = pc.fill_null(pc.is_in(_arrow_text(text), value_set=_arrow_text(values)), False)
    return pd.Series(found.to_numpy(zero_copy_only=False), index=text.index)


def _lookup(text: pd.Series, mapping: Callable[[str], object]) -> pd.Series:
    """``mapping`` applied once per distinct value of ``text`` (few distinct values)."""
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    mapped = np.array([mapping(u) for u in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=text.index, dtype=object)


def _blank(text: pd.Series) -> pd.Series:
    return text.str.strip().eq("")


def _row_codes(frame: pd.DataFrame) -> np.ndarray:
    """One int64 code per row, equal for equal rows (factorised columns, mixed radix)."""
    code = np.zeros(len(frame), dtype=np.int64)
    radix = 1
    for column in frame.columns:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        if radix * max(len(uniques), 1) >= 2**62:  # would overflow: re-code what we have
            code = pd.factorize(code)[0].astype(np.int64)
            radix = int(code.max()) + 1 if len(code) else 1
        code = code * max(len(uniques), 1) + codes
        radix *= max(len(uniques), 1)
    return code


def _duplicates(keys: pd.DataFrame, whole: pd.DataFrame, usable: pd.Series
                ) -> tuple[pd.Series, pd.Series]:
    """(exact copies of an earlier usable row, rows whose key repeats with other data).

    Only usable rows take part: a row rejected for another reason is no duplicate.
    """
    ok = usable.to_numpy(dtype=bool)
    exact = np.zeros(len(ok), dtype=bool)
    conflict = np.zeros(len(ok), dtype=bool)
    repeated = np.zeros(len(ok), dtype=bool)
    repeated[ok] = pd.Series(_row_codes(keys)[ok]).duplicated(keep=False).to_numpy()
    if not repeated.any():  # the usual case: nothing to compare in full
        return (pd.Series(exact, index=usable.index), pd.Series(conflict, index=usable.index))
    exact[repeated] = pd.Series(_row_codes(whole.loc[repeated])).duplicated().to_numpy()
    rest = repeated & ~exact
    conflict[rest] = pd.Series(_row_codes(keys.loc[rest])).duplicated(keep=False).to_numpy()
    return (pd.Series(exact, index=usable.index), pd.Series(conflict, index=usable.index))


# ----------------------------------------------------------------------- patients
def _check_patients(raw: pd.DataFrame, file: str, notes: list[str], drop: Sequence[str]):
    raw = _columns(raw, PATIENT_COLUMNS, PATIENT_COLUMNS, file, drop, notes)
    ids = raw["subject_id"].str.strip()
    typed = pd.DataFrame({
        "subject_id": ids,
        "arm": _lookup(raw["arm"], lambda v: ARMS.get(str(v).strip().lower())),
        "age": _number(raw["age"]),
        "sex": _lookup(raw["sex"], lambda v: SEXES.get(str(v).strip().lower())),
        "onset_site": _lookup(raw["onset_site"],
                              lambda v: ONSET_SITES.get(str(v).strip().lower())),
        "onset_months": _number(raw["onset_months"]),
    }, index=raw.index)
    present = ids.ne("")
    exact, conflict = _duplicates(raw[["subject_id"]].assign(subject_id=ids),
                                  raw.drop(columns=LINE).apply(lambda c: c.str.strip()),
                                  present)
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_id_missing", lambda s: present),
            _rule("exact_duplicate", lambda s: ~exact),
            _rule("subject_id_duplicate", lambda s: ~conflict)]),
        "arm": pa.Column(checks=_rule("arm_unknown", lambda s: typed["arm"].notna())),
        "sex": pa.Column(checks=_rule("sex_unknown", lambda s: typed["sex"].notna())),
        "onset_site": pa.Column(checks=_rule("onset_site_unknown",
                                             lambda s: typed["onset_site"].notna())),
        "age": pa.Column(checks=_rule("age_invalid", lambda s: _blank(s) | typed["age"].between(
            0, 120))),
        "onset_months": pa.Column(checks=_rule(
            "onset_months_invalid", lambda s: _blank(s) | (typed["onset_months"] > 0))),
    })
    rejects = _validate(raw, schema, file)
    return typed.loc[_kept(raw, rejects)].reset_index(drop=True), rejects, raw


def _subject_rules(raw: pd.DataFrame, patients: pd.DataFrame, all_ids: pd.Series,
                   ) -> tuple[pd.Series, pd.Series]:
    ids = raw["subject_id"].str.strip()
    known = _isin(ids, all_ids)
    usable = _isin(ids, patients["subject_id"])
    return known, usable | ~known  # second: "not rejected in patients.csv"


# ------------------------------------------------------------------------- alsfrs
def _check_alsfrs(raw: pd.DataFrame, file: str, patients: pd.DataFrame, all_ids: pd.Series,
                  notes: list[str], drop: Sequence[str], score_range: tuple[int, int]):
    raw = _columns(raw, ALSFRS_COLUMNS, ALSFRS_COLUMNS + ALSFRS_ITEMS, file, drop, notes)
    known, not_rejected = _subject_rules(raw, patients, all_ids)
    day, score = _number(raw["day"]), _number(raw["alsfrs_r"])
    day_ok = day.notna() & (day % 1 == 0)
    low, high = score_range
    score_ok = score.notna() & (score % 1 == 0) & score.between(low, high)
    blank = _blank(raw["alsfrs_r"])
    usable = known & not_rejected & day_ok & score_ok
    keys = pd.DataFrame({"s": raw["subject_id"].str.strip(), "d": day})
    exact, conflict = _duplicates(keys, keys.assign(y=score), usable)
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_unknown", lambda s: known),
            _rule("subject_rejected", lambda s: not_rejected),
            _rule("exact_duplicate", lambda s: ~exact),
            _rule("visit_conflict", lambda s: ~conflict)]),
        "day": pa.Column(checks=_rule("day_invalid", lambda s: day_ok)),
        "alsfrs_r": pa.Column(checks=[
            _rule("score_missing", lambda s: ~blank),
            _rule("score_invalid", lambda s: blank | score_ok)]),
    })
    rejects = _validate(raw, schema, file)
    keep = _kept(raw, rejects)
    visits = pd.DataFrame({
        "subject_id": raw.loc[keep, "subject_id"].str.strip(),
        "day": day[keep].astype("int64"),
        "alsfrs_r": score[keep].astype("int64"),
    }).sort_values(["subject_id", "day"], kind="stable").reset_index(drop=True)
    return visits, rejects, raw


# ---------------------------------------------------------------------------- csf
def _codes(text: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes and distinct values of a text column, surrounding spaces stripped.

    Stripping happens on the distinct values only, so it costs nothing on millions of
    rows with few spellings.
    """
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    stripped = pd.Index(uniques).astype(str).str.strip()
    merged, distinct = pd.factorize(stripped, use_na_sentinel=False)
    return merged[codes].astype(np.int64), pd.Index(distinct)


def _unit_factors(raw: pd.DataFrame, analyte: np.ndarray, panel: PanelSpec, file: str,
                  notes: list[str]) -> np.ndarray:
    """Factor from each row's unit to its analyte's canonical unit.

    ``analyte`` holds each row's index into ``panel.analytes`` (-1: not in the panel).
    A blank unit means the canonical unit, with a note.
    """
    unit, units = _codes(raw["unit"])
    table = np.ones((len(units), len(panel.analytes) + 1))  # last column: unknown analyte
    pair = np.unique(unit * (len(panel.analytes) + 1) + analyte + 1)
    for u, a in zip(pair // (len(panel.analytes) + 1), pair % (len(panel.analytes) + 1) - 1,
                    strict=True):
        if a < 0 or units[u] == "":
            continue
        target = panel.analytes[a].unit
        try:
            table[u, a] = conversion_factor(units[u], target)
        except KeyError:
            row = int(np.flatnonzero((unit == u) & (analyte == a))[0])
            raise CohortError(f"unit {units[u]!r} cannot be converted to {target}", file=file,
                              row=int(raw[LINE].iat[row]), column="unit") from None
    blank = (units[unit] == "") & (analyte >= 0) if (units == "").any() else None
    if blank is not None and blank.any():
        notes.append(f"{file}: {int(blank.sum())} value(s) without a unit read in the "
                     "panel's canonical unit")
    return table[unit, analyte]


def _check_csf(raw: pd.DataFrame, file: str, patients: pd.DataFrame, all_ids: pd.Series,
               panel: PanelSpec, notes: list[str], drop: Sequence[str]):
    raw = _columns(raw, CSF_COLUMNS, CSF_COLUMNS + CSF_OPTIONAL + ("_column",), file, drop,
                   notes)
    subject, subjects = _codes(raw["subject_id"])
    known = _isin(pd.Series(subjects), all_ids).to_numpy()[subject]
    usable_subject = _isin(pd.Series(subjects), patients["subject_id"]).to_numpy()[subject]
    known, not_rejected = pd.Series(known), pd.Series(usable_subject | ~known)
    spellings = {key: i for i, spec in enumerate(panel.analytes)
                 for key in (analyte_match_key(n) for n in (spec.name, *spec.aliases))}
    name_code, names = _codes(raw["analyte"])
    analyte = np.array([spellings.get(analyte_match_key(n), -1) for n in names],
                       dtype=np.int64)[name_code] if len(names) else np.zeros(0, np.int64)
    analyte_ok = pd.Series(analyte >= 0)
    tp_code, tps = _codes(raw["timepoint"])
    timepoint_ok = pd.Series(np.asarray(tps.isin(panel.timepoints))[tp_code])
    factor = _unit_factors(raw, analyte, panel, file, notes)
    file_limits = {c: (parse_numbers(raw[c], decimal_comma=panel.decimal_comma).to_numpy()
                       if c in raw else np.full(len(raw), np.nan)) for c in ("lloq", "uloq")}
    limit_ok = pd.Series(True, index=raw.index)
    for column in ("lloq", "uloq"):
        if column in raw:
            limit_ok &= _blank(raw[column]) | (file_limits[column] > 0)
    defaults = {c: np.array([getattr(spec, c) or np.nan for spec in panel.analytes] + [np.nan])
                [analyte] for c in ("lloq", "uloq")}  # analyte -1 takes the trailing NaN
    limits = {c: np.where(np.isnan(file_limits[c]), defaults[c] / factor, file_limits[c])
              for c in ("lloq", "uloq")}
    parsed = parse_concentrations(raw["value"], decimal_comma=panel.decimal_comma,
                                  lloq=pd.Series(limits["lloq"]), uloq=pd.Series(limits["uloq"]))
    flag = parsed["flag"]
    value_ok = flag != "invalid"
    negative = parsed["value"] < 0
    limit_missing = flag.isin(["below", "above"]) & parsed["value"].isna()
    usable = (known & not_rejected & analyte_ok & timepoint_ok & value_ok & ~negative
              & ~limit_missing & limit_ok)
    replicate = _codes(raw["replicate"])[0] if "replicate" in raw else np.zeros(len(raw), int)
    keys = pd.DataFrame({"s": subject, "t": tp_code, "a": analyte, "r": replicate})
    exact, conflict = _duplicates(keys, keys.assign(v=raw["value"].str.strip()), usable)
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_unknown", lambda s: known),
            _rule("subject_rejected", lambda s: not_rejected),
            _rule("exact_duplicate", lambda s: ~exact),
            _rule("measurement_conflict", lambda s: ~conflict)]),
        "analyte": pa.Column(checks=_rule("analyte_unknown", lambda s: analyte_ok)),
        "timepoint": pa.Column(checks=_rule("timepoint_unknown", lambda s: timepoint_ok)),
        "value": pa.Column(checks=[
            _rule("value_invalid", lambda s: value_ok),
            _rule("value_negative", lambda s: ~negative),
            _rule("limit_missing", lambda s: ~limit_missing)]),
        **{c: pa.Column(checks=_rule("limit_invalid", lambda s, c=c: _blank(s) | (
            file_limits[c] > 0))) for c in ("lloq", "uloq") if c in raw},
    })
    rejects = _validate(raw, schema, file)
    keep = _kept(raw, rejects)
    panel_names = [spec.name for spec in panel.analytes]
    wells = pd.DataFrame({
        "subject_id": pd.Categorical.from_codes(subject[keep], categories=subjects.unique())
        if subjects.is_unique else subjects[subject[keep]],
        "timepoint": pd.Categorical.from_codes(tp_code[keep], categories=tps),
        "analyte": pd.Categorical.from_codes(analyte[keep], categories=panel_names),
        "value": (parsed["value"].to_numpy() * factor)[keep],
        "flag": flag[keep].to_numpy(),
        "limit": (parsed["limit"].to_numpy() * factor)[keep],
        "plate": raw.loc[keep, "plate"].str.strip().to_numpy() if "plate" in raw else "",
    })
    csf, qc = _combine_replicates(wells, panel.replicate_cv_max_percent)
    if len(csf) < len(wells):
        notes.append(f"{file}: combined {len(wells)} replicate rows into {len(csf)} sample "
                     f"values (mean); {int(qc['flagged'].sum())} above "
                     f"{panel.replicate_cv_max_percent:g}% CV flagged in the QC report")
    present = set(csf["analyte"].unique())
    for spec in panel.analytes:
        if spec.required and spec.name not in present:
            raise CohortError(f"required analyte {spec.name} has no usable value", file=file)
    return csf, qc, rejects, raw, len(wells)


def _combine_replicates(wells: pd.DataFrame, cv_max: float):
    """One row per sample and analyte: the mean of quantified replicate wells.

    Censored wells count only when no well of that sample was quantified; the QC report
    gives the CV% of quantified replicates and flags it above ``cv_max``.
    """
    keys = ["subject_id", "timepoint", "analyte"]
    if not pd.Series(_row_codes(wells[keys])).duplicated().any():  # no replicates: fast path
        csf = wells.assign(n_replicates=1, cv_percent=np.nan)
        return csf, pd.DataFrame(columns=list(QC_COLUMNS))
    quantified = wells["flag"].isin(["observed", "extrapolated"])
    ranked = wells.assign(_rank=np.where(quantified, 0, 1))
    best = ranked.groupby(keys, sort=False)["_rank"].transform("min")
    chosen = ranked[ranked["_rank"] == best]
    grouped = chosen.groupby(keys, sort=False, as_index=False)
    csf = grouped.agg(value=("value", "mean"), flag=("flag", "first"),
                      limit=("limit", "first"), plate=("plate", "first"),
                      n_replicates=("value", "size"), sd=("value", "std"))
    csf["cv_percent"] = np.where((csf["n_replicates"] > 1) & (csf["flag"] != "below"),
                                 100 * csf["sd"] / csf["value"], np.nan)
    csf = csf.drop(columns="sd")
    qc = csf[csf["n_replicates"] > 1].rename(columns={"value": "mean"})
    qc = qc.assign(flagged=qc["cv_percent"] > cv_max)[list(QC_COLUMNS)]
    return csf, qc.reset_index(drop=True)


# -------------------------------------------------------------------------- entry
def _account(file: str, rows_read: int, rows_used: int, rejects: pd.DataFrame
             ) -> dict[str, object]:
    """Rows read = rows used + rows rejected, or an internal error."""
    rejected = rejects[ROW].nunique()
    if rows_used + rejected != rows_read:
        raise RuntimeError(f"internal error: {file}: {rows_read} rows read but {rows_used} "
                           f"used and {rejected} rejected")
    return {"file": file, "rows_read": rows_read, "rows_used": rows_used,
            "rows_rejected": rejected}


def check_cohort(raw: RawCohort, *, panel: PanelSpec, drop_columns: Sequence[str] = (),
                 score_range: tuple[int, int] = (0, 48)) -> CheckedCohort:
    """Check a raw cohort against the input contract and return typed tables.

    Parameters
    ----------
    raw : RawCohort
        Tables as read by :func:`csf_responder.io.read_cohort` (CSF in long layout).
    panel : PanelSpec
        Analytes (names, aliases, units, default limits), timepoints, number format.
    drop_columns : sequence of str
        Identifier-like columns to drop rather than refuse.
    score_range : (int, int)
        Valid range of the functional score (ALSFRS-R: 0-48).

    Raises
    ------
    CohortError
        When a file cannot be used at all (see the module docstring).
    """
    notes: list[str] = list(raw.notes)
    files = {name: raw.file(name) for name in ("patients.csv", "alsfrs.csv", "csf.csv")}
    tables = {name: table.reset_index(drop=True) for name, table in
              zip(files, (raw.patients, raw.alsfrs, raw.csf), strict=True)}
    patients, p_rejects, p_raw = _check_patients(tables["patients.csv"], files["patients.csv"],
                                                 notes, drop_columns)
    all_ids = p_raw["subject_id"].str.strip()
    alsfrs, a_rejects, _ = _check_alsfrs(tables["alsfrs.csv"], files["alsfrs.csv"], patients,
                                         all_ids, notes, drop_columns, score_range)
    csf, qc, c_rejects, _, n_wells = _check_csf(tables["csf.csv"], files["csf.csv"], patients,
                                                all_ids, panel, notes, drop_columns)
    accounting = pd.DataFrame([
        _account(files["patients.csv"], len(p_raw), len(patients), p_rejects),
        _account(files["alsfrs.csv"], len(tables["alsfrs.csv"]), len(alsfrs), a_rejects),
        _account(files["csf.csv"], len(tables["csf.csv"]), n_wells, c_rejects),
    ], columns=list(ACCOUNT_COLUMNS))
    parts = [r.drop(columns=ROW) for r in (p_rejects, a_rejects, c_rejects) if len(r)]
    rejects = (pd.concat(parts, ignore_index=True) if parts
               else pd.DataFrame(columns=list(REJECT_COLUMNS)))
    return CheckedCohort(patients, alsfrs, csf.reset_index(drop=True), rejects, qc,
                         accounting, notes)
