"""A corpus of malformed and awkward cohort files, each with its exact outcome.

``tests/corpus/_base/`` is a tiny valid cohort (6 patients, 4 MSC with labels, CSF of the
four required analytes at baseline and week4 for PT01-PT03). Every other directory of
``tests/corpus/`` is one case: the single file that differs from ``_base`` (a ``csf.*``
of another suffix replaces ``_base/csf.csv``) and ``expected.yaml``:

``why``
    the real-world awkwardness the case stands for (one line);
``error`` / ``error_at``
    the run stops with a :class:`CohortError` whose message matches the regex ``error``;
    ``error_at`` gives the file (``.`` = the cohort directory), line and column it must
    name (a key left out must be None);
``rejects``
    exactly these rejects rows (contract rules and label exclusions), by file name, line
    (null for exclusions), subject, column and rule;
``notes`` / ``values`` / ``flags`` / ``qc`` / ``accounting``
    regexes each matching a note; cells of the wide cohort table by column and subject
    (``.nan`` = missing); replicate QC rows (none unless listed); per file
    ``[rows_read, rows_used, rows_rejected]``;
``panel`` / ``ingest`` / ``labels``
    config overrides for this case (``panel: {decimal_comma: true}``);
``remove`` / ``keep_base_csf``
    files of ``_base`` to delete; keep ``_base/csf.csv`` beside the case's ``csf.*``;
``xfail``
    a known library bug: the case is expected to fail (strictly) for this reason.

To rebuild the binary files: ``.venv/bin/python tests/corpus/make_binary_cases.py``.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from csf_responder.config import TrainConfig, load_config
from csf_responder.contracts import RULES, covariate_rules
from csf_responder.errors import CohortError
from csf_responder.ingest import ingest_cohort
from csf_responder.labels import EXCLUSIONS
from tests.conftest import CONFIGS

CORPUS = Path(__file__).resolve().parent / "corpus"
BASE = CORPUS / "_base"
MIN_CASES = 30
CONFIG_SECTIONS = ("panel", "ingest", "labels")
CASE_KEYS = {"why", "xfail", "error", "error_at", "rejects", "notes", "values", "flags", "qc",
             "accounting", "remove", "keep_base_csf", *CONFIG_SECTIONS}
COHORT_FILES = {"patients.csv", "alsfrs.csv"}


def _case_dirs() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")))


def _expected(case: Path) -> dict:
    return yaml.safe_load((case / "expected.yaml").read_text(encoding="utf-8"))


def _data_files(case: Path) -> list[Path]:
    return sorted(p for p in case.iterdir() if p.name != "expected.yaml")


def _params() -> list:
    params = []
    for case in _case_dirs():
        reason = _expected(case).get("xfail")
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def _overrides(expected: dict) -> list[str]:
    """``{panel: {decimal_comma: true}}`` -> ``["panel.decimal_comma=true"]``."""
    def flatten(prefix: str, value) -> list[str]:
        if isinstance(value, dict):
            return [item for key, sub in value.items() for item in flatten(f"{prefix}.{key}", sub)]
        dumped = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n")
        return [f"{prefix}={dumped.strip()}"]
    return [item for section in CONFIG_SECTIONS if section in expected
            for item in flatten(section, expected[section])]


def _assemble(case: Path, expected: dict, tmp_path: Path) -> Path:
    """A cohort directory: ``_base`` with the case's file(s) in place of its own."""
    cohort = tmp_path / "cohort"
    shutil.copytree(BASE, cohort)
    for path in _data_files(case):
        if path.stem == "csf" and path.name != "csf.csv" and not expected.get("keep_base_csf"):
            (cohort / "csf.csv").unlink()
        shutil.copy2(path, cohort / path.name)
    for name in expected.get("remove", []):
        (cohort / name).unlink()
    return cohort


def _config(expected: dict) -> TrainConfig:
    return load_config(CONFIGS / "train.yaml", TrainConfig, overrides=_overrides(expected))[0]


def _ingest(cohort: Path, config: TrainConfig):
    return ingest_cohort(cohort, panel=config.panel, indication=config.indication,
                         labels=config.labels, drop_columns=config.ingest.drop_columns)


def _line(value) -> int | None:
    return None if pd.isna(value) else int(value)


def _reject_rows(rejects: pd.DataFrame) -> Counter:
    return Counter((Path(r.file).name, _line(r.line), str(r.subject_id), str(r.column), r.rule)
                   for r in rejects.itertuples())


def _same(actual, expected) -> bool:
    """Equal cells: numbers to 1e-9 (NaN equals NaN), text exactly."""
    if isinstance(expected, bool | str):
        return actual == expected
    if pd.isna(actual) or math.isnan(expected):
        return bool(pd.isna(actual)) and math.isnan(expected)
    return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-9)


def _check_error(cohort: Path, expected: dict) -> None:
    with pytest.raises(CohortError) as info:
        _ingest(cohort, _config(expected))
    error = info.value
    assert re.search(expected["error"], str(error)), str(error)
    where = expected.get("error_at", {})
    assert error.file is not None, f"the error names no file: {error}"
    assert str(error).startswith(error.file), str(error)
    if where.get("file") == ".":
        assert Path(error.file) == cohort
    else:
        assert Path(error.file).parent == cohort, error.file
        assert Path(error.file).name == where.get("file"), str(error)
    assert error.row == where.get("line"), str(error)
    assert error.column == where.get("column"), str(error)


def _check_accounting(result, expected: dict) -> None:
    accounting = result.checked.accounting
    assert len(accounting) == 3
    for row in accounting.itertuples():
        assert row.rows_read == row.rows_used + row.rows_rejected, row
    by_name = {Path(row.file).name: [int(row.rows_read), int(row.rows_used),
                                     int(row.rows_rejected)] for row in accounting.itertuples()}
    for name, counts in expected.get("accounting", {}).items():
        assert by_name[name] == counts, (name, by_name[name])


def _check_rejects(result, expected: dict, config: TrainConfig) -> None:
    rules = {**RULES, **covariate_rules(config.indication)}
    rejects = result.rejects
    for row in rejects.itertuples():
        assert isinstance(row.file, str) and row.file, row
        assert row.rule in rules or row.rule in EXCLUSIONS, row
        assert isinstance(row.action, str) and row.action, row
        if row.rule in rules:
            assert row.action == rules[row.rule][1], row
    wanted = Counter((r["file"], r["line"], str(r["subject"]), r["column"], r["rule"])
                     for r in expected["rejects"])
    found = _reject_rows(rejects)
    assert found == wanted, (f"missing: {sorted(wanted - found, key=str)}; "
                             f"unexpected: {sorted(found - wanted, key=str)}")


def _check_table(result, expected: dict) -> None:
    notes = result.checked.notes
    for pattern in expected.get("notes", []):
        assert any(re.search(pattern, note) for note in notes), (pattern, notes)
    table = result.table.set_index("subject_id")
    cells = {**expected.get("values", {}), **expected.get("flags", {})}
    for column, by_subject in cells.items():
        assert column in table.columns, (column, list(table.columns))
        for subject, value in by_subject.items():
            actual = table.at[subject, column]
            assert _same(actual, value), (column, subject, actual, value)
    qc = result.checked.qc
    wanted = expected.get("qc", [])
    assert len(qc) == len(wanted), qc
    for row in wanted:
        match = qc[(qc["subject_id"] == row["subject_id"]) & (qc["timepoint"] == row["timepoint"])
                   & (qc["analyte"] == row["analyte"])]
        assert len(match) == 1, (row, qc)
        for key, value in row.items():
            actual = match.iloc[0][key]
            ok = (_same(actual, value) if not isinstance(value, float)
                  else math.isclose(float(actual), value, rel_tol=1e-4))
            assert ok, (key, actual, value)


@pytest.mark.parametrize("case", _params())
def test_corpus_case(case: Path, tmp_path: Path) -> None:
    expected = _expected(case)
    cohort = _assemble(case, expected, tmp_path)
    if "error" in expected:
        _check_error(cohort, expected)
        return
    config = _config(expected)
    result = _ingest(cohort, config)
    _check_accounting(result, expected)
    _check_rejects(result, expected, config)
    _check_table(result, expected)


def test_corpus_has_enough_well_formed_cases() -> None:
    cases = _case_dirs()
    assert len(cases) >= MIN_CASES, len(cases)
    for case in cases:
        expected = _expected(case)
        assert isinstance(expected.get("why"), str) and expected["why"].strip(), case.name
        assert "\n" not in expected["why"].strip(), case.name
        assert set(expected) <= CASE_KEYS, (case.name, set(expected) - CASE_KEYS)
        assert ("error" in expected) != ("rejects" in expected), case.name
        files = _data_files(case)
        assert len(files) <= 1, (case.name, files)  # only the one file that differs
        assert files or expected.get("remove"), case.name
        for path in files:
            assert path.name in COHORT_FILES or path.stem == "csf", (case.name, path.name)
            assert path.stat().st_size < 20_000, (case.name, path.name)
            base = BASE / path.name
            assert not base.is_file() or base.read_bytes() != path.read_bytes(), case.name


def test_base_cohort_is_clean() -> None:
    result = _ingest(BASE, _config({}))
    assert result.rejects.empty, result.rejects
    assert result.labels["responder"].notna().all()
    table = result.table.set_index("subject_id")
    assert table["responder"].to_dict() == {"PT01": 1, "PT02": 0, "PT03": 1, "PT04": 0,
                                            "PT05": 0, "PT06": 0}
    csf = pd.read_csv(BASE / "csf.csv")
    keys = {"TGF-beta1": "tgf_beta1", "MCP-1": "mcp1", "VEGF": "vegf",
            "Angiogenin": "angiogenin"}
    for row in csf.itertuples():
        column = f"{keys[row.analyte]}_{row.timepoint}"
        assert _same(table.at[row.subject_id, column], row.value), (column, row)
        assert table.at[row.subject_id, f"{column}_flag"] == "observed"
    counts = {Path(r.file).name: (r.rows_read, r.rows_used, r.rows_rejected)
              for r in result.checked.accounting.itertuples()}
    assert counts == {"patients.csv": (6, 6, 0), "alsfrs.csv": (36, 36, 0),
                      "csf.csv": (24, 24, 0)}
