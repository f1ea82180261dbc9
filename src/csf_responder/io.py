"""File input and output: the only module that touches cohort files.

Everything else in the library takes and returns tables.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from csf_responder.errors import CohortError
from csf_responder.readers import LINE, csf_to_long, read_table

__all__ = [
    "COHORT_FILES", "CSF_SUFFIXES", "LINE", "RawCohort", "cohort_digest", "read_cohort",
    "write_cohort", "write_outputs", "write_table",
]

#: The files of a cohort directory besides the visits file, whose name the indication
#: gives (``alsfrs.csv`` for ALS); the CSF panel may also be ``csf`` with another suffix
#: of :data:`CSF_SUFFIXES`.
COHORT_FILES = ("patients.csv", "csf.csv")
CSF_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".parquet", ".pq")


@dataclass(frozen=True)
class RawCohort:
    """The three cohort tables as read, every cell a string, plus each row's line number.

    ``visits`` is the visits file (``visits_name``, e.g. ``alsfrs.csv``); ``csf`` is
    always in long layout (a wide file is melted on reading); ``csf_name`` is the CSF
    file's name as found (``csf.xlsx``, ...).
    """

    directory: Path
    patients: pd.DataFrame
    visits: pd.DataFrame
    csf: pd.DataFrame
    visits_name: str
    csf_name: str
    notes: list[str] = field(default_factory=list)

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
    directory = Path(directory)
    if not directory.is_dir():
        raise CohortError("cohort directory not found", file=str(directory))
    notes: list[str] = []
    patients = _read(directory / "patients.csv", notes)
    visits = _read(directory / visits_file, notes)
    csf_path = _csf_path(directory)
    csf, layout = csf_to_long(_read(csf_path, notes), file=str(csf_path),
                              is_analyte=is_analyte or (lambda name: False))
    notes.extend(layout.notes)
    return RawCohort(directory, patients, visits, csf, visits_file, csf_path.name, notes)


def cohort_digest(raw: RawCohort) -> str:
    """SHA-256 over the cohort files' bytes (first 16 hex digits): the data's identity."""
    digest = hashlib.sha256()
    directory = raw.directory
    for path in [directory / "patients.csv", directory / raw.visits_name,
                 directory / raw.csf_name]:
        name = path.name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
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
