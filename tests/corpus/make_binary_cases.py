"""Rebuild the binary files of the corpus (csf.xlsx, csf.parquet, ...) byte for byte.

Run from the project root: ``.venv/bin/python tests/corpus/make_binary_cases.py``. The
files are committed; this script only documents, and can repeat, how they were made.
XLSX zip entries and document properties get a fixed timestamp so the bytes do not
depend on when the script runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
FIXED = dt.datetime(2024, 1, 1)


def base_rows() -> list[list[str]]:
    with (HERE / "_base" / "csf.csv").open(newline="") as stream:
        return list(csv.reader(stream))[1:]


def _fixed_zip(book: openpyxl.Workbook, path: Path, edit=None) -> None:
    """Save ``book`` with fixed timestamps; ``edit(name, data)`` may rewrite an entry."""
    book.properties.created = FIXED
    buffer = io.BytesIO()
    book.save(buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(
            path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":  # openpyxl stamps "modified" on save
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2024-01-01T00:00:00Z",
                              data)
            if edit is not None:
                data = edit(info.filename, data)
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, data)


def write_xlsx(path: Path) -> None:
    """Long layout; values as numeric cells, '<15.6' and 'n/a?' as text; an empty row
    after PT01 (Excel row 10); a second sheet that must be ignored."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Results"
    sheet.append(["subject_id", "timepoint", "analyte", "value", "unit"])
    for subject, timepoint, analyte, value, unit in base_rows():
        if (subject, timepoint, analyte) == ("PT02", "baseline", "TGF-beta1"):
            sheet.append([])  # an empty row between patients
        cell: object = float(value)
        if (subject, timepoint, analyte) == ("PT02", "week4", "MCP-1"):
            cell = "<15.6"
        if (subject, timepoint, analyte) == ("PT03", "baseline", "VEGF"):
            cell = "n/a?"
        sheet.append([subject, timepoint, analyte, cell, unit])
    extra = book.create_sheet("Standards")
    extra.append(["well", "expected", "observed"])
    extra.append(["S1", 2000, 1987.5])
    _fixed_zip(book, path)


def write_xlsx_without_dimension(path: Path) -> None:
    """Long layout written by a tool that stores no sheet size (no ``<dimension>``), so
    rows come back as long as their last cell: a note typed in column F, beyond the
    header, on the row of PT02 week4 VEGF (Excel row 16)."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Results"
    sheet.append(["subject_id", "timepoint", "analyte", "value", "unit"])
    for subject, timepoint, analyte, value, unit in base_rows():
        note = ["re-run"] if (subject, timepoint, analyte) == ("PT02", "week4", "VEGF") else []
        sheet.append([subject, timepoint, analyte, float(value), unit, *note])

    def drop_dimension(name: str, data: bytes) -> bytes:
        if name.startswith("xl/worksheets/"):
            return re.sub(rb"<dimension[^>]*/>", b"", data)
        return data

    _fixed_zip(book, path, drop_dimension)


def write_parquet(path: Path) -> None:
    """Long layout with float values (NaN for PT01 week4 VEGF) and a plate column."""
    rows = base_rows()
    values = [float("nan") if (s, t, a) == ("PT01", "week4", "VEGF") else float(v)
              for s, t, a, v, _ in rows]
    table = pa.table({
        "subject_id": [r[0] for r in rows],
        "timepoint": [r[1] for r in rows],
        "analyte": [r[2] for r in rows],
        "value": pa.array(values, pa.float64()),
        "unit": [r[4] for r in rows],
        "plate": ["P1" if r[1] == "baseline" else "P2" for r in rows],
    })
    pq.write_table(table, path, compression="none")


if __name__ == "__main__":
    write_xlsx(HERE / "xlsx_long_export" / "csf.xlsx")
    write_parquet(HERE / "parquet_long_export" / "csf.parquet")
    write_xlsx_without_dimension(HERE / "xlsx_without_dimension_ragged_rows" / "csf.xlsx")
