"""Read CSF cytokine panels (CSV, TSV, semicolon CSV, XLSX, Parquet) as text tables.

Every cell is kept as the text the lab wrote (``<15.6``, ``OOR <``, ``1.50``, ``007``
survive untouched) and every row keeps the line number a user sees, for error messages:
the header is line 1 (blank lines above it shift it, as in an editor) and, for
CSV/TSV, a row's line is its physical line in the file
(blank lines count, as in a text editor); for XLSX it is the Excel row number. Parquet
has no lines: a row's "line" is its 0-based position + 2, as if the file were a CSV.

Line numbers of delimited files stay true without slowing the common case:

1. Fast path: pyarrow parses the bytes after the header (all columns as strings) and
   rows are numbered consecutively. This is exact when the row count equals the count
   of line breaks in the data (one memchr-speed ``bytes.count``), i.e. when pyarrow
   skipped no blank line and no quoted value spans lines.
2. Otherwise pyarrow skipped blank lines: the non-blank lines are located with numpy
   (vectorised over the bytes) and the i-th row gets the i-th non-blank line.
3. If the counts still disagree (quoted values spanning lines), or pyarrow cannot parse
   (short rows, whitespace-only lines), pandas' C parser re-reads the file keeping blank
   lines as rows, so line = position + header line + 1. Edge case: after a quoted value
   containing a line break, that is the record number, not the physical line.

Before that, files that are not delimited text (a workbook or Parquet file under a text
suffix) are refused, UTF-16/UTF-32 text (by byte-order mark, or UTF-16 by its NUL bytes)
is converted to UTF-8, and a file with bare-CR (old Mac) line ends gets LF line ends, so
a bare CR counts as a line as in an editor; these conversions copy the file, the common
case (UTF-8 or Windows-1252 with LF or CRLF) does not. Text that is neither UTF-8 nor
Windows-1252 is refused at the line of its first undecodable byte. Every refusal is a
:class:`CohortError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import mmap
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from csf_responder.errors import CohortError
from csf_responder.units import normalise_unit

__all__ = ["LINE", "SOURCE_COLUMN", "Layout", "ReadResult", "WideCsf", "arrow_text",
           "blank_text", "constant_text", "csf_layout", "csf_to_long", "index_in",
           "match_headers", "read_table", "strip_unit", "take_text"]

#: Column with the line number a user sees (header = 1, first data row = 2).
LINE = "_line"
#: Column of a melted wide table holding the original header a value came from.
SOURCE_COLUMN = "_column"

_SUFFIXES = {".csv": "sniff", ".txt": "sniff", ".tsv": "\t", ".xlsx": "xlsx",
             ".parquet": "parquet", ".pq": "parquet"}
_DELIMITER_FORMAT = {",": "csv", ";": "csv-semicolon", "\t": "tsv"}
_FORMAT_NAMES = {"sniff": "delimited text", "\t": "TSV", "xlsx": "XLSX", "parquet": "Parquet"}
_UNIT = re.compile(r"^(?P<name>.*?)\s*(?:\((?P<p>[^()]*)\)|\[(?P<b>[^\[\]]*)\])\s*$")
_NUMBER_LIKE = re.compile(r"^\s*[<>*~]?\s*[-+]?\.?\d")
_UNIT_LABELS = {"", "unit", "units"}
#: A concentration unit once normalised (``pg/ml``, ``ug/l``, ``nmol/l``, ``iu/ml``...).
_CONCENTRATION_UNIT = re.compile(r"^(?:[fpnumk]?(?:g|mol|kat)|[mk]?i?u)/[fpnumdc]?l$")


@dataclass(frozen=True)
class ReadResult:
    """A file read as text: data columns as ``str`` ("" when empty) plus :data:`LINE`."""

    table: pd.DataFrame
    format: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """How a CSF table was laid out (``"long"`` or ``"wide"``) and what was done to it."""

    kind: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WideCsf:
    """A wide CSF table understood but not melted (:func:`csf_layout`).

    ``data`` holds the sample rows as read (a units row removed); ``repeated`` the id
    and carry columns present, which each long row repeats; ``headers``, ``names`` and
    ``units`` describe the analyte columns (header as written, the analyte it names,
    its unit or "" when none is given).
    """

    data: pd.DataFrame
    repeated: list[str]
    headers: list[str]
    names: list[str]
    units: list[str]

    @property
    def n_cells(self) -> int:
        """Rows of the long layout: one per sample row and analyte column."""
        return len(self.data) * len(self.headers)

    def long(self) -> pd.DataFrame:
        """The long layout (see :func:`csf_to_long`)."""
        return _melt(self.data, self.repeated, self.headers, self.names, self.units)


def strip_unit(header: str) -> tuple[str, str | None]:
    """Split ``"MCP-1 (pg/mL)"`` or ``"VEGF [ng/mL]"`` into name and unit.

    Returns
    -------
    tuple of (str, str or None)
        The stripped name and the unit, or None when the header carries no (non-empty) unit.
    """
    match = _UNIT.match(header.strip())
    if match is None or not match["name"]:
        return header.strip(), None
    unit = (match["p"] if match["p"] is not None else match["b"]).strip()
    return match["name"], unit or None


def _text_frame(arrow: pa.Table) -> pd.DataFrame:
    """An Arrow table of ``large_string`` columns as pandas ``str`` columns (zero-copy)."""
    return arrow.to_pandas(self_destruct=True, split_blocks=True)


def _arrow_cells(data, offset: int, keys: list[str], delimiter: str,
                 encoding: str) -> tuple[pd.DataFrame | None, str]:
    """Fast path: pyarrow on the bytes after the header; None if it cannot parse them.

    Cells are read as ``large_string``, the storage of pandas' ``str`` dtype, so the
    conversion to pandas copies nothing. Invalid UTF-8 is retried as Windows-1252;
    bytes that are neither raise UnicodeDecodeError.
    """
    for _ in range(2):
        buffer = pa.py_buffer(data)
        try:
            arrow = pacsv.read_csv(
                pa.BufferReader(buffer.slice(offset)),
                read_options=pacsv.ReadOptions(column_names=keys, encoding=encoding),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(keys, pa.large_string()),
                    strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            if "UTF8" in str(exc) and encoding == "utf-8":
                encoding = "cp1252"
                continue
            return None, encoding  # short rows or whitespace-only lines
        except pa.ArrowException:
            return None, encoding  # anything else pyarrow refuses: the exact parser decides
        finally:
            del buffer  # no view of ``data`` may outlive the parse (it may be a mmap)
        return _text_frame(arrow), encoding
    return None, encoding


_COUNT_CHUNK = 1 << 24


def _count_newlines(data, start: int, end: int) -> int:
    """``data.count(b"\n", start, end)`` for bytes or a memory map, in chunks."""
    if isinstance(data, bytes):
        return data.count(b"\n", start, end)
    total = 0
    for lo in range(start, end, _COUNT_CHUNK):
        hi = min(end, lo + _COUNT_CHUNK)
        chunk = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo)
        total += int(np.count_nonzero(chunk == ord("\n")))
        del chunk
    return total


def _nonblank_lines(data: bytes, start: int, end: int) -> np.ndarray:
    """0-based indexes of the lines of ``data[start:end]`` that are not blank.

    Blank means empty or a lone carriage return: exactly the lines pyarrow skips.
    """
    body = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    breaks = np.flatnonzero(body == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(body)]))
    width = stops - starts
    ends_in_cr = np.zeros(len(width), dtype=bool)
    ends_in_cr[width > 0] = body[stops[width > 0] - 1] == ord("\r")
    return np.flatnonzero(width - ends_in_cr > 0)


def _has_bare_cr(data, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` holds a carriage return not followed by a line feed.

    Parsers take a bare CR for a line break, but line numbers count line feeds. The
    bytes are scanned in chunks (vectorised), so memory stays bounded.
    """
    if data.find(b"\r", start, end) < 0:
        return False
    for lo in range(start, end, _COUNT_CHUNK):
        hi = min(end, lo + _COUNT_CHUNK)
        chunk = np.frombuffer(data, dtype=np.uint8, count=min(end, hi + 1) - lo, offset=lo)
        after = np.flatnonzero(chunk[:hi - lo] == ord("\r")) + 1  # index of what follows
        bare = bool(np.any(after >= len(chunk))
                    or np.any(chunk[after[after < len(chunk)]] != ord("\n")))
        del chunk
        if bare:
            return True
    return False


def _lf_lines(data) -> bytes:
    """The bytes with every CR LF and bare CR (old Mac line end) turned into LF."""
    return re.sub(rb"\r\n?", b"\n", bytes(data))


#: Byte-order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts
#: with UTF-16's), with the codec and the name shown to users.
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
              (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
              (b"\xff\xfe", "utf-16-le", "UTF-16"),
              (b"\xfe\xff", "utf-16-be", "UTF-16"))
#: Leading bytes of files that are certainly not delimited text.
_BINARY_MAGIC = ((b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)"),
                 (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old binary Excel .xls workbook"))
_NOT_TEXT = ("not text in UTF-8, UTF-16 or Windows-1252 (a binary file, or another "
             "encoding?); save it as 'CSV UTF-8'")
#: The bytes Windows-1252 leaves undefined.
_NOT_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")


def _wide_encoding(data) -> tuple[str, str, int] | None:
    """Codec, name and byte-order-mark length of UTF-16/UTF-32 text, else None.

    Without a byte-order mark, UTF-16 is recognised by its NUL bytes: ASCII text (the
    header) has one at every odd (little-endian) or even (big-endian) position.
    """
    for bom, codec, name in _WIDE_BOMS:
        if data[:len(bom)] == bom:
            return codec, f"{name} (byte-order mark)", len(bom)
    sample = bytes(data[:512])
    half = len(sample) // 2
    if half >= 4:
        even, odd = sample[0:2 * half:2].count(0), sample[1:2 * half:2].count(0)
        if odd >= 0.9 * half and even <= 0.1 * half:
            return "utf-16-le", "UTF-16 little-endian (no byte-order mark)", 0
        if even >= 0.9 * half and odd <= 0.1 * half:
            return "utf-16-be", "UTF-16 big-endian (no byte-order mark)", 0
    return None


def _transcode(path: Path, data, codec: str, name: str, skip: int) -> bytes:
    """UTF-16/UTF-32 bytes (after a ``skip``-byte mark) as UTF-8 bytes, same lines."""
    raw = bytes(data[skip:])
    try:
        return raw.decode(codec).encode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode(codec, errors="replace")
        line = 1 + before.count("\n") + before.count("\r") - before.count("\r\n")
        raise CohortError(f"not valid {name.split(' (')[0]} text ({exc.reason}); save it as "
                          "'CSV UTF-8'", file=str(path), row=line) from None


def _encoding_error(path: Path, data, start: int) -> CohortError:
    """The error for bytes from ``start`` on that are neither UTF-8 nor Windows-1252: at
    the line of the first byte Windows-1252 leaves undefined."""
    found = _NOT_CP1252.search(data, start)
    if found is None:
        return CohortError(_NOT_TEXT, file=str(path))
    return CohortError(f"byte 0x{found[0][0]:02X} on this line is neither UTF-8 nor "
                       "Windows-1252 text (a binary file, or another encoding such as Mac "
                       "Roman?); save the file as 'CSV UTF-8'", file=str(path),
                       row=1 + _count_newlines(data, 0, found.start()))


def _exact_cells(path: Path, data, offset: int, header_line: int, keys: list[str],
                 delimiter: str, encoding: str) -> tuple[pd.DataFrame, str]:
    """Exact path: pandas' C parser keeps blank lines as rows and pads short rows with "".

    Reads the file itself when ``data`` is its memory map, else the bytes (converted
    text). Returns the cells and the encoding they were decoded with.
    """
    while True:
        try:
            with (io.BytesIO(data) if isinstance(data, bytes) else path.open("rb")) as stream, \
                    warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)  # would drop fields
                stream.seek(offset)
                cells = pd.read_csv(stream, header=None, names=[*keys, "extra"], dtype=str,
                                    sep=delimiter, keep_default_na=False,
                                    skip_blank_lines=False, encoding=encoding, index_col=False)
        except UnicodeDecodeError:
            if encoding == "utf-8":
                encoding = "cp1252"
                continue
            raise _encoding_error(path, data, offset) from None
        except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
            found = re.search(r"line (\d+)", str(exc))
            row = header_line + int(found[1]) if found else None
            raise CohortError("cannot parse as delimited text (a row has more fields than the "
                              "header, or bad quoting or encoding)", file=str(path),
                              row=row) from None
        break
    extra = np.flatnonzero(cells.pop("extra").str.strip().ne("").to_numpy(dtype=bool))
    if len(extra):
        raise CohortError("row has more fields than the header", file=str(path),
                          row=header_line + 1 + int(extra[0]))
    return cells, encoding


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], pd.DataFrame, np.ndarray,
                                                          str, list[str]]:
    """Parse a delimited text file; return header names, cells, lines, delimiter, notes.

    The file is memory-mapped rather than read into memory: pyarrow parses the mapped
    pages directly and nothing holds a second copy of the file (except for UTF-16 and
    old-Mac CR-only files, which are converted to UTF-8 with LF line ends first).
    """
    with path.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size == 0:
            return _parse_delimited(path, b"", delimiter)
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse_delimited(path, mapped, delimiter)
    finally:
        # a view may outlive a failed parse: the map then goes when it is collected
        with contextlib.suppress(BufferError):
            mapped.close()


def _parse_delimited(path: Path, data, delimiter: str) -> tuple[list[str], pd.DataFrame,
                                                                np.ndarray, str, list[str]]:
    """:func:`_read_delimited` on the file's bytes (``bytes`` or a memory map).

    Binary files are refused by their leading bytes; UTF-16/UTF-32 text is converted to
    UTF-8 first (line numbers do not change).
    """
    for magic, what in _BINARY_MAGIC:
        if data[:len(magic)] == magic:
            raise CohortError(f"not delimited text: the file is {what}; export the sheet as "
                              "CSV, or give the file the suffix of its format", file=str(path))
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        raise CohortError("not delimited text: the file is a Parquet file; give it the "
                          "suffix .parquet", file=str(path))
    notes: list[str] = []
    wide = _wide_encoding(data)
    if wide is not None:
        data = _transcode(path, data, *wide)
        notes.append(f"{path.name}: decoded as {wide[1]}")
    return _parse_text(path, data, delimiter, notes)


_CR_NOTE = "bare carriage returns (old Mac line ends) read as line breaks"


def _parse_text(path: Path, data, delimiter: str, notes: list[str]
                ) -> tuple[list[str], pd.DataFrame, np.ndarray, str, list[str]]:
    """:func:`_parse_delimited` on UTF-8 or Windows-1252 bytes."""
    start = 3 if data[:3] == b"\xef\xbb\xbf" else 0
    first_lf = data.find(b"\n", start)
    first_cr = data.find(b"\r", start, len(data) if first_lf < 0 else first_lf)
    if first_cr >= 0 and data[first_cr + 1:first_cr + 2] != b"\n":  # CR-only line ends
        return _parse_text(path, _lf_lines(data), delimiter,
                           [*notes, f"{path.name}: {_CR_NOTE}"])
    head = re.compile(rb"\s*").match(data, start).end()
    if head == len(data):
        raise CohortError("file is empty (expected a header row)", file=str(path))
    head = max(start, data.rfind(b"\n", start, head) + 1)  # start of the header line
    header_line = 1 + _count_newlines(data, 0, head)
    header_end = data.find(b"\n", head)
    header_end = len(data) if header_end < 0 else header_end
    encoding = "utf-8"
    raw_header = data[head:header_end]
    if b"\x00" in raw_header:
        raise CohortError("the header line holds NUL bytes: " + _NOT_TEXT, file=str(path),
                          row=header_line)
    try:
        header = raw_header.decode("utf-8")
    except UnicodeDecodeError:
        try:
            header, encoding = raw_header.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            raise _encoding_error(path, data, head) from None
    if delimiter == "sniff":
        delimiter = max(_DELIMITER_FORMAT, key=header.count)  # ties: comma first
    try:
        names = next(csv.reader([header.rstrip("\r")], delimiter=delimiter))
    except csv.Error as exc:
        raise CohortError(f"cannot parse the header line ({exc})", file=str(path),
                          row=header_line) from None
    keys = [f"f{i}" for i in range(len(names))]
    end = len(data)
    while end > header_end and data[end - 1] in b"\r\n":
        end -= 1  # trailing line breaks shift nothing
    body_lines = (_count_newlines(data, header_end + 1, end) + 1 if end > header_end + 1
                  else 0)
    offsets = None  # 0-based index, among the lines after the header, of each row
    if body_lines == 0:
        cells = pd.DataFrame({key: pd.Series([], dtype="str") for key in keys})
    else:
        try:
            cells, encoding = _arrow_cells(data, header_end + 1, keys, delimiter, encoding)
        except UnicodeDecodeError:
            raise _encoding_error(path, data, header_end + 1) from None
    fast = cells is not None and len(cells) == body_lines
    # a bare CR is a parser's line break but not a line: it shifts every later line
    # (on the fast path of an LF file, one memchr-speed search rules it out)
    if (not fast or not raw_header.endswith(b"\r")) and _has_bare_cr(data, header_end + 1, end):
        return _parse_text(path, _lf_lines(data), delimiter,
                           [*notes, f"{path.name}: {_CR_NOTE}"])
    if fast:
        offsets = np.arange(len(cells), dtype=np.int64)  # fast path: row i is line i
    elif cells is not None:  # pyarrow skipped blank lines: find them (vectorised)
        offsets = _nonblank_lines(data, header_end + 1, end)
        notes.append(f"{path.name}: blank lines skipped; line numbers counted exactly")
        if len(offsets) != len(cells):  # quoted values spanning lines: exact parser
            cells, offsets = None, None
            notes.pop()
    if cells is None:  # exact path: blank lines kept as rows, so position = line offset
        cells, encoding = _exact_cells(path, data, header_end + 1, header_line, keys,
                                       delimiter, encoding)
        offsets = np.arange(len(cells), dtype=np.int64)
        notes.append(f"{path.name}: blank or irregular lines found; read with the exact "
                     "(slower) parser so line numbers stay true")
    if encoding != "utf-8":
        notes.append(f"{path.name}: not valid UTF-8, decoded as Windows-1252")
    lines = offsets  # fresh array: shifted in place (no second copy)
    lines += header_line + 1
    return names, cells, lines, delimiter, notes


_SPACE_BYTES = np.zeros(256, dtype=bool)
_SPACE_BYTES[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_SPACE_BYTES[128:] = True  # non-ASCII lead byte: may start a Unicode space


def blank_text(column: pd.Series) -> np.ndarray:
    """``column.str.strip().eq("")`` as a bool array, without building stripped strings.

    For Arrow-backed text, pandas strips with ``utf8_trim_whitespace``; a value strips
    to "" exactly when it is empty or all Unicode whitespace (``utf8_is_space``). Only
    values that are empty or start with a byte that may begin whitespace are looked at.
    """
    array = getattr(column.array, "_pa_array", None)
    if array is None or not pa.types.is_large_string(array.type) and not pa.types.is_string(
            array.type):
        return column.str.strip().eq("").to_numpy(dtype=bool)
    blank = np.zeros(len(array), dtype=bool)
    start = 0
    for chunk in array.chunks:
        n = len(chunk)
        if n and chunk.null_count == 0:
            width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
            offsets = np.frombuffer(chunk.buffers()[1], dtype=width,
                                    count=n + 1, offset=chunk.offset * np.dtype(width).itemsize)
            data = chunk.buffers()[2]
            data = (np.frombuffer(data, dtype=np.uint8) if data is not None and data.size
                    else np.zeros(1, dtype=np.uint8))
            first = offsets[:-1]
            empty = offsets[1:] == first
            maybe = empty | _SPACE_BYTES[data[np.minimum(first, len(data) - 1)]]
            rows = np.flatnonzero(maybe)
        else:
            rows = np.arange(n)
        if len(rows):
            part = chunk.take(pa.array(rows))
            exact = pc.or_(pc.equal(pc.binary_length(part), 0), pc.utf8_is_space(part))
            blank[start + rows] = np.asarray(
                pc.fill_null(exact, False).to_numpy(zero_copy_only=False), dtype=bool)
        start += n
    return blank


def constant_text(value: str, n: int) -> pd.Series:
    """A ``str`` Series of ``n`` copies of ``value``: one block of Arrow text, repeated."""
    block = min(n, 1 << 16)
    data = value.encode()
    offsets = np.arange(block + 1, dtype=np.int64) * len(data)
    array = pa.LargeStringArray.from_buffers(block, pa.py_buffer(offsets),
                                             pa.py_buffer(data * block))
    chunks = [array] * (n // block) if block else []
    if block and n % block:
        chunks.append(array.slice(0, n % block))
    return pa.chunked_array(chunks, pa.large_string()).to_pandas()


def _cell_text(value: object) -> str:
    """Text of one XLSX cell: integers without ``.0``, NaN/None as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path) -> tuple[list[str], pd.DataFrame, np.ndarray, str]:
    """First sheet of a workbook; Excel row numbers as lines."""
    import openpyxl  # imported lazily: only XLSX needs it

    with path.open("rb") as stream:
        magic = stream.read(8)
    if magic == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise CohortError("cannot read as XLSX: the file is an old binary Excel .xls "
                          "workbook; save it as .xlsx (Excel Workbook)", file=str(path))
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = book.worksheets[0]
            rows = list(sheet.iter_rows(min_row=1, values_only=True))
            title = sheet.title
        finally:
            book.close()
    except Exception as exc:  # openpyxl raises many types for corrupt files
        raise CohortError(f"cannot read as XLSX ({type(exc).__name__}: {exc})",
                          file=str(path)) from None
    head = next((i for i, row in enumerate(rows) if any(_cell_text(v).strip() for v in row)),
                None)
    if head is None:
        raise CohortError("file is empty (expected a header row)", file=str(path))
    names = [_cell_text(v) for v in rows[head]]
    body = rows[head + 1:]
    width = max([len(names), *map(len, body)])
    if any(len(row) != width for row in body) or len(names) < width:
        # a sheet without a stored size gives rows of their own length: pad them (a
        # value beyond the header is then refused as a column without a header)
        names += [""] * (width - len(names))
        body = [(*row, *[None] * (width - len(row))) for row in body]
    cells = pd.DataFrame(body, columns=range(width), dtype=object)
    cells = cells.map(_cell_text).astype("str")  # per cell, but openpyxl itself is per cell
    return names, cells, head + 2 + np.arange(len(cells), dtype=np.int64), title


def _read_parquet(path: Path) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """A Parquet file with every column cast to text by pyarrow (no ``.0`` on integers)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise CohortError(f"cannot read as Parquet ({exc})", file=str(path)) from None
    duplicate = next((n for i, n in enumerate(schema.names) if n in schema.names[:i]), None)
    if duplicate is not None:
        raise CohortError(f"duplicate column name '{duplicate}'", file=str(path),
                          column=duplicate)
    try:
        try:  # text straight into large_string, the storage of pandas' str (no cast)
            arrow = pq.read_table(path, schema=pa.schema(
                [f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f
                 for f in schema], metadata=schema.metadata))
        except (pa.ArrowException, OSError):
            arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise CohortError(f"cannot read as Parquet ({exc})", file=str(path)) from None
    names = [n for n in arrow.column_names if not re.fullmatch(r"__index_level_\d+__", n)]
    columns = {}
    for i, name in enumerate(names):
        column = arrow.column(name)
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        try:
            # large_string is the storage of pandas' str dtype: no copy in to_pandas
            column = pc.cast(column, pa.large_string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
            raise CohortError(f"cannot turn column into text ({exc})", file=str(path),
                              column=name) from None
        columns[f"f{i}"] = column.fill_null("") if column.null_count else column
    num_rows = arrow.num_rows
    del arrow  # free the file's columns as soon as their text exists
    cells = (_text_frame(pa.table(columns)) if columns else pd.DataFrame(index=range(0)))
    return names, cells, 2 + np.arange(num_rows, dtype=np.int64)


def read_table(path: str | Path) -> ReadResult:
    """Read a CSF panel file, every cell as text, every row with its :data:`LINE`.

    The format comes from the suffix: ``.csv``/``.txt`` (delimiter sniffed among ``,``
    ``;`` and tab from the header line), ``.tsv``, ``.xlsx`` (first sheet) and
    ``.parquet``/``.pq``. Header names are stripped of whitespace and a UTF-8 BOM; rows
    whose cells are all empty are dropped without shifting later line numbers.

    Raises
    ------
    CohortError
        If the file is missing, unreadable or corrupt, has an unknown suffix, is empty,
        has duplicate column names, or an unnamed column holding values.
    """
    path = Path(path)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise CohortError(f"unknown file type '{path.suffix}' (expected one of "
                          f"{', '.join(_SUFFIXES)})", file=str(path))
    if not path.is_file():
        raise CohortError("file not found", file=str(path))
    notes: list[str] = []
    try:
        if kind == "xlsx":
            names, cells, lines, sheet = _read_xlsx(path)
            fmt, how = "xlsx", f"XLSX (sheet '{sheet}')"
        elif kind == "parquet":
            (names, cells, lines), fmt, how = _read_parquet(path), "parquet", "Parquet"
        else:
            names, cells, lines, delimiter, notes = _read_delimited(path, kind)
            fmt = _DELIMITER_FORMAT[delimiter]
            how = f"{fmt.upper()} (delimiter {delimiter!r})"
    except OSError as exc:
        raise CohortError(f"cannot read file ({exc.strerror or exc})", file=str(path)) from None
    except (csv.Error, UnicodeError, pa.ArrowException, zipfile.BadZipFile) as exc:
        # safety net: every known refusal above is already a CohortError
        raise CohortError(f"cannot read as {_FORMAT_NAMES[kind]} ({type(exc).__name__}: "
                          f"{exc})", file=str(path)) from None
    if not names:
        raise CohortError("file has no columns", file=str(path))
    cells.columns = names = [str(n).replace("\ufeff", "").strip() for n in names]
    keep = [i for i, name in enumerate(names) if name]
    for i in set(range(len(names))) - set(keep):
        if cells.iloc[:, i].str.strip().ne("").any():
            raise CohortError(f"column {i + 1} has no header but holds values", file=str(path))
    if len(keep) < len(names):  # unnamed columns left: all empty (e.g. Excel formatting)
        cells = cells.iloc[:, keep]
    seen: set[str] = {LINE}
    for name in cells.columns:
        if name in seen:
            raise CohortError(f"duplicate column name '{name}'" if name != LINE else
                              f"column name '{LINE}' is reserved", file=str(path), column=name)
        seen.add(name)
    cells[LINE] = lines
    empty = np.ones(len(cells), dtype=bool)
    for position, name in enumerate(cells.columns.drop(LINE)):  # only rows empty so far
        if position == 0:
            empty = blank_text(cells[name])
            continue
        rows = np.flatnonzero(empty)
        if len(rows) == 0:
            break
        empty[rows] = blank_text(cells[name].iloc[rows])
    table = cells.loc[~empty].reset_index(drop=True) if empty.any() else cells
    notes.insert(0, f"{path.name}: read as {how}, {len(table)} rows")
    if empty.any():
        notes.append(f"{path.name}: {empty.sum()} entirely empty rows dropped")
    return ReadResult(table, fmt, notes)


def csf_to_long(
    table: pd.DataFrame,
    *,
    file: str,
    is_analyte: Callable[[str], bool | str],
    id_columns: Sequence[str] = ("subject_id", "timepoint"),
    carry_columns: Sequence[str] = ("plate", "replicate", "lloq", "uloq", "sample_type"),
) -> tuple[pd.DataFrame, Layout]:
    """Bring a CSF table (from :func:`read_table`) to the long layout: :func:`csf_layout`,
    then :meth:`WideCsf.long` for a wide table."""
    found, layout = csf_layout(table, file=file, is_analyte=is_analyte,
                               id_columns=id_columns, carry_columns=carry_columns)
    return (found.long() if isinstance(found, WideCsf) else found), layout


def csf_layout(
    table: pd.DataFrame,
    *,
    file: str,
    is_analyte: Callable[[str], bool | str],
    id_columns: Sequence[str] = ("subject_id", "timepoint"),
    carry_columns: Sequence[str] = ("plate", "replicate", "lloq", "uloq", "sample_type"),
) -> tuple[pd.DataFrame | WideCsf, Layout]:
    """Tell the layout of a CSF table (from :func:`read_table`): a long table as it will
    be checked, or a wide one understood (:class:`WideCsf`, melted on demand).

    A table with ``analyte`` and ``value`` columns is already long and is returned as a
    copy with :data:`SOURCE_COLUMN` = ``"value"``. Otherwise each column whose header
    (without a trailing ``(unit)``/``[unit]``) satisfies ``is_analyte`` is an analyte
    column, which the long layout melts into
    rows ``id_columns..., carry columns present, analyte, value, unit, LINE,
    SOURCE_COLUMN``, ordered by source row then column; empty cells give value "".
    When ``is_analyte`` returns a string rather than True, that string is the analyte
    the header names (its canonical name), so that two spellings of one analyte
    (``MCP-1`` and its alias ``CCL2``) are caught; otherwise headers are compared
    ignoring case, spaces and punctuation.
    Units come from the header, else from a units row, else are "" (the panel's
    canonical unit, downstream). The units row is the first row when its id cells are
    empty or ``unit``/``units`` and either an id cell says ``unit``/``units``, or no
    analyte cell is number-like and every analyte cell is filled or every filled one
    is a concentration unit (``pg/mL``; a blank cell then gives no unit, with a note).
    It is removed. Other columns are ignored and listed in a note.

    Raises
    ------
    CohortError
        If an id column is missing, no analyte column is recognised, two columns name the
        same analyte, or a header unit disagrees with the units row.
    """
    header_notes: list[str] = []
    table = match_headers(table, [*id_columns, *carry_columns, "analyte", "value", "unit"],
                          file=file, notes=header_notes)
    if {"analyte", "value"} <= set(table.columns):
        long = table.copy()
        long[SOURCE_COLUMN] = constant_text("value", len(long)).set_axis(long.index)
        return long, Layout("long", [f"{file}: long layout (one row per sample and analyte)",
                                     *header_notes])
    for column in id_columns:
        if column not in table.columns:
            raise CohortError(f"missing id column '{column}' (wide layout)", file=file,
                              column=column)
    carry = [c for c in carry_columns if c in table.columns and c not in id_columns]
    headers, names, units, ignored = [], [], [], []
    owner: dict[str, str] = {}  # analyte (canonical name or loose key) -> first column
    for column in table.columns:
        if column in (LINE, SOURCE_COLUMN) or column in id_columns or column in carry:
            continue
        name, unit = strip_unit(column)
        analyte = is_analyte(name)
        if analyte:
            named = isinstance(analyte, str)
            key = analyte if named else re.sub(r"[\W_]+", "", name.casefold()) or name
            if key in owner:
                raise CohortError(f"two columns hold analyte '{analyte if named else name}': "
                                  f"'{owner[key]}' and '{column}' (keep one)", file=file,
                                  column=column)
            owner[key] = column
            headers.append(column)
            names.append(name)
            units.append(unit)
        else:
            ignored.append(column)
    if not headers:
        raise CohortError("no analyte column recognised (wide layout); headers: "
                          + ", ".join(map(str, table.columns.drop(LINE, errors="ignore"))),
                          file=file)
    sources = {"header"} if any(u is not None for u in units) else set()
    data, notes = table, list(header_notes)
    if len(table):
        first = table.iloc[0]
        labels = [str(first[c]).strip().lower() for c in id_columns]
        cells = [str(first[c]).strip() for c in headers]
        filled = [c for c in cells if c]
        labelled = any(label in ("unit", "units") for label in labels)
        if all(label in _UNIT_LABELS for label in labels) and (labelled or (
                filled and not any(_NUMBER_LIKE.match(c) for c in filled)
                and (len(filled) == len(cells) or all(
                    _CONCENTRATION_UNIT.match(normalise_unit(c)) for c in filled)))):
            line = int(first[LINE]) if LINE in table.columns else None
            for i, cell in enumerate(cells):
                if cell and units[i] and cell.lower() != units[i].lower():
                    raise CohortError(f"header unit '{units[i]}' disagrees with units row "
                                      f"'{cell}'", file=file, row=line, column=headers[i])
                if cell and not units[i]:
                    units[i] = cell
                    sources.add("units row")
            data = table.iloc[1:]
            notes.append(f"{file}: line {line} is a units row, not a sample; removed")
    missing = [n for n, u in zip(names, units, strict=True) if not u]
    if missing:
        sources.add("not given")
        notes.append(f"{file}: no unit given for {', '.join(missing)}; unit left empty")
    if ignored:
        notes.append(f"{file}: ignored columns (not id, carry or analyte): "
                     + ", ".join(ignored))
    order = [s for s in ("header", "units row", "not given") if s in sources]
    notes.insert(0, f"{file}: wide layout, {len(headers)} analyte columns "
                    f"(units from {' and '.join(order)})")
    return WideCsf(data, [*id_columns, *carry], headers, names,
                   [u or "" for u in units]), Layout("wide", notes)


def _melt(data: pd.DataFrame, repeated: Sequence[str], headers: Sequence[str],
          names: Sequence[str], units: Sequence[str]) -> pd.DataFrame:
    """The long rows of a wide CSF table, ordered by source row then analyte column.

    Columns: each of ``repeated`` (a row's cell on each of its long rows), ``analyte``
    (``names``), ``value`` (the cell of ``headers``), ``unit`` (``units``), :data:`LINE`
    (when ``data`` has it) and :data:`SOURCE_COLUMN` (``headers``); every column but
    :data:`LINE` is ``str``. Built with Arrow ``take`` on the columns' text, so no cell
    becomes a Python object.
    """
    rows, k = len(data), len(headers)
    each_row = np.repeat(np.arange(rows, dtype=np.int64), k)
    each_column = np.tile(np.arange(k, dtype=np.int64), rows)
    out = {c: take_text(arrow_text(data[c]), each_row) for c in repeated}
    out["analyte"] = take_text(pa.array(list(names), pa.large_string()), each_column)
    stacked = pa.chunked_array([chunk for c in headers for chunk in arrow_text(data[c]).chunks],
                               pa.large_string())
    out["value"] = take_text(stacked, each_column * rows + each_row)  # column-major stack
    out["unit"] = take_text(pa.array(list(units), pa.large_string()), each_column)
    if LINE in data.columns:
        out[LINE] = data[LINE].to_numpy(dtype=np.int64)[each_row]
    out[SOURCE_COLUMN] = take_text(pa.array(list(headers), pa.large_string()), each_column)
    return pd.DataFrame(out, copy=False)


def arrow_text(column: pd.Series | pd.Index) -> pa.ChunkedArray:
    """Text as Arrow ``large_string``: the column's own storage (no copy) when it is
    pandas ``str``, else its values as pandas ``str`` would hold them."""
    array = getattr(column.array, "_pa_array", None)
    if array is None or not pa.types.is_large_string(array.type):
        array = column.astype("str").array._pa_array
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def index_in(values: pd.Series | pd.Index, distinct: pd.Series | pd.Index | pa.Array
             ) -> np.ndarray:
    """Each text value's position among the ``distinct`` values (-1: not there), hashed
    by Arrow: ``pd.Index(distinct).get_indexer(values)`` without Python strings."""
    if not isinstance(distinct, pa.Array | pa.ChunkedArray):
        distinct = arrow_text(distinct)
    if isinstance(distinct, pa.ChunkedArray):
        distinct = distinct.combine_chunks()
    found = pc.index_in(arrow_text(values), value_set=distinct)
    return found.fill_null(-1).to_numpy().astype(np.int64)


def take_text(array: pa.Array | pa.ChunkedArray, indices: np.ndarray) -> pd.Series:
    """``array[indices]`` (Arrow text) as a pandas ``str`` column.

    Taken with 32-bit offsets (``string``), several times faster than ``large_string``
    in Arrow's take, when the text fits them; the result is ``large_string``, the
    storage of pandas' ``str``.
    """
    positions = pa.array(indices)
    try:
        taken = array.cast(pa.string()).take(positions).cast(pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # over 2 GiB of text
        taken = array.take(positions)
    return (taken if isinstance(taken, pa.ChunkedArray) else pa.chunked_array([taken])
            ).to_pandas()


def match_headers(table: pd.DataFrame, known: Sequence[str], *, file: str,
                  notes: list[str]) -> pd.DataFrame:
    """Rename headers that are contract columns but for case (``Subject_ID``), with a note.

    Other headers (wide analyte columns such as ``MCP-1 (pg/mL)``) are left as they are.
    A header already spelled exactly is never renamed, and two headers that would become
    one are left alone (the contract then reports what is missing or extra).
    """
    wanted = {name.lower(): name for name in known}
    renames = {}
    for column in table.columns:
        target = wanted.get(str(column).strip().lower())
        if target is not None and target != column and target not in table.columns:
            renames[column] = target
    if len(set(renames.values())) < len(renames):
        return table
    if renames:
        notes.append(f"{file}: header(s) read as the contract's: "
                     + ", ".join(f"'{old}' -> {new}" for old, new in renames.items()))
    return table.rename(columns=renames)
