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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

__all__ = ["at_orphan", "drop_queued", "guarded", "import_modules", "start_worker",
           "unless_dropped"]

#: Set while the jobs queued so far are to be dropped (see :func:`drop_queued`): an event
#: the worker shares with the process that started it.
_DROPPING = None

#: Held by the worker while it runs a job, so that a job is never cut off half-way by
#: the worker's own clean-up when the process that started it dies (:func:`_watch`).
_JOB = threading.Lock()

#: What the worker calls if the process that started it dies (:func:`at_orphan`).
_ORPHAN_HANDLERS: list[Callable[[], object]] = []

#: How often the worker checks that the process that started it is alive (seconds), and
#: how long, once it is gone, the job in progress may take to finish.
WATCH_INTERVAL = 0.5
ORPHAN_JOB_GRACE = 120.0


def _initialise(niceness: int, dropping) -> None:
    """Ctrl-C and SIGTERM are the main process's to handle (it ends the work it started),
    the worker yields the CPU to the computation, and it watches the process that
    started it: if that one dies without shutting it down (SIGKILL, out of memory), the
    worker lets its job in progress finish, calls the :func:`at_orphan` handlers and
    exits, instead of waiting forever for jobs that will not come."""
    global _DROPPING
    _DROPPING = dropping
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    threading.Thread(target=_watch, args=(os.getppid(),), name="orphan-watch",
                     daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    _JOB.acquire(timeout=ORPHAN_JOB_GRACE)  # never released: the worker exits below
    for handler in list(_ORPHAN_HANDLERS):
        try:
            handler()
        except Exception:  # best effort: the worker exits regardless
            continue
    os._exit(1)


def at_orphan(handler: Callable[[], object]) -> None:
    """In the worker: call ``handler()`` if the process that started the worker dies
    without shutting it down (after the job in progress, if any, has finished). Each
    handler is kept once."""
    if handler not in _ORPHAN_HANDLERS:
        _ORPHAN_HANDLERS.append(handler)


def guarded(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the worker as one job: never cut off by the
    worker's clean-up when the process that started it dies."""
    with _JOB:
        return fn(*args, **kwargs)


def unless_dropped(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the worker (as :func:`guarded`) unless queued jobs
    are being dropped."""
    with _JOB:
        if _DROPPING is not None and _DROPPING.is_set():
            return None
        return fn(*args, **kwargs)


def _resume() -> None:
    _DROPPING.clear()


def drop_queued(worker: Executor) -> None:
    """Drop every job queued so far on ``worker`` that has not started, including those
    the executor already handed to the process (which ``Future.cancel`` cannot stop),
    provided they were queued through :func:`unless_dropped`; jobs queued after this call
    run as usual."""
    dropping = getattr(worker, "dropping", None)
    if dropping is None:
        return
    dropping.set()
    worker.submit(_resume)


def start_worker(niceness: int = 10) -> Executor:
    """One worker running jobs in the order they are submitted, at lower priority.

    A forked process where ``fork`` exists: its jobs never compete with the caller for
    the interpreter lock, and at ``niceness`` they use the CPU the caller leaves idle.
    Elsewhere a thread. Jobs, their arguments and results cross by pickle: module-level
    functions and plain data. The executor is a context manager; leaving it waits for
    the jobs submitted.
    """
    global _DROPPING
    if "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        dropping = context.Event()
        worker = ProcessPoolExecutor(max_workers=1, mp_context=context,
                                     initializer=_initialise, initargs=(niceness, dropping))
    else:
        import threading

        _DROPPING = dropping = threading.Event()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
    worker.dropping = dropping
    return worker


def import_modules(*names: str) -> list[str]:
    """Import ``names`` (a worker's warm-up job); return them."""
    for name in names:
        importlib.import_module(name)
    return list(names)


def call(target: str, /, *args, **kwargs):
    """Import ``module:function`` and call it: a job named by its path, so that the
    submitting process need not import its module."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)
