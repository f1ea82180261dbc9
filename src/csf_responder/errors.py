"""Errors that carry enough context to be shown as one clear line to a user."""

from __future__ import annotations


class CsfResponderError(Exception):
    """Base class of every error the CLI reports as one line, without a traceback."""


class ConfigError(CsfResponderError):
    """A configuration file is missing, unreadable, or holds an unknown or invalid key."""


class DataError(CsfResponderError):
    """The data are valid but cannot support the requested analysis (too few patients)."""


class WorkerLost(CsfResponderError):
    """A worker process ended before it returned its work (killed by the system when
    memory ran out, say): the run cannot go on without it."""


class CohortError(CsfResponderError):
    """An input cohort file is missing or breaks the input contract.

    Parameters
    ----------
    message : str
        What is wrong.
    file : str, optional
        The file, as the user named it.
    row : int, optional
        1-based line number in the file (the header is line 1).
    column : str, optional
        The column involved.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.reason = message
        where = [part for part in (
            file,
            f"line {row}" if row is not None else None,
            f"column '{column}'" if column is not None else None,
        ) if part]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
