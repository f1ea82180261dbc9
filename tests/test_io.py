"""Tests of cohort file input and output in :mod:`csf_responder.io`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csf_responder.errors import CohortError
from csf_responder.io import (
    COHORT_FILES,
    LINE,
    _chunk_rows,
    _distinct_ids,
    _positions,
    cohort_digest,
    melt_chunk,
    read_cohort,
    read_cohort_chunks,
    read_cohort_files,
    write_table,
)
from csf_responder.readers import index_in

PATIENTS = "subject_id,arm,age\nP01,MSC,54\nP02,control,61\n"
ALSFRS = "subject_id,day,alsfrs_r\nP01,-84,40\nP01,0,37\nP02,0,41\n"
CSF = "subject_id,timepoint,analyte,value,unit\nP01,baseline,MCP-1,<15.6,pg/mL\n"


@pytest.fixture
def cohort_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cohort"
    directory.mkdir()
    (directory / "patients.csv").write_text(PATIENTS)
    (directory / "alsfrs.csv").write_text(ALSFRS)
    (directory / "csf.csv").write_text(CSF)
    return directory


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no_such_cohort"
    with pytest.raises(CohortError, match="cohort directory not found") as info:
        read_cohort(missing, visits_file="alsfrs.csv")
    assert info.value.file == str(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("name", [*COHORT_FILES, "alsfrs.csv"])
def test_missing_file_is_named(cohort_dir, name):
    (cohort_dir / name).unlink()
    with pytest.raises(CohortError, match="file not found") as info:
        read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert info.value.file == str(cohort_dir / name)
    assert str(cohort_dir / name) in str(info.value)


def test_empty_file_is_an_error_naming_it(cohort_dir):
    (cohort_dir / "alsfrs.csv").write_text("")
    with pytest.raises(CohortError, match="empty") as info:
        read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert info.value.file == str(cohort_dir / "alsfrs.csv")


def test_header_only_file_gives_an_empty_table(cohort_dir):
    (cohort_dir / "csf.csv").write_text("subject_id,timepoint,analyte,value,unit\n")
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert len(raw.csf) == 0
    assert {"subject_id", "value", LINE} <= set(raw.csf.columns)


def test_cells_are_strings_and_blanks_stay_empty_strings(cohort_dir):
    (cohort_dir / "patients.csv").write_text("subject_id,arm,age\nP01,MSC,\nP02,control,NA\n")
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert raw.patients["age"].tolist() == ["", "NA"]
    assert raw.visits["day"].tolist() == ["-84", "0", "0"]
    assert raw.csf["value"].tolist() == ["<15.6"]
    assert all(isinstance(v, str) for v in raw.visits["alsfrs_r"])


def test_line_column_counts_the_header_as_line_one(cohort_dir):
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert raw.patients[LINE].tolist() == [2, 3]
    assert raw.visits[LINE].tolist() == [2, 3, 4]
    assert raw.csf[LINE].tolist() == [2]


def test_header_names_are_stripped(cohort_dir):
    (cohort_dir / "patients.csv").write_text("subject_id , arm,age\nP01,MSC,54\n")
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert list(raw.patients.columns) == ["subject_id", "arm", "age", LINE]


def test_file_path_helper(cohort_dir):
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert raw.file("csf.csv") == str(cohort_dir / "csf.csv")


def test_line_numbers_survive_a_blank_line(cohort_dir):
    # line 1 header, line 2 P01, line 3 blank, line 4 P02
    (cohort_dir / "patients.csv").write_text("subject_id,arm,age\nP01,MSC,54\n\nP02,control,61\n")
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    assert raw.patients[LINE].tolist() == [2, 4]


def test_write_table_round_trips_and_leaves_no_temp_files(tmp_path):
    table = pd.DataFrame({"subject_id": ["P01", "P02"], "x": [1.5, -2.0], "flag": ["a", "b"]})
    target = tmp_path / "out" / "table.csv"
    returned = write_table(table, target)
    assert returned == target
    back = pd.read_csv(target)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_write_table_replaces_an_existing_file(tmp_path):
    target = tmp_path / "table.csv"
    write_table(pd.DataFrame({"a": [1, 2, 3]}), target)
    write_table(pd.DataFrame({"b": [9]}), target)
    assert target.read_text().splitlines() == ["b", "9"]
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def digest(directory) -> str:
    return cohort_digest(read_cohort(directory, visits_file="alsfrs.csv"))


def test_cohort_digest_is_stable_and_changes_with_a_file(cohort_dir):
    first = digest(cohort_dir)
    assert first == digest(cohort_dir)
    assert len(first) == 16
    (cohort_dir / "alsfrs.csv").write_text(ALSFRS.replace("P02,0,41", "P02,0,42"))
    assert digest(cohort_dir) != first


def test_cohort_digest_depends_on_which_file_holds_the_bytes(cohort_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("patients.csv", "alsfrs.csv", "csf.csv"):
        (other / name).write_bytes((cohort_dir / name).read_bytes())
    assert digest(other) == digest(cohort_dir)
    # the same bytes under another file name are other data
    (other / "csf.csv").rename(other / "csf.txt")
    assert digest(other) != digest(cohort_dir)


def test_cohort_digest_is_sha256_over_names_and_bytes_read_a_block_at_a_time(cohort_dir):
    """The same identity as hashing each file whole, without holding a whole file: a
    10-million-patient cohort's visits file is about 700 MB."""
    import hashlib
    import tracemalloc

    big = "\n".join(f"P{k:06d},{k % 90},{40 - k % 7}" for k in range(400_000))
    (cohort_dir / "alsfrs.csv").write_text("subject_id,day,alsfrs_r\n" + big + "\n")
    expected = hashlib.sha256()
    for name in ("patients.csv", "alsfrs.csv", "csf.csv"):
        expected.update(name.encode())
        expected.update((cohort_dir / name).read_bytes())
    raw = read_cohort(cohort_dir, visits_file="alsfrs.csv")
    size = (cohort_dir / "alsfrs.csv").stat().st_size
    tracemalloc.start()
    try:
        found = cohort_digest(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == expected.hexdigest()[:16]
    assert size > 5_000_000 and peak < size / 10


# -------------------------------------------------------------------------- chunks
def test_rows_in_chunk_order_are_sliced_others_gathered():
    index = _distinct_ids(pd.Series(["A", "B", "", "C", "B"], dtype="str"))
    assert index.to_pylist() == ["A", "B", "C"]
    ordered = _chunk_rows(pd.Series(["A", "A", "B", "C", "X"], dtype="str"), 5, index, 2, 2)
    assert ordered == [slice(0, 3), slice(3, 5)]
    mixed = _chunk_rows(pd.Series(["C", "A", "X", "B"], dtype="str"), 4, index, 2, 2)
    assert [list(rows) for rows in mixed] == [[1, 3], [0, 2]]


def test_distinct_ids_of_sorted_and_unsorted_ids_are_pandas_unique():
    for ids in (["", "A", "B", "C"], ["A", "B", "B", "C"], ["B", "A", "", "B"], ["A"], [],
                ["", ""], ["A", "C", "B"]):
        column = pd.Series(ids, dtype="str")
        expected = [i for i in pd.unique(column) if i != ""]
        assert _distinct_ids(column).to_pylist() == expected, ids


@pytest.mark.parametrize("rows", [
    ["A", "A", "B", "C", "C"],         # sorted like the index: no lookup at all
    ["A", "C", "C"],                   # sorted, a patient without rows
    ["A", "A", "X", "B", "", "C"],     # an unknown and a blank id in the runs
    ["C", "A", "B", "A", "C", "B"],    # no order
    ["A", "B", "C", "A"],              # the index, then more
    [],
])
def test_row_positions_are_the_index_lookup_of_every_row(rows):
    """Positions found per run of equal ids (or from the runs alone) are those of
    looking every row up."""
    index = _distinct_ids(pd.Series(["A", "B", "C"], dtype="str"))
    column = pd.Series(rows, dtype="str")
    np.testing.assert_array_equal(_positions(column, index), index_in(column, index))


@pytest.mark.parametrize("rows", [
    ["A", "A", "B", "C", "C"],         # sorted like the index: slices from the runs
    ["A", "C", "C", "X", ""],          # sorted, a patient without rows, unknown last
    ["A", "A", "X", "B", "", "C"],     # an unknown and a blank id in the runs
    ["C", "A", "B", "A", "C", "B"],    # no order
    ["A", "B", "C", "A"],              # the index, then more
    [],
])
def test_chunk_rows_are_those_of_each_rows_own_lookup(rows):
    """A chunk's rows, found from the runs of equal ids, are those of looking every row
    up: its subject's chunk, or the last for an unknown or blank id, in file order."""
    index = _distinct_ids(pd.Series(["A", "B", "C"], dtype="str"))
    column = pd.Series(rows, dtype="str")
    position = index_in(column, index)
    chunk = np.where(position >= 0, position // 2, 1)
    found = _chunk_rows(column, len(rows), index, 2, 2)
    assert [list(np.arange(len(rows))[part]) for part in found] == [
        list(np.flatnonzero(chunk == k)) for k in range(2)]


def test_the_visits_file_can_be_named_after_the_other_files_are_read(cohort_dir):
    asked = []

    def visits_file() -> str:
        asked.append(True)
        return "alsfrs.csv"

    files = read_cohort_files(cohort_dir, visits_file=visits_file, chunk_size=1)
    assert asked == [True]
    named = read_cohort_files(cohort_dir, visits_file="alsfrs.csv", chunk_size=1)
    for late, early in zip(files.chunks(), named.chunks(), strict=True):
        for table in ("patients", "visits", "csf"):
            pd.testing.assert_frame_equal(getattr(late, table), getattr(early, table))
        assert late.notes == early.notes
    # a file missing before the name is needed: the name is never asked for
    (cohort_dir / "patients.csv").unlink()
    with pytest.raises(CohortError, match="patients.csv"):
        read_cohort_files(cohort_dir, visits_file=lambda: pytest.fail("asked"), chunk_size=1)


def test_chunks_hold_every_row_of_their_patients_whatever_the_order(cohort_dir):
    (cohort_dir / "alsfrs.csv").write_text(
        "subject_id,day,alsfrs_r\nP02,0,41\nP01,-84,40\nGHOST,0,1\nP01,0,37\n")
    chunks = list(read_cohort_chunks(cohort_dir, visits_file="alsfrs.csv", chunk_size=1))
    assert [c.patients["subject_id"].tolist() for c in chunks] == [["P01"], ["P02"]]
    assert [c.visits[LINE].tolist() for c in chunks] == [[3, 5], [2, 4]]
    assert [c.csf["subject_id"].tolist() for c in chunks] == [["P01"], []]


def test_a_chunk_melted_where_it_is_processed_is_the_chunk_melted_on_reading(cohort_dir):
    """Scoring hands chunks to worker processes with their CSF rows as read (smaller) and
    melts them there: the same tables and notes as melting on reading."""
    (cohort_dir / "csf.csv").write_text(
        "subject_id,timepoint,MCP-1 (pg/mL),VEGF (pg/mL)\nP01,baseline,<15.6,40\n"
        "P02,baseline,33,\n")
    is_analyte = {"mcp1": "MCP-1", "vegf": "VEGF"}.get
    def key(name):
        return is_analyte("".join(c for c in name.lower() if c.isalnum()))

    melted = list(read_cohort_chunks(cohort_dir, visits_file="alsfrs.csv", chunk_size=1,
                                     is_analyte=key))
    later = list(read_cohort_chunks(cohort_dir, visits_file="alsfrs.csv", chunk_size=1,
                                    melt=False))
    assert [c.csf_melted for c in later] == [False, False]
    assert "MCP-1 (pg/mL)" in later[0].csf.columns  # still the file's wide rows
    for early, late in zip(melted, later, strict=True):
        done = melt_chunk(late, key)
        assert done.csf_melted and melt_chunk(done, key) is done
        pd.testing.assert_frame_equal(done.csf, early.csf)
        pd.testing.assert_frame_equal(done.patients, early.patients)
        assert done.notes == early.notes
    assert any("wide layout" in note for note in melted[0].notes)
    assert not any("wide layout" in note for note in melted[1].notes)  # the first's alone
