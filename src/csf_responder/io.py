"""File input and output: the only module that touches cohort files.

Everything else in the library takes and returns tables.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from csf_responder.errors import CohortError, CsfResponderError
from csf_responder.readers import LINE, WideCsf, arrow_text, csf_layout, read_table

__all__ = [
    "COHORT_FILES", "CSF_SUFFIXES", "CohortFiles", "LINE", "RawCohort", "StagedDirectory",
    "TableStream", "cohort_digest", "layout_chunk", "melt_chunk", "read_cohort",
    "read_cohort_chunks", "read_cohort_files", "subject_ids", "write_cohort", "write_outputs",
    "write_table",
]

#: The files of a cohort directory besides the visits file, whose name the indication
#: gives (``alsfrs.csv`` for ALS); the CSF panel may also be ``csf`` with another suffix
#: of :data:`CSF_SUFFIXES`.
COHORT_FILES = ("patients.csv", "csf.csv")
CSF_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".parquet", ".pq")


@dataclass(frozen=True)
class RawCohort:
    """The three cohort tables as read, every cell a string, plus each row's line number.

    ``visits`` is the visits file (``visits_name``, e.g. ``alsfrs.csv``); ``csf`` is in
    long layout (a wide file is melted on reading) unless ``csf_melted`` says otherwise;
    ``csf_name`` is the CSF file's name as found (``csf.xlsx``, ...).
    """

    directory: Path
    patients: pd.DataFrame
    visits: pd.DataFrame
    csf: pd.DataFrame
    visits_name: str
    csf_name: str
    notes: list[str] = field(default_factory=list)
    #: False for a chunk of :func:`read_cohort_chunks` with ``melt=False``: ``csf`` is
    #: still the file's rows as read, until :func:`melt_chunk` (or, when they are
    #: wide, for good: :func:`layout_chunk`).
    csf_melted: bool = True
    #: Whether melting adds the CSF layout's notes (the first chunk's alone do).
    layout_notes: bool = True

    def file(self, name: str) -> str:
        """The path of one cohort file, as shown in messages (``csf.csv`` means the CSF
        file, whatever its format)."""
        return str(self.directory / (self.csf_name if name == "csf.csv" else name))


def _csf_path(directory: Path) -> Path:
    found = [directory / f"csf{suffix}" for suffix in CSF_SUFFIXES
             if (directory / f"csf{suffix}").is_file()]
    if len(found) > 1:
        raise CohortError(f"several CSF files ({', '.join(p.name for p in found)}): keep one",
                          file=str(directory))
    if not found:
        raise CohortError("file not found (a cohort directory holds patients.csv, "
                          f"alsfrs.csv and csf with a suffix of {', '.join(CSF_SUFFIXES)})",
                          file=str(directory / "csf.csv"))
    return found[0]


def _read(path: Path, notes: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise CohortError("file not found (a cohort directory holds patients.csv, the "
                          "visits file of the indication and csf)", file=str(path))
    result = read_table(path)
    notes.extend(result.notes)
    return result.table


def read_cohort(directory: str | Path, *, visits_file: str,
                is_analyte: Callable[[str], bool | str] | None = None) -> RawCohort:
    """Read a cohort directory (see ``docs/data-format.md``) without interpreting values.

    Parameters
    ----------
    directory : path
        Holds ``patients.csv``, the visits file and the CSF panel as ``csf.csv``,
        ``csf.tsv``, ``csf.xlsx`` or ``csf.parquet``, long or wide.
    visits_file : str
        Name of the visits file (the indication's, e.g. ``alsfrs.csv``).
    is_analyte : callable, optional
        Tells analyte columns of a wide CSF file (header without unit -> bool, or the
        analyte's canonical name, which lets two spellings of one analyte such as
        ``MCP-1`` and ``CCL2`` be refused); without it a wide file cannot be recognised.

    Raises
    ------
    CohortError
        If the directory or one of its files is missing or cannot be read.
    """
    return next(read_cohort_chunks(directory, visits_file=visits_file, is_analyte=is_analyte,
                                   chunk_size=None))


def subject_ids(table: pd.DataFrame) -> pd.Series | None:
    """The stripped subject_id of each row (header matched ignoring case), if any."""
    for column in table.columns:
        if str(column).strip().lower() == "subject_id":
            return table[column].astype(str).str.strip()
    return None


def _distinct_ids(ids: pd.Series) -> pa.Array:
    """The distinct non-blank ids in order of first appearance (``pd.unique``); ids in
    strictly increasing order (a sorted patients.csv) are their own distinct values."""
    array = arrow_text(ids).combine_chunks()
    named = array.filter(pc.fill_null(pc.not_equal(array, ""), True))
    if len(named) < 2 or pc.all(pc.less(named[:-1], named[1:])).as_py():
        return named
    return pc.unique(named)


def _runs(ids: pd.Series, index: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The runs of equal ids: the row each starts at (then the number of rows), and the
    position of its id among the distinct ids ``index`` (-1: not there).

    A file sorted by subject has one run per patient; when the runs are ``index``
    itself, in its order (a file sorted like patients.csv), nothing is looked up."""
    text = arrow_text(ids).combine_chunks()
    if len(text) == 0:
        return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64)
    changes = pc.fill_null(pc.not_equal(text[1:], text[:-1]), True)
    starts = np.flatnonzero(np.concatenate([[True], changes.to_numpy(zero_copy_only=False)]))
    heads = text.take(pa.array(starts))
    if len(heads) == len(index) and heads.equals(index):
        found = np.arange(len(heads), dtype=np.int64)
    else:
        found = pc.index_in(heads, value_set=index).fill_null(-1).to_numpy().astype(np.int64)
    return np.append(starts, len(text)), found


def _positions(ids: pd.Series, index: pa.Array) -> np.ndarray:
    """Each row's position among the distinct ids ``index`` (-1: not there), looked up
    once per run of equal ids (:func:`_runs`)."""
    bounds, found = _runs(ids, index)
    return np.repeat(found, np.diff(bounds))


def _chunk_rows(ids: pd.Series | None, n_rows: int, index: pa.Array, n_chunks: int,
                size: int) -> list[np.ndarray | slice]:
    """Row positions of each chunk: a row goes with its subject's chunk (the subject's
    position among ``index`` // ``size``); rows of unknown or blank subjects, and every
    row of a table without subject_id, go last. When the rows are in chunk order already
    (a file sorted like patients.csv), each chunk is a slice (no copy of the rows), found
    from the runs of equal ids alone (one per patient, not one per row)."""
    if ids is None:
        return [np.arange(0)] * (n_chunks - 1) + [np.arange(n_rows)]
    bounds, found = _runs(ids, index)
    chunk = np.where(found >= 0, found // size, n_chunks - 1)  # of each run
    if (chunk[1:] >= chunk[:-1]).all():
        edges = bounds[np.searchsorted(chunk, np.arange(n_chunks + 1))]
        return [slice(int(edges[k]), int(edges[k + 1])) for k in range(n_chunks)]
    rows = np.repeat(chunk, np.diff(bounds))
    order = np.argsort(rows, kind="stable")
    edges = np.searchsorted(rows[order], np.arange(n_chunks + 1))
    return [order[edges[k]:edges[k + 1]] for k in range(n_chunks)]


@dataclass(frozen=True)
class CohortFiles:
    """A cohort directory's three files read once (every cell text, Arrow-backed) and
    the rows of each of its chunks (:func:`read_cohort_files`)."""

    #: The whole files, the CSF as read (not melted), with the reader's notes.
    files: RawCohort
    #: ``patients``, ``visits``, ``csf`` -> each chunk's rows (None: the whole table)
    rows: dict[str, list[np.ndarray | slice | None]]

    @property
    def n_chunks(self) -> int:
        """How many chunks the cohort is split in."""
        return len(self.rows["patients"])

    def chunk(self, k: int, *, is_analyte: Callable[[str], bool | str] | None = None,
              melt: bool = True) -> RawCohort:
        """Chunk ``k`` (from 0): its patients, with their visit and CSF rows."""
        def part(name: str) -> pd.DataFrame:
            table, rows = getattr(self.files, name), self.rows[name][k]
            return table if rows is None else table.iloc[rows].reset_index(drop=True)

        raw = replace(self.files, patients=part("patients"), visits=part("visits"),
                      csf=part("csf"), notes=list(self.files.notes) if k == 0 else [],
                      layout_notes=k == 0)
        return melt_chunk(raw, is_analyte) if melt else raw

    def chunks(self, *, is_analyte: Callable[[str], bool | str] | None = None,
               melt: bool = True) -> Iterator[RawCohort]:
        """The chunks, one at a time (see :func:`read_cohort_chunks`)."""
        for k in range(self.n_chunks):
            yield self.chunk(k, is_analyte=is_analyte, melt=melt)


def read_cohort_files(directory: str | Path, *, visits_file: str | Callable[[], str],
                      chunk_size: int | None) -> CohortFiles:
    """Read a cohort directory once and find each chunk's rows (see
    :func:`read_cohort_chunks`).

    ``visits_file`` may be a callable giving the name when it is needed, after
    patients.csv and the CSF file are read: the reading can start in another thread
    before the name is known (scoring learns it from the model).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CohortError("cohort directory not found", file=str(directory))
    notes: dict[str, list[str]] = {"patients": [], "visits": [], "csf": []}
    patients = _read(directory / "patients.csv", notes["patients"])
    csf_path = _csf_path(directory)
    csf = _read(csf_path, notes["csf"])
    ids = subject_ids(patients) if chunk_size is not None else None
    index = _distinct_ids(ids) if ids is not None else None
    n_chunks = 1 if index is None else max(1, -(-len(index) // chunk_size))

    def rows(table: pd.DataFrame, found: pd.Series | None = None
             ) -> list[np.ndarray | slice | None]:
        if index is None:  # one chunk (a missing subject_id: the contract check names it)
            return [None]
        found = subject_ids(table) if found is None else found
        return _chunk_rows(found, len(table), index, n_chunks, chunk_size)

    csf_rows = rows(csf)
    name = visits_file if isinstance(visits_file, str) else visits_file()
    visits = _read(directory / name, notes["visits"])
    whole = RawCohort(directory, patients, visits, csf, name, csf_path.name,
                      [note for file in notes.values() for note in file], csf_melted=False)
    return CohortFiles(whole,
                       {"patients": rows(patients, ids), "visits": rows(visits),
                        "csf": csf_rows})


def read_cohort_chunks(directory: str | Path, *, visits_file: str,
                       is_analyte: Callable[[str], bool | str] | None = None,
                       chunk_size: int | None, melt: bool = True) -> Iterator[RawCohort]:
    """Read a cohort directory once and yield it as cohorts of at most ``chunk_size``
    patients, each with all the visit and CSF rows of its patients (whatever the files'
    order) and its rows' original line numbers; rows of a subject not in patients.csv,
    and patients.csv lines without a subject_id, come with the last chunk. The files'
    text is held once (Arrow-backed); melting the CSF to long layout, and everything
    downstream, happens a chunk at a time, so memory follows the chunk, not the cohort.
    The reader's notes come with the first chunk. ``chunk_size=None``: one chunk, the
    tables as read. With ``melt=False`` each chunk's CSF rows are left as read, for
    :func:`melt_chunk` to melt where the chunk is processed (a wide chunk is several
    times smaller than its long layout: cheaper to hand to another process). See
    :func:`read_cohort`.
    """
    files = read_cohort_files(directory, visits_file=visits_file, chunk_size=chunk_size)
    yield from files.chunks(is_analyte=is_analyte, melt=melt)


def layout_chunk(raw: RawCohort, is_analyte: Callable[[str], bool | str] | None
                 ) -> tuple[RawCohort, WideCsf | None]:
    """A chunk of :func:`read_cohort_chunks` (``melt=False``) with the CSF layout's notes
    added (:func:`csf_layout`), and its wide CSF understood: ``(chunk, None)`` with the
    CSF in long layout when the file is long (or the chunk melted already), else
    ``(chunk, wide)`` with the chunk's CSF rows left as read and ``wide`` describing
    them (:meth:`WideCsf.long` melts them)."""
    if raw.csf_melted:
        return raw, None
    found, layout = csf_layout(raw.csf, file=raw.file("csf.csv"),
                               is_analyte=is_analyte or (lambda name: False))
    notes = [*raw.notes, *layout.notes] if raw.layout_notes else raw.notes
    if isinstance(found, WideCsf):
        return replace(raw, notes=notes), found
    return replace(raw, csf=found, notes=notes, csf_melted=True), None


def melt_chunk(raw: RawCohort, is_analyte: Callable[[str], bool | str] | None) -> RawCohort:
    """A chunk of :func:`read_cohort_chunks` (``melt=False``) with its CSF rows in long
    layout and the layout's notes added (:func:`layout_chunk`); a melted one as it is."""
    raw, wide = layout_chunk(raw, is_analyte)
    return raw if wide is None else replace(raw, csf=wide.long(), csf_melted=True)


def cohort_digest(raw: RawCohort) -> str:
    """SHA-256 over the cohort files' names and bytes (first 16 hex digits): the data's
    identity. The files are read a block at a time: memory does not grow with them."""
    digest = hashlib.sha256()
    directory = raw.directory
    for path in [directory / "patients.csv", directory / raw.visits_name,
                 directory / raw.csf_name]:
        digest.update(path.name.encode())
        if path.is_file():
            with path.open("rb") as stream:
                hashlib.file_digest(stream, lambda: digest)  # adds to ``digest``
    return digest.hexdigest()[:16]


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV atomically (temporary file, then rename); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            table.to_csv(stream, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_cohort(
    directory: str | Path, *, patients: pd.DataFrame, visits: pd.DataFrame, csf: pd.DataFrame,
    visits_file: str,
) -> Path:
    """Write the three tables of a cohort directory in the input contract."""
    directory = Path(directory)
    for name, table in (("patients.csv", patients), (visits_file, visits), ("csf.csv", csf)):
        write_table(table, directory / name)
    return directory


def write_outputs(directory: str | Path, *, parquet: dict[str, pd.DataFrame],
                  csv: dict[str, pd.DataFrame]) -> Path:
    """Write named tables as ``<name>.parquet`` and ``<name>.csv`` into ``directory``.

    Everything is written into a temporary sibling directory first and moved into
    place when complete, so an interrupted run leaves no partial output.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, table in parquet.items():
            table.to_parquet(staging / f"{name}.parquet", index=False)
        for name, table in csv.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        directory.mkdir(exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
    finally:
        for path in staging.glob("*"):
            path.unlink()
        staging.rmdir()
    return directory


#: Marks a staging directory: ``.{name}{STAGING}{pid}`` next to the output it becomes.
STAGING = ".partial-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StagedDirectory:
    """An output directory that appears complete or not at all.

    Entering creates a hidden staging directory next to ``target``
    (``.<name>.partial-<pid>``) and returns it; everything is written there. Leaving
    without an error moves it to ``target`` in one rename (with ``force``, an existing
    ``target`` is replaced; it is moved aside first and removed after). Leaving with an
    error, or being interrupted, removes the staging directory; a process killed outright
    leaves it behind, and the next run for the same target removes it (its process is
    gone).

    Raises
    ------
    CsfResponderError
        On entering, when ``target`` exists and ``force`` is false.
    """

    def __init__(self, target: str | Path, *, force: bool = False) -> None:
        self.target = Path(target)
        self.force = force
        self.staging = self.target.parent / f".{self.target.name}{STAGING}{os.getpid()}"

    def __enter__(self) -> Path:
        import shutil

        if self.target.exists() and not self.force:
            raise CsfResponderError(f"{self.target}: output directory exists; give another "
                                    "output or --force to replace it")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.target.parent.glob(f".{self.target.name}{STAGING}*"):
            pid = stale.name.rsplit(STAGING, 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        self.staging.mkdir()
        return self.staging

    def __exit__(self, kind, value, traceback) -> None:
        import shutil

        if kind is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        aside = None
        if self.target.exists():
            aside = self.target.parent / f".{self.target.name}.replaced-{os.getpid()}"
            os.replace(self.target, aside)
        os.replace(self.staging, self.target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


class TableStream:
    """Writes a table chunk by chunk as ``<name>.parquet`` and ``<name>.csv`` in
    ``directory``, with the first chunk's schema (later chunks are cast to it)."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self.parquet_path = Path(directory) / f"{name}.parquet"
        self.csv_path = Path(directory) / f"{name}.csv"
        self._schema = None
        self._parquet = None
        self._csv = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            self._schema = table.schema.remove_metadata()
            self._parquet = pq.ParquetWriter(self.parquet_path, self._schema)
            self._csv = pacsv.CSVWriter(self.csv_path, self._schema)
        table = table.cast(self._schema)
        self._parquet.write_table(table)
        self._csv.write_table(table)
        self.rows += len(frame)

    def close(self, empty: pd.DataFrame | None = None) -> None:
        """Finish both files; with no chunk written, write ``empty`` (its columns) instead."""
        if self._schema is None and empty is not None:
            self.write(empty)
        for writer in (self._parquet, self._csv):
            if writer is not None:
                writer.close()
