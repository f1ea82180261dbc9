"""A worker for work that runs alongside the computation (MLflow logging, figures).

Light on purpose: importing this module loads nothing heavy, so a command can start its
worker first and let it import and warm up on the idle core while the command itself is
still importing.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

__all__ = ["import_modules", "start_worker"]


def _initialise(niceness: int) -> None:
    """Ctrl-C is the main process's to handle (it ends the work it started), and the
    worker yields the CPU to the computation."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)


def start_worker(niceness: int = 10) -> Executor:
    """One worker running jobs in the order they are submitted, at lower priority.

    A forked process where ``fork`` exists: its jobs never compete with the caller for
    the interpreter lock, and at ``niceness`` they use the CPU the caller leaves idle.
    Elsewhere a thread. Jobs, their arguments and results cross by pickle: module-level
    functions and plain data. The executor is a context manager; leaving it waits for
    the jobs submitted.
    """
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_initialise, initargs=(niceness,))
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")


def import_modules(*names: str) -> list[str]:
    """Import ``names`` (a worker's warm-up job); return them."""
    for name in names:
        importlib.import_module(name)
    return list(names)
