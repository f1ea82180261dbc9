"""File input and output: the only module that touches cohort files.

Everything else in the library takes and returns tables.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from csf_responder.errors import CohortError

__all__ = [
    "COHORT_FILES", "RawCohort", "cohort_digest", "read_cohort", "write_cohort", "write_outputs",
    "write_table",
]

#: The files of a cohort directory, in the order they are read.
COHORT_FILES = ("patients.csv", "alsfrs.csv", "csf.csv")

#: Name of the column that carries each row's line number in its file (header = line 1).
LINE = "_line"


@dataclass(frozen=True)
class RawCohort:
    """The three cohort tables as read, every cell a string, plus each row's line number."""

    directory: Path
    patients: pd.DataFrame
    alsfrs: pd.DataFrame
    csf: pd.DataFrame

    def file(self, name: str) -> str:
        """The path of one cohort file, as shown in messages."""
        return str(self.directory / name)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CohortError("file not found (a cohort directory holds "
                          f"{', '.join(COHORT_FILES)})", file=str(path))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise CohortError("file is empty (expected a header row)", file=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CohortError(f"cannot parse as CSV ({first})", file=str(path)) from None
    table.columns = [str(c).strip() for c in table.columns]
    table[LINE] = table.index + 2  # header is line 1; blank lines are kept until here
    blank = table.drop(columns=LINE).apply(lambda col: col.str.strip().eq("")).all(axis=1)
    return table.loc[~blank].reset_index(drop=True)


def read_cohort(directory: str | Path) -> RawCohort:
    """Read a cohort directory (see ``docs/data-format.md``) without interpreting values.

    Raises
    ------
    CohortError
        If the directory or one of its files is missing or is not a CSV file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CohortError("cohort directory not found", file=str(directory))
    tables = {name: _read_csv(directory / name) for name in COHORT_FILES}
    return RawCohort(directory, tables["patients.csv"], tables["alsfrs.csv"], tables["csf.csv"])


def cohort_digest(directory: str | Path) -> str:
    """SHA-256 over the cohort files' bytes (first 16 hex digits): the data's identity."""
    digest = hashlib.sha256()
    for name in COHORT_FILES:
        path = Path(directory) / name
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
    directory: str | Path, *, patients: pd.DataFrame, alsfrs: pd.DataFrame, csf: pd.DataFrame
) -> Path:
    """Write the three tables of a cohort directory in the input contract."""
    directory = Path(directory)
    for name, table in zip(COHORT_FILES, (patients, alsfrs, csf), strict=True):
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
