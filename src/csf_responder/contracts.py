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

from csf_responder.censoring import (
    FLAGS,
    concentration_arrays,
    dictionary_codes,
    parse_numbers,
)
from csf_responder.cohort import CsfCells
from csf_responder.config import (
    CovariateSpec,
    IndicationSpec,
    PanelSpec,
    ScoreSpec,
    analyte_match_key,
)
from csf_responder.errors import CohortError
from csf_responder.io import LINE, RawCohort
from csf_responder.readers import (
    WideCsf,
    arrow_text,
    blank_text,
    constant_text,
    match_headers,
)
from csf_responder.units import conversion_factor

__all__ = ["ACCOUNT_COLUMNS", "BRIDGE_COLUMNS", "QC_COLUMNS", "REJECT_COLUMNS", "RULES",
           "CheckedCohort", "check_cohort", "covariate_rules"]

PATIENT_COLUMNS = ("subject_id", "arm")
VISIT_COLUMNS = ("subject_id", "day")
CSF_COLUMNS = ("subject_id", "timepoint", "analyte", "value", "unit")
CSF_OPTIONAL = ("lloq", "uloq", "plate", "replicate", "sample_type")
#: Spellings of ``sample_type``: a patient's sample, or a bridging sample (the same
#: reference material run on every plate, for plate-to-plate normalisation).
SAMPLE_TYPES = {"": "sample", "sample": "sample", "patient": "sample", "bridge": "bridge",
                "bridging": "bridge"}
#: Columns of the bridging-sample table (one row per plate and analyte).
BRIDGE_COLUMNS = ("plate", "analyte", "value", "n_wells")
ARMS = {"msc": "MSC", "control": "control"}

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

#: Every rule a row can break: what it means and what is done. Each clinical covariate
#: of the indication adds its own rule, ``{covariate}_unknown`` (a category) or
#: ``{covariate}_invalid`` (a number): see :func:`covariate_rules`.
RULES: dict[str, tuple[str, str]] = {
    "subject_id_missing": ("subject_id is blank", "row dropped"),
    "subject_id_duplicate": ("the same subject_id with different data", "patient dropped"),
    "exact_duplicate": ("an exact copy of an earlier row", "copy dropped"),
    "arm_unknown": ("arm is not MSC or control", "patient dropped"),
    "label_invalid": ("the label column holds something other than 0, 1 or blank",
                      "patient dropped"),
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
    "sample_type_unknown": ("sample_type is not sample or bridge", "row dropped"),
    "bridge_without_plate": ("a bridging sample without its plate", "row dropped"),
}


def covariate_rules(indication: IndicationSpec) -> dict[str, tuple[str, str]]:
    """The rule each clinical covariate of ``indication`` adds to :data:`RULES`."""
    rules = {}
    for name, spec in indication.covariates.items():
        if spec.type == "category":
            rules[f"{name}_unknown"] = (f"{name} is not one of {', '.join(spec.levels)}",
                                        "patient dropped")
        else:
            low = "" if spec.min is None else f"{'>' if spec.min_exclusive else '>='} {spec.min:g}"
            high = "" if spec.max is None else f"<= {spec.max:g}"
            bounds = " and ".join(b for b in (low, high) if b)
            rules[f"{name}_invalid"] = (f"{name} is not a number{' ' + bounds if bounds else ''}",
                                        "patient dropped")
    return rules


@dataclass(frozen=True)
class CheckedCohort:
    """Typed cohort tables that passed the contract, and what did not.

    Attributes
    ----------
    patients : DataFrame
        One row per subject: ``subject_id``, ``arm`` (``MSC``/``control``), the
        indication's covariates (numbers as float, categories as their level) and, with
        a label column, that column (nullable Int64). For ALS: ``age``
        (years), ``sex``, ``onset_site``, ``onset_months`` (symptom onset to baseline).
    visits : DataFrame
        One row per visit: ``subject_id``, ``day`` (int, days from baseline) and
        ``score`` (int, the indication's functional score, e.g. the ALSFRS-R total).
    csf : DataFrame
        One row per subject, timepoint and analyte: ``value`` in the analyte's canonical
        unit (the limit when censored), ``flag``, ``limit``, ``plate``, ``n_replicates``
        and ``cv_percent`` (NaN with fewer than two quantified replicates). Empty when
        ``csf_cells`` holds the CSF instead.
    bridges : DataFrame
        Bridging samples (``sample_type: bridge``), :data:`BRIDGE_COLUMNS`: the mean
        quantified value (canonical unit) of each analyte on each plate.
    rejects : DataFrame
        One row per broken rule, :data:`REJECT_COLUMNS`.
    qc : DataFrame
        Replicate QC, :data:`QC_COLUMNS`.
    accounting : DataFrame
        Per file, rows read = rows used + rows rejected, :data:`ACCOUNT_COLUMNS`.
    notes : list of str
        What a user should know (dropped columns, assumed units, merged replicates).
    csf_cells : CsfCells or None
        A wide CSF file whose every cell passed the contract, as the cells of the wide
        cohort table (``check_cohort(..., wide_csf=...)``); None otherwise.
    """

    patients: pd.DataFrame
    visits: pd.DataFrame
    csf: pd.DataFrame
    bridges: pd.DataFrame
    rejects: pd.DataFrame
    qc: pd.DataFrame
    accounting: pd.DataFrame
    notes: list[str]
    csf_cells: CsfCells | None = None


# ------------------------------------------------------------------ schema helpers
def _rule(name: str, passes: Callable[[pd.Series], pd.Series]) -> pa.Check:
    """A pandera check named after a rule of :data:`RULES` (the name is what failure
    cases report; the rule's description lives in :data:`RULES`)."""
    return pa.Check(passes, name=name)


#: Internal column of rejects: the position of the rejected row in its raw table.
ROW = "_row"


def _validate(raw: pd.DataFrame, schema: pa.DataFrameSchema, file: str,
              rules: dict[str, tuple[str, str]] = RULES) -> pd.DataFrame:
    """Run ``schema`` lazily on the raw text table; return its failures as rejects rows.

    ``raw`` must have a default RangeIndex; the rejects carry it in :data:`ROW`.
    ``rules`` names every check that can fail and the action it takes.
    """
    try:
        schema.validate(raw, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        cases = cases[cases["index"].notna() & cases["check"].isin(list(rules))]
        index = cases["index"].astype("int64").to_numpy()
        columns = cases["column"].to_numpy()
        cells = np.empty(len(index), dtype=object) if len(index) else []
        for column in pd.unique(columns) if len(index) else []:  # only the cells reported
            rows = np.flatnonzero(columns == column)
            cells[rows] = raw[column].iloc[index[rows]].to_numpy(dtype=object)
        if "_column" in raw:  # a wide file: name the column the value came from
            columns = np.where(columns == "value",
                               raw["_column"].iloc[index].to_numpy(dtype=object), columns)
        return pd.DataFrame({
            "file": file,
            "line": raw[LINE].to_numpy()[index],
            "subject_id": raw["subject_id"].iloc[index].to_numpy(dtype=object),
            "column": columns,
            "value": cells,
            "rule": cases["check"].to_numpy(),
            "action": [rules[r][1] for r in cases["check"]],
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
    table = match_headers(table, [c for c in known if c != "_column"], file=file, notes=notes)
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


def _arrow_text(values) -> pyarrow.Array | pyarrow.ChunkedArray:
    """Text values as an Arrow string array (zero-copy for Arrow-backed pandas text)."""
    if isinstance(values, pd.Series | pd.Index):
        array = getattr(values.array, "_pa_array", None)
        if array is not None and pyarrow.types.is_large_string(array.type):
            return array  # the column's own storage (no conversion to 32-bit offsets)
        return pyarrow.array(values.astype("string[pyarrow]").array)
    return pyarrow.array(list(values), pyarrow.string())


def _isin(text: pd.Series, values) -> pd.Series:
    """``text.isin(values)`` for text columns, hashed in Arrow (fast on millions of rows)."""
    array, value_set = _arrow_text(text), _arrow_text(values)
    if (len(array) == len(value_set) and array.null_count == 0 and array.type == value_set.type
            and array.equals(value_set)):  # the same values in the same order (cheap test)
        return _series(np.ones(len(array), dtype=bool), index=text.index)
    found = pc.fill_null(pc.is_in(array, value_set=value_set), False)
    return _series(found.to_numpy(zero_copy_only=False), index=text.index)


def _series(values: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """A Series over a freshly computed array, without copying it (a mask per row)."""
    return pd.Series(values, index=index, copy=False)


def _lookup(text: pd.Series, mapping: Callable[[str], object]) -> pd.Series:
    """``mapping`` applied once per distinct value of ``text`` (few distinct values)."""
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    mapped = np.array([mapping(u) for u in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=text.index, dtype=object)


def _blank(text: pd.Series) -> pd.Series:
    """``text.str.strip().eq("")`` (vectorised in Arrow for Arrow-backed text)."""
    return _series(blank_text(text), index=text.index)


def _row_codes(frame: pd.DataFrame) -> np.ndarray:
    """One int64 code per row, equal for equal rows (factorised columns, mixed radix)."""
    code = np.zeros(len(frame), dtype=np.int64)
    radix = 1
    for column in frame.columns:
        array = _arrow_strings(frame[column])
        if array is not None:  # Arrow-backed text: hashed by Arrow
            codes, uniques = dictionary_codes(array)
        else:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        if radix * max(len(uniques), 1) >= 2**62:  # would overflow: re-code what we have
            code = pd.factorize(code)[0].astype(np.int64)
            radix = int(code.max()) + 1 if len(code) else 1
        code = code * max(len(uniques), 1) + codes
        radix *= max(len(uniques), 1)
    return code


def _repeats(codes: np.ndarray) -> np.ndarray:
    """``Series(codes).duplicated(keep=False)`` for non-negative int codes; counted with
    ``bincount`` when the codes are dense enough (no hashing)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=bool)
    if (codes[1:] > codes[:-1]).all():  # strictly increasing (rows in key order): unique
        return np.zeros(len(codes), dtype=bool)
    if int(codes.max()) < 2 * len(codes) + (1 << 20):
        counts = np.bincount(codes)
        if counts.max() < 2:  # the usual case: no code repeats
            return np.zeros(len(codes), dtype=bool)
        return counts[codes] > 1
    return pd.Series(codes).duplicated(keep=False).to_numpy()


def _dense_codes(codes: Sequence[tuple[np.ndarray, int]]) -> np.ndarray | None:
    """Mixed-radix row codes from (codes in ``0..size-1``, size) columns; None if the
    radix would overflow int64. Codes are int32 when they fit (half the memory)."""
    radix = 1
    for _, size in codes:
        radix *= max(size, 1)
    if radix >= 2**62:
        return None
    if not codes:
        return np.zeros(0, dtype=np.int64)
    code = codes[0][0].astype(np.int32 if radix < 2**31 else np.int64)  # a copy
    for column, size in codes[1:]:
        code *= max(size, 1)
        code += column
    return code


def _increasing(frame: pd.DataFrame) -> bool:
    """Whether every row's key (its columns, compared in order) is greater than the row
    before's, so that no two rows share a key; False when that cannot be told cheaply
    (columns neither Arrow text nor numbers, NaN)."""
    n = len(frame)
    tied = np.ones(max(n - 1, 0), dtype=bool)  # rows equal to the row before, so far
    for column in frame.columns:
        if not tied.any():
            break
        array = _arrow_strings(frame[column])
        if array is not None:
            first, second = array.slice(0, n - 1), array.slice(1)
            less = np.asarray(pc.less(first, second).to_numpy(zero_copy_only=False), bool)
            equal = np.asarray(pc.equal(first, second).to_numpy(zero_copy_only=False), bool)
        elif pd.api.types.is_numeric_dtype(frame[column]) and not isinstance(
                frame[column].dtype, pd.api.extensions.ExtensionDtype):
            values = frame[column].to_numpy()
            less, equal = values[:-1] < values[1:], values[:-1] == values[1:]
        else:
            return False
        if (tied & ~less & ~equal).any():  # smaller, or not comparable (NaN)
            return False
        tied &= equal
    return not tied.any()


def _duplicates(keys: pd.DataFrame | np.ndarray,
                whole: pd.DataFrame | Callable[[np.ndarray], pd.DataFrame],
                usable: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(exact copies of an earlier usable row, rows whose key repeats with other data).

    Only usable rows take part: a row rejected for another reason is no duplicate.
    ``keys`` is a table of key columns or already one non-negative int code per row;
    ``whole`` the full rows to compare, or a function building them for a row mask (only
    called when some key repeats).
    """
    ok = usable.to_numpy(dtype=bool)
    exact = np.zeros(len(ok), dtype=bool)
    conflict = np.zeros(len(ok), dtype=bool)
    repeated = np.zeros(len(ok), dtype=bool)
    if not isinstance(keys, np.ndarray) and _increasing(keys):  # rows in key order,
        # each key greater than the one before: no key repeats (no hashing needed)
        return (_series(exact, index=usable.index), _series(conflict, index=usable.index))
    key = keys if isinstance(keys, np.ndarray) else _row_codes(keys)
    repeated[ok] = _repeats(key if ok.all() else key[ok])
    if not repeated.any():  # the usual case: nothing to compare in full
        return (_series(exact, index=usable.index), _series(conflict, index=usable.index))
    rows = whole(repeated) if callable(whole) else whole.loc[repeated]
    exact[repeated] = pd.Series(_row_codes(rows)).duplicated().to_numpy()
    rest = repeated & ~exact
    conflict[rest] = pd.Series(key[rest]).duplicated(keep=False).to_numpy()
    return (_series(exact, index=usable.index), _series(conflict, index=usable.index))


# ----------------------------------------------------------------------- patients
def _covariate(text: pd.Series, spec: CovariateSpec, decimal_comma: bool
               ) -> tuple[pd.Series, pd.Series]:
    """(typed values, valid mask) of one covariate column; a blank cell is valid (missing)
    unless the covariate is required."""
    blank = _blank(text)
    if spec.type == "category":
        spellings = spec.spellings()
        typed = _lookup(text, lambda v: spellings.get(str(v).strip().lower()))
        ok = typed.notna()
    else:
        typed = parse_numbers(text, decimal_comma=decimal_comma)
        ok = typed.notna()
        if spec.min is not None:
            ok &= typed > spec.min if spec.min_exclusive else typed >= spec.min
        if spec.max is not None:
            ok &= typed <= spec.max
    return typed, ok | (blank & (not spec.required))


def _check_patients(raw: pd.DataFrame, file: str, notes: list[str], drop: Sequence[str],
                    indication: IndicationSpec, label_column: str | None,
                    decimal_comma: bool, arm_required: bool = True):
    columns = (*PATIENT_COLUMNS, *indication.covariates, *([label_column] if label_column
                                                             else []))
    required = [c for c in columns if arm_required or c != "arm"]
    raw = _columns(raw, required, columns, file, drop, notes)
    ids = raw["subject_id"].str.strip()
    typed = {"subject_id": ids}
    checks = {}
    if "arm" in raw.columns:
        typed["arm"] = _lookup(raw["arm"], lambda v: ARMS.get(str(v).strip().lower()))
        checks["arm"] = pa.Column(checks=_rule("arm_unknown",
                                               lambda s: typed["arm"].notna()))
    else:  # a cohort to score: not randomised (yet)
        typed["arm"] = pd.Series(pd.NA, index=raw.index, dtype=object)
    for name, spec in indication.covariates.items():
        typed[name], ok = _covariate(raw[name], spec, decimal_comma)
        rule = f"{name}_unknown" if spec.type == "category" else f"{name}_invalid"
        checks[name] = pa.Column(checks=_rule(rule, lambda s, ok=ok: ok))
    if label_column:
        label = _number(raw[label_column])
        typed[label_column] = pd.array(label, dtype="Int64")
        label_ok = _blank(raw[label_column]) | label.isin([0, 1])
        checks[label_column] = pa.Column(checks=_rule("label_invalid", lambda s: label_ok))
    typed = pd.DataFrame(typed, index=raw.index)
    present = ids.ne("")
    exact, conflict = _duplicates(
        raw[["subject_id"]].assign(subject_id=ids),
        lambda rows: raw.loc[rows].drop(columns=LINE).apply(lambda c: c.str.strip()), present)
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_id_missing", lambda s: present),
            _rule("exact_duplicate", lambda s: ~exact),
            _rule("subject_id_duplicate", lambda s: ~conflict)]),
        **checks,
    })
    rejects = _validate(raw, schema, file, {**RULES, **covariate_rules(indication)})
    return typed.loc[_kept(raw, rejects)].reset_index(drop=True), rejects, raw


def _subject_rules(raw: pd.DataFrame, patients: pd.DataFrame, all_ids: pd.Series,
                   ids: pd.Series | None = None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(subject_id given, known in patients.csv or blank, not rejected there); ``ids``:
    the rows' subject_id stripped, if done already."""
    ids = raw["subject_id"].str.strip() if ids is None else ids
    present = ids.ne("")
    in_file = _isin(ids, all_ids)
    kept = patients["subject_id"]
    same = len(kept) == len(all_ids) and arrow_text(kept).equals(
        arrow_text(all_ids))  # no patient rejected (the usual case): one lookup
    usable = in_file if same else _isin(ids, kept)
    known = in_file | ~present
    return present, known, usable | ~known | ~present


def _integral(values: pd.Series) -> np.ndarray:
    """Whether each number is a whole one (NaN: no)."""
    numbers = values.to_numpy(dtype="float64")
    return ~np.isnan(numbers) & (numbers % 1 == 0)


# ------------------------------------------------------------------------- visits
def _check_visits(raw: pd.DataFrame, file: str, patients: pd.DataFrame, all_ids: pd.Series,
                  notes: list[str], drop: Sequence[str], score: ScoreSpec):
    columns = (*VISIT_COLUMNS, score.column)
    raw = _columns(raw, columns, (*columns, *score.items), file, drop, notes)
    ids = raw["subject_id"].str.strip()
    present, known, not_rejected = _subject_rules(raw, patients, all_ids, ids)
    day, value = _number(raw["day"]), _number(raw[score.column])
    day_ok = _series(_integral(day), index=raw.index)
    numbers = value.to_numpy()
    with np.errstate(invalid="ignore"):
        score_ok = _series(_integral(value) & (numbers >= score.min) & (numbers <= score.max),
                           index=raw.index)
    blank = _blank(raw[score.column])
    usable = present & known & not_rejected & day_ok & score_ok
    keys = pd.DataFrame({"s": ids, "d": day})
    exact, conflict = _duplicates(keys, keys.assign(y=value), usable)
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_id_missing", lambda s: present),
            _rule("subject_unknown", lambda s: known),
            _rule("subject_rejected", lambda s: not_rejected),
            _rule("exact_duplicate", lambda s: ~exact),
            _rule("visit_conflict", lambda s: ~conflict)]),
        "day": pa.Column(checks=_rule("day_invalid", lambda s: day_ok)),
        score.column: pa.Column(checks=[
            _rule("score_missing", lambda s: ~blank),
            _rule("score_invalid", lambda s: blank | score_ok)]),
    })
    rejects = _validate(raw, schema, file)
    keep = _kept(raw, rejects)
    visits = pd.DataFrame({
        "subject_id": ids.loc[keep],
        "day": day[keep].astype("int64"),
        "score": value[keep].astype("int64"),
    })
    if not _sorted(visits["subject_id"], visits["day"]):  # files are usually in order
        visits = visits.sort_values(["subject_id", "day"], kind="stable")
    visits = visits.reset_index(drop=True)
    return visits, rejects, raw


def _sorted(text: pd.Series, number: pd.Series) -> bool:
    """Whether rows are in (text, number) order already, so that a stable sort by them
    would change nothing (text compared by code point, as pandas sorts it)."""
    if len(text) < 2:
        return True
    array = _arrow_strings(text)
    if array is None:
        return False
    first, second = array.slice(0, len(text) - 1), array.slice(1)
    if not pc.all(pc.less_equal(first, second)).as_py():
        return False
    same = np.asarray(pc.equal(first, second).to_numpy(zero_copy_only=False), dtype=bool)
    values = number.to_numpy()
    return bool((values[1:][same] >= values[:-1][same]).all())


# ---------------------------------------------------------------------------- csf
#: What the flag codes of :func:`csf_responder.censoring.concentration_arrays` stand for.
FLAG_CODES = (*FLAGS, "invalid")


def _text_storage(text: pd.Series) -> pyarrow.ChunkedArray:
    """A text column as Arrow strings (its own storage when Arrow-backed)."""
    array = getattr(text.array, "_pa_array", None)
    if array is not None and (pyarrow.types.is_large_string(array.type)
                              or pyarrow.types.is_string(array.type)):
        return array
    return pyarrow.chunked_array([_arrow_text(text)])


def _kept_text(array: pyarrow.ChunkedArray, keep: np.ndarray, all_kept: bool) -> pd.Series:
    """The kept rows of Arrow text as a pandas ``str`` column."""
    if not all_kept:
        array = array.filter(pyarrow.array(keep))
    return pd.Series(array.to_pandas().to_numpy(dtype=object), dtype="str") if \
        array.null_count else array.to_pandas()


def _flag_text(codes: np.ndarray) -> pd.Series:
    """Flag codes as a pandas ``str`` column of flag names (built in Arrow)."""
    names = pyarrow.array(FLAG_CODES, pyarrow.large_string())
    return pyarrow.chunked_array([names.take(pyarrow.array(codes))]).to_pandas()


def _arrow_strings(text: pd.Series) -> pyarrow.ChunkedArray | None:
    """The Arrow storage of a null-free Arrow-backed text column, else None."""
    array = getattr(text.array, "_pa_array", None)
    if array is None or array.null_count or not (
            pyarrow.types.is_large_string(array.type) or pyarrow.types.is_string(array.type)):
        return None
    return array


def _codes(text: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes and distinct values of a text column, surrounding spaces stripped.

    Stripping happens on the distinct values only, so it costs nothing on millions of
    rows with few spellings. Arrow-backed text is hashed by Arrow (codes in order of
    first appearance, as ``pd.factorize`` gives them).
    """
    array = _arrow_strings(text)
    if array is not None:
        indices, uniques = dictionary_codes(array)
        stripped = pc.utf8_trim_whitespace(uniques)
        if stripped.equals(uniques):  # the usual case: nothing to strip, nothing merges
            codes, distinct = indices, uniques
        else:
            merged, distinct = dictionary_codes(stripped)
            codes = merged[indices] if len(indices) else np.zeros(0, np.int32)
        return codes, pd.Index(distinct.to_pandas(), dtype="str")
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    stripped = pd.Index(uniques).astype(str).str.strip()
    merged, distinct = pd.factorize(stripped, use_na_sentinel=False)
    return merged[codes].astype(np.int64), pd.Index(distinct)


def _unit_factors(raw: pd.DataFrame, analyte: np.ndarray, panel: PanelSpec, file: str,
                  notes: list[str], present: np.ndarray | None = None
                  ) -> np.ndarray | np.float64:
    """Factor from each row's unit to its analyte's canonical unit.

    ``analyte`` holds each row's index into ``panel.analytes`` (-1: not in the panel);
    ``present`` the distinct values of ``analyte`` when known (then a file with one unit
    needs no pass over the rows to find its unit/analyte pairs).
    A blank unit means the canonical unit, with a note. When every factor is 1 this is
    the scalar 1.0 (it broadcasts like the array of ones it stands for).
    """
    unit, units = _codes(raw["unit"])
    table = np.ones((len(units), len(panel.analytes) + 1))  # last column: unknown analyte
    if len(units) == 1 and present is not None:  # one unit: the pairs are known already
        pair = np.asarray(present, dtype=np.int64) + 1
    else:
        combined = unit.astype(np.int64) * (len(panel.analytes) + 1) + analyte + 1
        pair = np.flatnonzero(np.bincount(combined, minlength=0)) if len(combined) else combined
        del combined
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
    blank = (np.asarray(units == "")[unit] & (analyte >= 0) if (units == "").any()
             else None)
    if blank is not None and blank.any():
        notes.append(f"{file}: {int(blank.sum())} value(s) without a unit read in the "
                     "panel's canonical unit")
    if (table == 1).all():  # every unit is the canonical one: no array of ones
        return np.float64(1.0)
    return table[unit, analyte]


def _limits(panel: PanelSpec, c: str, analyte: np.ndarray, factor: np.ndarray | np.float64,
            given: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """Limit ``c`` (lloq/uloq) of some rows: the file's, else the panel's in the row's
    unit. Asked only for censored cells that write no limit (no array over every row)."""
    default = np.array([getattr(spec, c) or np.nan for spec in panel.analytes] + [np.nan])

    def of(rows: np.ndarray) -> np.ndarray:  # analyte -1 takes the trailing NaN
        values = default[analyte[rows]] / (factor[rows] if np.ndim(factor) else factor)
        if given is not None:
            values = np.where(np.isnan(given[rows]), values, given[rows])
        return values
    return of


def _panel_positions(panel: PanelSpec, names: Sequence[str]) -> np.ndarray:
    """Each analyte name's position in ``panel.analytes``, matched by name or alias
    (:func:`csf_responder.config.analyte_match_key`); -1 when not in the panel."""
    spellings = {key: i for i, spec in enumerate(panel.analytes)
                 for key in (analyte_match_key(n) for n in (spec.name, *spec.aliases))}
    return np.array([spellings.get(analyte_match_key(n), -1) for n in names],
                    dtype=np.int32)


def _check_csf(raw: pd.DataFrame, file: str, patients: pd.DataFrame, all_ids: pd.Series,
               panel: PanelSpec, notes: list[str], drop: Sequence[str]):
    raw = _columns(raw, CSF_COLUMNS, CSF_COLUMNS + CSF_OPTIONAL + ("_column",), file, drop,
                   notes)
    # every text column is hashed once; rules are then computed per distinct value and
    # spread to the rows by code (millions of rows, few spellings)
    subject, subjects = _codes(raw["subject_id"])
    present_code = np.asarray(subjects != "")
    known_code = _isin(pd.Series(subjects), all_ids).to_numpy() | ~present_code
    usable_code = _isin(pd.Series(subjects), patients["subject_id"]).to_numpy()
    bridge, sample_type_ok = _sample_types(raw)
    present = _series(present_code[subject])
    known = _series(known_code[subject] | bridge)  # a bridge is no patient
    not_rejected = _series((usable_code | ~known_code | ~present_code)[subject] | bridge)
    plate_ok = _series(~bridge | ~blank_text(raw["plate"]) if "plate" in raw else ~bridge)
    name_code, names = _codes(raw["analyte"])
    of_name = _panel_positions(panel, names)
    analyte = of_name[name_code] if len(names) else np.zeros(0, np.int32)
    del name_code
    analyte_ok = _series(analyte >= 0)
    tp_code, tps = _codes(raw["timepoint"])
    tp_code, tps = _canonical_timepoints(tp_code, tps, panel.timepoints, file, notes)
    timepoint_ok = _series(np.asarray(tps.isin(panel.timepoints))[tp_code] | bridge)
    factor = _unit_factors(raw, analyte, panel, file, notes,
                           present=np.unique(of_name))  # every name in ``names`` occurs in a row
    file_limits = {c: (parse_numbers(raw[c], decimal_comma=panel.decimal_comma).to_numpy()
                       if c in raw else None) for c in ("lloq", "uloq")}
    limit_ok = np.ones(len(raw), dtype=bool)
    for column in ("lloq", "uloq"):
        if column in raw:
            limit_ok &= blank_text(raw[column]) | (file_limits[column] > 0)
    limit_ok = _series(limit_ok, index=raw.index)
    value, flag, limit = concentration_arrays(
        raw["value"], decimal_comma=panel.decimal_comma,
        lloq=_limits(panel, "lloq", analyte, factor, file_limits["lloq"]),
        uloq=_limits(panel, "uloq", analyte, factor, file_limits["uloq"]))
    value_ok = _series(flag != FLAG_CODES.index("invalid"))
    negative = _series(value < 0)
    limit_missing = _series(((flag == FLAG_CODES.index("below"))
                               | (flag == FLAG_CODES.index("above"))) & np.isnan(value))
    usable = (present & known & not_rejected & sample_type_ok & plate_ok & analyte_ok
              & timepoint_ok & value_ok & ~negative & ~limit_missing & limit_ok)
    # one code per sample (subject, timepoint, analyte) and per well (and replicate):
    # equal codes, equal keys
    sample = _dense_codes([(subject, len(subjects)), (tp_code, len(tps)),
                           (analyte + 1, len(panel.analytes) + 1)])
    if "replicate" in raw:
        replicate, replicates = _codes(raw["replicate"])
        well = (_dense_codes([(sample, len(subjects) * len(tps) * (len(panel.analytes) + 1)),
                              (replicate, len(replicates))]) if sample is not None else None)
    else:
        replicate, well = np.zeros(len(raw), np.int64), sample
    if well is None:  # too many combinations for one int64: hash the columns
        well = _row_codes(pd.DataFrame({"s": subject, "t": tp_code, "a": analyte,
                                        "r": replicate}))
    del replicate
    if bridge.any():  # bridging wells are replicates of a reference, never conflicts
        well = np.array(well, dtype=np.int64)
        well[bridge] = well.max() + 1 + np.arange(int(bridge.sum()))
    exact, conflict = _duplicates(
        well, lambda rows, well=well: pd.DataFrame({"k": well[rows],
                                         "v": raw["value"][rows].str.strip().to_numpy()}),
        usable)
    masks = {"present": present, "known": known, "not_rejected": not_rejected, "exact": ~exact,
             "sample_type": sample_type_ok, "bridge_plate": plate_ok,
             "conflict": ~conflict, "analyte": analyte_ok, "timepoint": timepoint_ok,
             "value": value_ok, "negative": ~negative, "limit_missing": ~limit_missing}
    del present, known, not_rejected, sample_type_ok, plate_ok, analyte_ok, timepoint_ok
    del value_ok, negative, limit_missing
    del usable, exact, conflict, limit_ok, well
    schema = pa.DataFrameSchema({
        "subject_id": pa.Column(checks=[
            _rule("subject_id_missing", lambda s: masks["present"]),
            _rule("subject_unknown", lambda s: masks["known"]),
            _rule("subject_rejected", lambda s: masks["not_rejected"]),
            _rule("exact_duplicate", lambda s: masks["exact"]),
            _rule("measurement_conflict", lambda s: masks["conflict"])]),
        "analyte": pa.Column(checks=_rule("analyte_unknown", lambda s: masks["analyte"])),
        "timepoint": pa.Column(checks=_rule("timepoint_unknown",
                                            lambda s: masks["timepoint"])),
        "value": pa.Column(checks=[
            _rule("value_invalid", lambda s: masks["value"]),
            _rule("value_negative", lambda s: masks["negative"]),
            _rule("limit_missing", lambda s: masks["limit_missing"])]),
        **{c: pa.Column(checks=_rule("limit_invalid", lambda s, c=c: _blank(s) | (
            file_limits[c] > 0))) for c in ("lloq", "uloq") if c in raw},
        **({"sample_type": pa.Column(checks=_rule("sample_type_unknown",
                                                  lambda s: masks["sample_type"]))}
           if "sample_type" in raw else {}),
        **({"plate": pa.Column(checks=_rule("bridge_without_plate",
                                            lambda s: masks["bridge_plate"]))}
           if bridge.any() else {}),
    })
    rejects = _validate(raw, schema, file)
    masks.clear()
    keep = _kept(raw, rejects)
    all_kept = bool(keep.all())

    def kept(array: np.ndarray) -> np.ndarray:
        return array if all_kept else array[keep]

    panel_names = [spec.name for spec in panel.analytes]
    if np.ndim(factor) or factor != 1:  # the scalar 1.0: every unit is canonical
        value *= factor
        limit *= factor
    del factor
    wells = pd.DataFrame({  # (the distinct values of _codes are unique: categories)
        "subject_id": pd.Categorical.from_codes(kept(subject), categories=subjects,
                                                validate=False),
        "timepoint": pd.Categorical.from_codes(kept(tp_code), categories=tps, validate=False),
        "analyte": pd.Categorical.from_codes(kept(analyte), categories=panel_names,
                                             validate=False),
        "value": kept(value),
        "flag": _flag_text(kept(flag)),
        "limit": kept(limit),
        "plate": (_kept_text(pc.utf8_trim_whitespace(_text_storage(raw["plate"])), keep,
                             all_kept) if "plate" in raw
                  else constant_text("", int(keep.sum()))),  # (a scalar "" is slow)
    }, copy=False)  # fresh arrays: no copy into one consolidated block
    del value, limit, flag, subject, tp_code, analyte
    n_wells = len(wells)
    bridges = pd.DataFrame(columns=list(BRIDGE_COLUMNS))
    if bridge.any():
        is_bridge = kept(bridge)
        bridges = _bridges(wells[is_bridge], file, notes)
        wells = wells[~is_bridge].reset_index(drop=True)
        sample = None  # codes no longer aligned: recompute
    if sample is None:
        replicated = None
    elif "replicate" not in raw:
        # the well is the sample: a kept row passed the exact_duplicate and
        # measurement_conflict rules, so no two kept rows share a sample
        replicated = False
    else:
        replicated = bool(_repeats(kept(sample)).any())
    del sample
    csf, qc = _combine_replicates(wells, panel.replicate_cv_max_percent, replicated)
    if len(csf) < len(wells):
        notes.append(f"{file}: combined {len(wells)} replicate rows into {len(csf)} sample "
                     f"values (mean); {int(qc['flagged'].sum())} above "
                     f"{panel.replicate_cv_max_percent:g}% CV flagged in the QC report")
    present = set(csf["analyte"].unique())
    for spec in panel.analytes:
        if spec.required and spec.name not in present:
            raise CohortError(f"required analyte {spec.name} has no usable value", file=file)
    return csf, bridges, qc, rejects, raw, n_wells


def _check_wide_csf(wide: WideCsf, file: str, patients: pd.DataFrame, panel: PanelSpec,
                    notes: list[str]) -> CsfCells | None:
    """The cells of a wide CSF table whose every cell passes the contract, checked in
    its wide layout (no long table is built); None when some cell may not, or the file
    has what only the long layout handles (replicates, limits, bridging samples, blank
    or unconvertible units, nulls): :func:`_check_csf` then checks its long layout.

    For the tables it accepts it gives what :func:`_check_csf` and
    :func:`csf_responder.cohort.cohort_table` give: the same rules and notes, the same
    numbers (each column parsed and converted as its long rows would be).
    """
    data = wide.data
    if (not len(data) or set(wide.repeated) - {"subject_id", "timepoint", "plate"}
            or any(_arrow_strings(data[c]) is None for c in [*wide.repeated, *wide.headers])):
        return None
    analyte = _panel_positions(panel, wide.names)
    units = pc.utf8_trim_whitespace(pyarrow.array(wide.units, pyarrow.string())).to_pylist()
    if min(analyte) < 0 or "" in units or any(
            spec.required and i not in analyte for i, spec in enumerate(panel.analytes)):
        return None
    try:
        factors = [conversion_factor(u, panel.analytes[a].unit)
                   for u, a in zip(units, analyte, strict=True)]
    except KeyError:
        return None  # an error, which the long layout reports with its line
    subject, subjects = _codes(data["subject_id"])
    if (not np.asarray(subjects != "").all()
            or not _isin(pd.Series(subjects), patients["subject_id"]).all()):
        return None  # blank, unknown or rejected subjects
    added: list[str] = []  # notes, kept only if the table is accepted
    tp_code, tps = _codes(data["timepoint"])
    tp_code, tps = _canonical_timepoints(tp_code, tps, panel.timepoints, file, added)
    where = pd.Index(panel.timepoints).get_indexer(tps)
    if (where < 0).any():
        return None
    timepoint = where[tp_code]
    n_t = len(panel.timepoints)
    sample = subject.astype(np.int64) * n_t + timepoint
    if len(sample) > 1 and np.bincount(sample).max() > 1:
        return None  # a sample on two rows: duplicates or conflicts, cell by cell
    n_cells = len(panel.analytes) * n_t
    values = np.full((len(subjects) + 1, n_cells), np.nan)
    flags = np.full((len(subjects) + 1, n_cells), len(FLAG_CODES), dtype=np.int64)
    for header, a, factor in zip(wide.headers, analyte, factors, strict=True):
        spec = panel.analytes[a]
        bounds = {c: (getattr(spec, c) or np.nan) / factor for c in ("lloq", "uloq")}
        value, flag, _ = concentration_arrays(
            data[header], decimal_comma=panel.decimal_comma,
            lloq=lambda rows, b=bounds["lloq"]: np.full(len(rows), b),
            uloq=lambda rows, b=bounds["uloq"]: np.full(len(rows), b))
        censored = (flag == FLAG_CODES.index("below")) | (flag == FLAG_CODES.index("above"))
        if ((flag == FLAG_CODES.index("invalid")).any() or (value < 0).any()
                or (censored & np.isnan(value)).any()):
            return None
        if factor != 1:
            value *= factor
        column = a * n_t + timepoint
        values[subject, column] = value
        flags[subject, column] = flag
    code, plate_names = 0, [""]  # the last name: no plate
    if "plate" in data:
        code, names = dictionary_codes(pc.utf8_trim_whitespace(_text_storage(data["plate"])))
        plate_names = [*names.to_pylist(), ""]
    plates = np.full((len(subjects) + 1, n_t), len(plate_names) - 1, dtype=np.int64)
    plates[subject, timepoint] = code
    notes.extend(added)
    return CsfCells(pd.Index(subjects), values, flags, [*FLAG_CODES, "missing"], plates,
                    plate_names)


def _canonical_timepoints(codes: np.ndarray, spellings: pd.Index, timepoints: Sequence[str],
                          file: str, notes: list[str]) -> tuple[np.ndarray, pd.Index]:
    """Read timepoint spellings that differ from the panel's only in case, spaces or
    punctuation (``Baseline``, ``Week 4``) as the panel's, with a note."""
    canonical = {analyte_match_key(t): t for t in timepoints}
    named = [canonical.get(analyte_match_key(t), t) if t else t for t in spellings]
    renamed = sorted({f"'{old}' -> {new}" for old, new in zip(spellings, named, strict=True)
                      if old != new})
    if not renamed:
        return codes, spellings
    notes.append(f"{file}: timepoints read as the panel's: {', '.join(renamed)}")
    merged, distinct = pd.factorize(pd.Index(named), use_na_sentinel=False)
    return merged.astype(codes.dtype)[codes], pd.Index(distinct)


def _sample_types(raw: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
    """(is a bridging sample, sample_type is a known spelling), per row."""
    if "sample_type" not in raw:
        return np.zeros(len(raw), dtype=bool), pd.Series(True, index=raw.index)
    code, values = _codes(raw["sample_type"])
    kinds = np.array([SAMPLE_TYPES.get(v.lower()) for v in values] + [None], dtype=object)
    return (kinds == "bridge")[code], _series(pd.notna(kinds)[code], index=raw.index)


def _bridges(wells: pd.DataFrame, file: str, notes: list[str]) -> pd.DataFrame:
    """Mean quantified value of the bridging sample per plate and analyte."""
    quantified = wells[wells["flag"].isin(["observed", "extrapolated"])]
    if len(quantified) < len(wells):
        notes.append(f"{file}: {len(wells) - len(quantified)} censored bridging-sample "
                     "well(s) cannot normalise their plate and were left out")
    table = (quantified.groupby(["plate", "analyte"], observed=True, as_index=False)
             .agg(value=("value", "mean"), n_wells=("value", "size")))
    if len(wells):
        notes.append(f"{file}: bridging samples on {table['plate'].nunique()} plate(s)")
    return table[list(BRIDGE_COLUMNS)].reset_index(drop=True)


def _combine_replicates(wells: pd.DataFrame, cv_max: float, replicated: bool | None = None):
    """One row per sample and analyte: the mean of quantified replicate wells.

    Censored wells count only when no well of that sample was quantified; the QC report
    gives the CV% of quantified replicates and flags it above ``cv_max``. ``replicated``
    tells whether some sample and analyte has several wells, when the caller knows.
    """
    keys = ["subject_id", "timepoint", "analyte"]
    if replicated is None:
        replicated = bool(pd.Series(_row_codes(wells[keys])).duplicated().any())
    if not replicated:  # no replicates: fast path
        csf = wells.assign(n_replicates=1, cv_percent=np.nan)
        return csf, pd.DataFrame(columns=list(QC_COLUMNS))
    quantified = wells["flag"].isin(["observed", "extrapolated"])
    ranked = wells.assign(_rank=np.where(quantified, 0, 1))
    best = ranked.groupby(keys, sort=False)["_rank"].transform("min")
    chosen = ranked[ranked["_rank"] == best]
    grouped = chosen.groupby(keys, sort=False, as_index=False)
    csf = grouped.agg(value=("value", "mean"), flag=("flag", "first"),
                      low=("limit", "min"), high=("limit", "max"), plate=("plate", "first"),
                      n_replicates=("value", "size"), sd=("value", "std"))
    # censored wells only: the sample lies below the lowest LLOQ or above the highest ULOQ
    below, above = csf["flag"].eq("below"), csf["flag"].eq("above")
    csf["limit"] = np.where(below, csf["low"], np.where(above, csf["high"], np.nan))
    csf["value"] = csf["value"].mask(below | above, csf["limit"])
    quantified_sample = csf["flag"].isin(["observed", "extrapolated"])
    csf["cv_percent"] = np.where((csf["n_replicates"] > 1) & quantified_sample,
                                 100 * csf["sd"] / csf["value"], np.nan)
    csf = csf.drop(columns=["sd", "low", "high"])[[*wells.columns, "n_replicates",
                                                   "cv_percent"]]
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


def check_cohort(raw: RawCohort, *, panel: PanelSpec, indication: IndicationSpec,
                 label_column: str | None = None, drop_columns: Sequence[str] = (),
                 arm_required: bool = True, wide_csf: WideCsf | None = None
                 ) -> CheckedCohort:
    """Check a raw cohort against the input contract and return typed tables.

    Parameters
    ----------
    raw : RawCohort
        Tables as read by :func:`csf_responder.io.read_cohort` (CSF in long layout).
    panel : PanelSpec
        Analytes (names, aliases, units, default limits), timepoints, number format.
    indication : IndicationSpec
        The visits file's functional score (column, range) and the clinical covariates
        of ``patients.csv``.
    label_column : str, optional
        A column of ``patients.csv`` holding a ready-made 0/1 responder label.
    drop_columns : sequence of str
        Identifier-like columns to drop rather than refuse.
    arm_required : bool
        False for a cohort to score: ``patients.csv`` may then lack ``arm`` (missing in
        the typed table); when present it is checked as usual.
    wide_csf : WideCsf, optional
        The CSF file in its wide layout, ``raw.csf`` being its rows as read
        (:func:`csf_responder.io.layout_chunk`). When every cell passes the contract it
        is checked as it is and comes back as :attr:`CheckedCohort.csf_cells` (the
        wide cohort table takes it without a long table in between); otherwise it is
        melted and checked as a long table, with the same rejects and notes.

    Raises
    ------
    CohortError
        When a file cannot be used at all (see the module docstring).
    """
    notes: list[str] = list(raw.notes)
    names = ("patients.csv", indication.visits_file, "csf.csv")
    files = {name: raw.file(name) for name in names}
    tables = {name: table.reset_index(drop=True) for name, table in
              zip(names, (raw.patients, raw.visits, raw.csf), strict=True)}
    patients, p_rejects, p_raw = _check_patients(tables["patients.csv"], files["patients.csv"],
                                                 notes, drop_columns, indication, label_column,
                                                 panel.decimal_comma, arm_required)
    all_ids = p_raw["subject_id"].str.strip()
    visits_file = indication.visits_file
    visits, v_rejects, _ = _check_visits(tables[visits_file], files[visits_file], patients,
                                         all_ids, notes, drop_columns, indication.score)
    cells = (_check_wide_csf(wide_csf, files["csf.csv"], patients, panel, notes)
             if wide_csf is not None else None)
    if cells is not None:  # every cell used: no long table
        csf, bridges, qc = (pd.DataFrame(columns=list(c)) for c in (
            ["subject_id", "timepoint", "analyte", "value", "flag", "limit", "plate",
             "n_replicates", "cv_percent"], BRIDGE_COLUMNS, QC_COLUMNS))
        c_rejects = pd.DataFrame(columns=[*REJECT_COLUMNS, ROW])
        csf_read = n_wells = wide_csf.n_cells
    else:
        long = wide_csf.long() if wide_csf is not None else tables["csf.csv"]
        csf, bridges, qc, c_rejects, _, n_wells = _check_csf(
            long, files["csf.csv"], patients, all_ids, panel, notes, drop_columns)
        csf_read = len(long)
    accounting = pd.DataFrame([
        _account(files["patients.csv"], len(p_raw), len(patients), p_rejects),
        _account(files[visits_file], len(tables[visits_file]), len(visits), v_rejects),
        _account(files["csf.csv"], csf_read, n_wells, c_rejects),
    ], columns=list(ACCOUNT_COLUMNS))
    parts = [r.drop(columns=ROW) for r in (p_rejects, v_rejects, c_rejects) if len(r)]
    rejects = (pd.concat(parts, ignore_index=True) if parts
               else pd.DataFrame(columns=list(REJECT_COLUMNS)))
    return CheckedCohort(patients, visits, csf.reset_index(drop=True), bridges, rejects, qc,
                         accounting, notes, cells)
