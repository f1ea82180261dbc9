"""Tests of CSF panel reading and layout handling in :mod:`csf_responder.readers`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pytest

from csf_responder.errors import CohortError
from csf_responder.readers import (
    LINE,
    SOURCE_COLUMN,
    arrow_text,
    csf_to_long,
    index_in,
    read_table,
    strip_unit,
    take_text,
)

HEADER = ["subject_id", "timepoint", "analyte", "value", "unit"]
ROWS = [
    ["P01", "baseline", "MCP-1", "<15.6", "pg/mL"],
    ["P01", "baseline", "IL-6", "*12.3", "pg/mL"],
    ["P02", "baseline", "MCP-1", "1.50", "pg/mL"],
    ["P02", "baseline", "IL-6", "007", "pg/mL"],
]
EXPECTED = pd.DataFrame(ROWS, columns=HEADER, dtype="str")
ANALYTES = {"MCP-1", "IL-6", "VEGF"}


def is_analyte(name: str) -> bool:
    return name in ANALYTES


def delimited(rows: list[list[str]], sep: str) -> str:
    return "".join(sep.join(row) + "\n" for row in rows)


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def write_csv(tmp: Path) -> Path:
    (path := tmp / "csf.csv").write_text(delimited([HEADER, *ROWS], ","))
    return path


def write_tsv(tmp: Path) -> Path:
    (path := tmp / "csf.tsv").write_text(delimited([HEADER, *ROWS], "\t"))
    return path


def write_semicolon(tmp: Path) -> Path:
    (path := tmp / "csf.csv").write_text(delimited([HEADER, *ROWS], ";"))
    return path


def write_excel(tmp: Path) -> Path:
    return write_xlsx(tmp / "csf.xlsx", [HEADER, *ROWS])


def write_parquet(tmp: Path) -> Path:
    EXPECTED.to_parquet(path := tmp / "csf.parquet")
    return path


@pytest.mark.parametrize(("writer", "fmt"), [
    (write_csv, "csv"), (write_tsv, "tsv"), (write_semicolon, "csv-semicolon"),
    (write_excel, "xlsx"), (write_parquet, "parquet"),
])
def test_every_format_reads_to_the_same_text_table(tmp_path, writer, fmt):
    result = read_table(writer(tmp_path))
    assert result.format == fmt
    pd.testing.assert_frame_equal(result.table.drop(columns=LINE), EXPECTED)
    assert result.table[LINE].tolist() == [2, 3, 4, 5]
    assert result.table[LINE].dtype == "int64"
    assert result.notes[0].startswith("csf.") and "4 rows" in result.notes[0]


def test_xlsx_numbers_become_text_without_spurious_decimals(tmp_path):
    path = write_xlsx(tmp_path / "csf.xlsx", [["subject_id", "a", "b", "c"],
                                              ["P01", 12, 12.3, None], ["P02", 1.5, 0, "ND"]])
    result = read_table(path)
    assert result.table.drop(columns=LINE).to_dict("list") == {
        "subject_id": ["P01", "P02"], "a": ["12", "1.5"], "b": ["12.3", "0"], "c": ["", "ND"]}
    assert result.notes[0] == "csf.xlsx: read as XLSX (sheet 'Sheet'), 2 rows"


def test_parquet_numbers_and_missing_values_become_text(tmp_path):
    frame = pd.DataFrame({"id": ["P01", "P02"], "n": pd.array([12, None], dtype="Int64"),
                          "x": [12.3, float("nan")], "s": ["007", None]})
    frame.to_parquet(path := tmp_path / "csf.pq")
    table = read_table(path).table
    assert table.drop(columns=LINE).to_dict("list") == {
        "id": ["P01", "P02"], "n": ["12", ""], "x": ["12.3", ""], "s": ["007", ""]}
    assert table[LINE].tolist() == [2, 3]


def test_txt_sniffs_tab_and_semicolon_keeps_decimal_commas(tmp_path):
    (tab := tmp_path / "panel.txt").write_text("subject_id\tvalue\nP01\t1,5\n")
    assert read_table(tab).format == "tsv"
    (semi := tmp_path / "panel.csv").write_text("subject_id;value;unit\nP01;12,50;pg/mL\n")
    result = read_table(semi)
    assert result.format == "csv-semicolon"
    assert result.table["value"].tolist() == ["12,50"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_blank_lines_keep_true_line_numbers(tmp_path, newline):
    path = tmp_path / "csf.csv"
    lines = ["subject_id,value", "P01,1", "", "P02,2", "", "", "P03,3", "", ""]
    path.write_bytes(newline.join(lines).encode())
    result = read_table(path)
    assert result.table["subject_id"].tolist() == ["P01", "P02", "P03"]
    assert result.table[LINE].tolist() == [2, 4, 7]
    assert "csf.csv: blank lines skipped; line numbers counted exactly" in result.notes


def test_blank_crlf_and_whitespace_lines_keep_true_line_numbers(tmp_path):
    path = tmp_path / "csf.csv"
    path.write_bytes(b"subject_id,value\r\nP01,1\r\n\r\n   \r\nP02,2\r\n")
    table = read_table(path).table
    assert table["value"].tolist() == ["1", "2"]
    assert table[LINE].tolist() == [2, 5]


def test_entirely_empty_rows_are_dropped_without_shifting_lines(tmp_path):
    path = tmp_path / "csf.csv"
    path.write_text("subject_id,value,unit\n,,\nP01,1,pg/mL\n , ,\nP02,2,pg/mL\n")
    result = read_table(path)
    assert result.table[LINE].tolist() == [3, 5]
    assert any("2 entirely empty rows dropped" in note for note in result.notes)


def test_blank_xlsx_rows_keep_excel_row_numbers(tmp_path):
    path = write_xlsx(tmp_path / "csf.xlsx", [["subject_id", "value"], ["P01", "1"],
                                              [None, None], ["P02", "2"]])
    assert read_table(path).table[LINE].tolist() == [2, 4]


def test_blank_lines_before_the_header_count(tmp_path):
    (path := tmp_path / "csf.csv").write_text("\n\nsubject_id,value\nP01,1\n")
    assert read_table(path).table[LINE].tolist() == [4]


def test_bom_and_header_whitespace_are_stripped(tmp_path):
    path = tmp_path / "csf.csv"
    path.write_bytes("\ufeff subject_id , value\nP01, 1.50 \n".encode())
    table = read_table(path).table
    assert list(table.columns) == ["subject_id", "value", LINE]
    assert table["value"].tolist() == [" 1.50 "]  # cells stay exactly as written


def test_quoted_delimiters_short_rows_and_windows_1252(tmp_path):
    (quoted := tmp_path / "q.csv").write_text('subject_id,comment\nP01,"a, b"\nP02\n')
    table = read_table(quoted).table
    assert table["comment"].tolist() == ["a, b", ""]
    assert table[LINE].tolist() == [2, 3]
    (latin := tmp_path / "l.csv").write_bytes("analyte,unit\nMCP-1,µg/mL\n".encode("cp1252"))
    result = read_table(latin)
    assert result.table["unit"].tolist() == ["µg/mL"]
    assert any("Windows-1252" in note for note in result.notes)


def test_header_only_file_has_no_rows(tmp_path):
    (path := tmp_path / "csf.csv").write_text("subject_id,value\n")
    table = read_table(path).table
    assert list(table.columns) == ["subject_id", "value", LINE] and table.empty


def test_quoted_line_break_is_kept_and_numbered_as_a_record(tmp_path):
    (path := tmp_path / "csf.csv").write_text('subject_id,comment\nP01,"two\nlines"\nP02,x\n')
    table = read_table(path).table
    assert table["comment"].tolist() == ["two\nlines", "x"]
    assert table[LINE].tolist() == [2, 3]  # documented: record numbers after such a value


@pytest.mark.parametrize(("text", "line"), [("a,b\nP01,1\n\nP02,2,3\n", 4),
                                            ("a,b\nP01,1\nP02,2,3,4\n", 3)])
def test_row_with_more_fields_than_the_header_raises(tmp_path, text, line):
    (path := tmp_path / "csf.csv").write_text(text)
    with pytest.raises(CohortError, match="more fields than the header") as info:
        read_table(path)
    assert info.value.file == str(path) and info.value.row == line


def test_a_200k_row_csv_reads_through_the_vectorised_path(tmp_path):
    path = tmp_path / "big.csv"
    body = "".join(f"P{i:06d},baseline,MCP-1,{i}.50,pg/mL\n" for i in range(200_000))
    path.write_text("subject_id,timepoint,analyte,value,unit\n" + body)
    result = read_table(path)
    assert len(result.table) == 200_000
    assert result.table.iloc[-1].tolist() == ["P199999", "baseline", "MCP-1", "199999.50",
                                              "pg/mL", 200_001]
    assert not any("exact" in note for note in result.notes)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "file not found"),
    ("csf.xls", b"a,b\n", "unknown file type"),
    ("empty.csv", b"", "file is empty"),
    ("blank.csv", b"\n \n", "file is empty"),
    ("bad.parquet", b"not a parquet file at all", "cannot read as Parquet"),
    ("bad.xlsx", b"PK\x03\x04 garbage", "cannot read as XLSX"),
    ("nohead.csv", b"a,,b\n1,2,3\n", "column 2 has no header"),
])
def test_unreadable_files_raise_cohort_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CohortError, match=message) as info:
        read_table(path)
    assert info.value.file == str(path)


def test_empty_xlsx_raises(tmp_path):
    path = write_xlsx(tmp_path / "empty.xlsx", [])
    with pytest.raises(CohortError, match="file is empty"):
        read_table(path)


@pytest.mark.parametrize("header", ["subject_id,value,value", "subject_id, value,value "])
def test_duplicate_column_names_name_the_column(tmp_path, header):
    (path := tmp_path / "csf.csv").write_text(header + "\nP01,1,2\n")
    with pytest.raises(CohortError, match="duplicate column name 'value'") as info:
        read_table(path)
    assert info.value.column == "value" and info.value.file == str(path)


def test_strip_unit():
    assert strip_unit("MCP-1 (pg/mL)") == ("MCP-1", "pg/mL")
    assert strip_unit(" VEGF [ng/mL] ") == ("VEGF", "ng/mL")
    assert strip_unit("IL-6") == ("IL-6", None)
    assert strip_unit("IL-6 ()") == ("IL-6", None)


def wide(tmp_path: Path, text: str) -> tuple[pd.DataFrame, list[str]]:
    (path := tmp_path / "wide.csv").write_text(text)
    long, layout = csf_to_long(read_table(path).table, file="wide.csv", is_analyte=is_analyte)
    assert layout.kind == "wide"
    return long, layout.notes


def test_wide_units_in_header(tmp_path):
    long, notes = wide(tmp_path, "subject_id,timepoint,MCP-1 (pg/mL),VEGF [ng/mL]\n"
                                 "P01,baseline,<15.6,1.50\nP02,baseline,20,007\n")
    assert list(long.columns) == ["subject_id", "timepoint", "analyte", "value", "unit",
                                  LINE, SOURCE_COLUMN]
    assert long["analyte"].tolist() == ["MCP-1", "VEGF", "MCP-1", "VEGF"]
    assert long["value"].tolist() == ["<15.6", "1.50", "20", "007"]
    assert long["unit"].tolist() == ["pg/mL", "ng/mL"] * 2
    assert long[LINE].tolist() == [2, 2, 3, 3]
    assert long[SOURCE_COLUMN].tolist() == ["MCP-1 (pg/mL)", "VEGF [ng/mL]"] * 2
    assert notes == ["wide.csv: wide layout, 2 analyte columns (units from header)"]


@pytest.mark.parametrize("label", ["", "units", "Unit"])
def test_wide_units_row_is_used_and_removed(tmp_path, label):
    long, notes = wide(tmp_path, f"subject_id,timepoint,MCP-1,IL-6\n{label},,pg/mL,pg/mL\n"
                                 "P01,baseline,<15.6,*12.3\n\nP02,baseline,1.50,007\n")
    assert long["subject_id"].tolist() == ["P01", "P01", "P02", "P02"]
    assert long["unit"].tolist() == ["pg/mL"] * 4
    assert long[LINE].tolist() == [3, 3, 5, 5]
    assert notes[0] == "wide.csv: wide layout, 2 analyte columns (units from units row)"
    assert "wide.csv: line 2 is a units row, not a sample; removed" in notes


def test_wide_sample_with_empty_ids_is_not_taken_for_a_units_row(tmp_path):
    long, notes = wide(tmp_path, "subject_id,timepoint,MCP-1\n,,12.5\n")
    assert long["value"].tolist() == ["12.5"] and long[LINE].tolist() == [2]
    assert not any("units row" in note for note in notes)


def test_wide_header_unit_conflicting_with_units_row_raises(tmp_path):
    with pytest.raises(CohortError, match="disagrees") as info:
        wide(tmp_path, "subject_id,timepoint,MCP-1 (pg/mL)\nunits,,ng/mL\nP01,baseline,1\n")
    assert info.value.row == 2 and info.value.column == "MCP-1 (pg/mL)"


def test_wide_without_units_and_with_ignored_and_empty_cells(tmp_path):
    long, notes = wide(tmp_path, "subject_id,timepoint,plate,MCP-1,comment,IL-6\n"
                                 "P01,baseline,A,12,ok,\nP02,baseline,B,,redo,3\n")
    assert list(long.columns[:3]) == ["subject_id", "timepoint", "plate"]
    assert long["plate"].tolist() == ["A", "A", "B", "B"]
    assert long["value"].tolist() == ["12", "", "", "3"]
    assert long["unit"].tolist() == [""] * 4
    assert notes == ["wide.csv: wide layout, 2 analyte columns (units from not given)",
                     "wide.csv: no unit given for MCP-1, IL-6; unit left empty",
                     "wide.csv: ignored columns (not id, carry or analyte): comment"]


def test_wide_missing_id_column_raises(tmp_path):
    with pytest.raises(CohortError, match="missing id column 'timepoint'") as info:
        wide(tmp_path, "subject_id,MCP-1\nP01,12\n")
    assert info.value.column == "timepoint" and info.value.file == "wide.csv"


def test_wide_without_analyte_column_lists_headers(tmp_path):
    with pytest.raises(CohortError, match="no analyte column recognised.*CRP, comment"):
        wide(tmp_path, "subject_id,timepoint,CRP,comment\nP01,baseline,1,x\n")


def test_wide_and_long_ingest_to_the_same_rows(tmp_path):
    long_file = write_csv(tmp_path)
    (wide_file := tmp_path / "wide.csv").write_text(
        "subject_id,timepoint,MCP-1,IL-6\nunit,,pg/mL,pg/mL\n"
        "P01,baseline,<15.6,*12.3\nP02,baseline,1.50,007\n")
    columns = ["subject_id", "timepoint", "analyte", "value", "unit"]
    tables = [csf_to_long(read_table(f).table, file=f.name, is_analyte=is_analyte)[0][columns]
              .sort_values(columns).reset_index(drop=True) for f in (long_file, wide_file)]
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_long_table_passes_through_unchanged(tmp_path):
    table = read_table(write_csv(tmp_path)).table
    long, layout = csf_to_long(table, file="csf.csv", is_analyte=is_analyte)
    assert layout.kind == "long"
    assert layout.notes == ["csf.csv: long layout (one row per sample and analyte)"]
    pd.testing.assert_frame_equal(long.drop(columns=SOURCE_COLUMN), table)
    assert long[SOURCE_COLUMN].eq("value").all()
    assert SOURCE_COLUMN not in table.columns


def test_empty_unnamed_trailing_column_is_dropped(tmp_path):
    (path := tmp_path / "csf.csv").write_text("subject_id,value,\nP01,1,\nP02,2,\n")
    table = read_table(path).table
    assert list(table.columns) == ["subject_id", "value", LINE]
    assert table[LINE].tolist() == [2, 3]


def test_take_text_gives_str_columns_of_the_taken_values():
    chunked = pa.chunked_array([pa.array(["a", "bb"], pa.large_string()),
                                pa.array(["", None], pa.large_string())])
    taken = take_text(chunked, np.array([3, 1, 2, 0, 1]))
    assert pd.isna(taken.iloc[0])
    assert taken.iloc[1:].tolist() == ["bb", "", "a", "bb"]
    assert taken.dtype == pd.Series(["x"], dtype="str").dtype
    assert taken.array._pa_array.type == pa.large_string()


def test_arrow_text_is_the_column_storage_or_its_str_values():
    text = pd.Series(["a", "b"], dtype="str")
    assert arrow_text(text) is text.array._pa_array  # no copy
    assert arrow_text(text).to_pylist() == ["a", "b"]
    assert arrow_text(pd.Series([1, 2], dtype=object)).to_pylist() == ["1", "2"]
    assert arrow_text(pd.Index(["x"], dtype="str")).to_pylist() == ["x"]


def test_wide_melt_orders_rows_by_source_row_then_column():
    table = pd.DataFrame({"subject_id": ["P1", "P2"], "timepoint": ["baseline", "week4"],
                          "MCP-1 (pg/mL)": ["1", "2"], "VEGF (pg/mL)": ["3", ""],
                          LINE: [2, 3]}).astype({c: "str" for c in ("subject_id", "timepoint")})
    long, _ = csf_to_long(table, file="csf.csv", is_analyte=lambda name: True)
    assert long["subject_id"].tolist() == ["P1", "P1", "P2", "P2"]
    assert long["value"].tolist() == ["1", "3", "2", ""]
    assert long["analyte"].tolist() == ["MCP-1", "VEGF"] * 2
    assert long[LINE].tolist() == [2, 2, 3, 3]
    assert long["_column"].tolist() == ["MCP-1 (pg/mL)", "VEGF (pg/mL)"] * 2
    assert all(long[c].dtype == "str" for c in ("subject_id", "value", "unit", "_column"))


def test_index_in_gives_positions_or_minus_one():
    distinct = pd.Index(["a", "b"], dtype="str")
    found = index_in(pd.Series(["b", "x", "a", "b", ""], dtype="str"), distinct)
    assert found.tolist() == distinct.get_indexer(["b", "x", "a", "b", ""]).tolist()
    assert index_in(pd.Series(["b"], dtype="str"), pa.array(["a", "b"])).tolist() == [1]
