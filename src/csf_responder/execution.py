"""Where the parallel work runs: local processes, or a ``dask.distributed`` cluster.

Everything the pipelines do in parallel (outer folds, permutations, bootstrap
resamples, T-learner folds) goes through joblib's ``Parallel``. Which backend runs those
calls is the config's ``execution`` section (:class:`csf_responder.config.ExecutionSpec`):

- ``backend: local`` (the default): joblib's own process pool on this machine, ``n_jobs``
  of each section; nothing here is imported or changed;
- ``backend: dask`` with ``address: tcp://host:port``: :func:`execution` connects a
  ``distributed.Client`` to that running scheduler and sets
  ``joblib.parallel_config(backend="dask")`` around the work, so every ``Parallel`` call
  sends its tasks to the cluster's workers (all their threads: ``n_jobs`` no longer
  decides). ``make cluster`` starts a scheduler and two workers on 127.0.0.1.

The numbers do not depend on the backend: every random draw (permutations, resamples,
folds, model seeds) is made from the config's seed before the tasks are sent, or inside
a task from the seed and the task's own index, never from the worker that runs it, and
joblib returns the results in task order.

A task that itself calls joblib (a permutation's folds, a grid search inside a T-learner
fold) runs those calls serially where it runs (:func:`serial`): the parallelism is in the
tasks, never nested, as in local processes.

Scoring a large cohort is a stream rather than a batch of tasks: :class:`ProcessPool`
hands the chunks of a cohort to local worker processes (on Linux forked once the
cohort is read and the model loaded, so that they hold both already), and gives the
results back in order.

dask and distributed are imported only when the dask backend is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from csf_responder.errors import ConfigError, WorkerLost

if TYPE_CHECKING:
    from concurrent.futures import Future

    from csf_responder.config import ExecutionSpec

__all__ = ["ALLOCATOR_SETTINGS", "CONNECT_TIMEOUT_SECONDS", "WATCH_SECONDS", "ProcessPool",
           "execution", "inherited", "keep_freed_memory", "process_pool", "serial",
           "single_threaded_blas"]

#: How long to wait for the scheduler at ``execution.address`` before giving up.
CONNECT_TIMEOUT_SECONDS = 20

#: How often a :class:`ProcessPool` awaiting a result checks that its workers live.
WATCH_SECONDS = 0.5

#: Allocator settings (environment variables) of :func:`keep_freed_memory`: glibc's
#: malloc keeps up to 256 MiB free at the top of its heap and serves blocks up to 1 GiB
#: from the heap rather than from fresh mappings (a chunk's tables and matrices of
#: 40-80 MB were mapped and unmapped chunk after chunk), and Arrow's mimalloc (where a
#: user's own setting picks it) keeps the pages it frees for 10 s (not 10 ms: longer
#: than a chunk takes) before handing them back. On a virtual machine whose host takes
#: back freed memory within seconds, touching it again is slow (0.5-1.6 s per GiB in
#: 4 KiB pages, 2.3-2.7 in 2 MiB ones):
#: scoring a million patients made 480,000 page faults and spent 2.8-3.1 s of system
#: time with these settings, 565,000-595,000 and 3.6-5.6 s with 32 MiB and 250 ms
#: (4 alternated pairs; the command's peak resident size the same, 1.6-1.7 GB). And
#: NumPy does not ask for transparent huge pages for its large arrays: a first touch
#: zeroes 2 MiB at once, taken from the blocks the host has reclaimed; a million
#: patients scored spent 2.2-2.6 s of system time without them, 4.0-4.6 s with them
#: (5 alternated pairs; 1.2 CPU seconds less in all). Nor does Arrow: its default
#: allocator (mimalloc) gives its buffers 2 MiB pages where the kernel grants them on
#: request, so Arrow uses glibc's malloc (the ``system`` pool) and the settings above:
#: a million patients scored spent 2.1-2.5 s of system time with it, 3.8-4.1 with
#: mimalloc (about 530 huge pages, mostly in reading the files), 33.4 CPU s in all
#: against 35.2, peak resident size 1.56-1.59 GB against 1.66-1.69 (7 alternated runs
#: of each; jemalloc, Arrow's third, 34.1 CPU s).
ALLOCATOR_SETTINGS = {"MALLOC_TRIM_THRESHOLD_": str(2**28), "MALLOC_TOP_PAD_": str(2**28),
                      "MALLOC_MMAP_THRESHOLD_": str(2**30), "MIMALLOC_PURGE_DELAY": "10000",
                      "NUMPY_MADVISE_HUGEPAGE": "0", "ARROW_DEFAULT_MEMORY_POOL": "system"}

#: glibc ``mallopt`` parameters of the settings above (``malloc.h``).
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}


def keep_freed_memory() -> None:
    """Let this process, and the processes it starts, reuse the memory they free instead
    of handing it back to the system at once (:data:`ALLOCATOR_SETTINGS`).

    Work that builds and drops tables of a hundred thousand rows over and over (scoring a
    large cohort chunk by chunk) otherwise maps fresh pages for each: on a virtual
    machine a page fault is slow, and they took about a seventh of the CPU time of
    scoring a million patients. NumPy is also told not to ask for 2 MiB pages, slower
    still to touch there, and Arrow to allocate with glibc's malloc (its own allocator
    asks for them too). Peak memory may grow by what is kept (``make bench`` records
    it). Settings already in the environment are kept. Call before numpy and
    pyarrow are imported: they read their settings once, when they load; glibc's are
    also set in this process now (``mallopt``; nothing on systems without glibc).
    """
    import ctypes
    import ctypes.util
    import os

    for name, value in ALLOCATOR_SETTINGS.items():
        os.environ.setdefault(name, value)  # read by the processes started from here
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    for name, parameter in _MALLOPT.items():
        try:
            mallopt(parameter, int(os.environ[name]))
        except (ValueError, ctypes.ArgumentError):  # a setting of the user's own kind
            continue


def single_threaded_blas() -> None:
    """Let OpenBLAS start with one thread in this process and the processes it starts,
    unless the environment says otherwise (``OPENBLAS_NUM_THREADS``).

    For work that does no linear algebra worth a thread (scoring: trees, and a distance
    over a few features): OpenBLAS' threads, made when NumPy and SciPy load and again
    in each forked worker, spin about 0.1 s after they start and after each call. Scoring
    a million patients took 31.6 CPU s with one thread, 32.1 without (4 alternated
    pairs). Call before numpy is imported: OpenBLAS reads the setting when it loads.
    """
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@contextmanager
def execution(spec: ExecutionSpec | None) -> Iterator[None]:
    """Run the joblib work inside the block on ``spec``'s backend.

    With ``spec`` None or ``backend: local`` this does nothing. With ``backend: dask`` it
    connects a ``distributed.Client`` to ``spec.address`` (the scheduler must be
    running), makes joblib send its tasks there for the duration of the block, and
    closes the client after it (the cluster keeps running).

    Raises
    ------
    ConfigError
        If no scheduler answers at ``spec.address``.
    """
    if spec is None or spec.backend == "local":
        yield
        return
    from distributed import Client
    from joblib import parallel_config

    try:
        client = Client(spec.address, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"execution.address {spec.address}: no dask scheduler answered within "
            f"{CONNECT_TIMEOUT_SECONDS} s ({type(exc).__name__}); start one (make cluster) "
            "or set execution.backend=local") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()


class _Serial:
    """``func`` with every joblib call it makes run serially (see :func:`serial`)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from joblib import parallel_config

        with parallel_config(backend="sequential"):
            return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"serial({self.func!r})"


def serial(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a joblib task whose own joblib calls run serially, in the task.

    In local processes a nested call with ``n_jobs`` 1 or unset is serial already; on
    dask, a task runs under the dask backend, and its nested ``Parallel`` (even with
    ``n_jobs=1``) would otherwise send every inner fold back to the scheduler as a task
    of its own. Picklable when ``func`` is.
    """
    return _Serial(func)


def _prctl(option: int, value: Any) -> bool:
    """``prctl(option, value)`` on this process (Linux); False where there is none."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return False
    return True


def _die_with_parent(parent: int) -> None:
    """End this process when its parent process ends, however it ends (Linux).

    A pool's workers are stopped when the pool is left, even on an error or Ctrl-C; but
    a parent killed outright (SIGKILL, the out-of-memory killer) leaves nothing to stop
    them, and they would go on with their chunks for minutes, holding memory and
    cores."""
    import os
    import signal

    if not _prctl(1, int(signal.SIGKILL)):  # PR_SET_PDEATHSIG
        return
    if os.getppid() != parent:  # the parent (pid ``parent``) ended before the request
        os._exit(1)


def _name_process(name: str) -> None:
    """Give this process the name ``ps`` and ``top`` show (Linux; 15 characters kept)."""
    import ctypes

    _prctl(15, ctypes.c_char_p(name.encode()[:15]))  # PR_SET_NAME


def _start_worker(modules: tuple[str, ...], parent: int, threads: int, name: str = ""
                  ) -> None:
    """A :class:`ProcessPool` worker's start: end with the parent process ``parent``,
    take the name ``name``, let its numeric libraries use ``threads`` threads, and
    import ``modules`` (already there in a forked worker)."""
    import importlib
    import os
    import signal

    from threadpoolctl import threadpool_limits

    _die_with_parent(parent)
    if name:
        _name_process(name)
    # not the parent's handlers (a forked worker inherits them): the pool stops its
    # workers itself, and Ctrl-C in the terminal reaches the parent, which does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _THREAD_VARIABLES:  # for what starts later, and the processes it starts
        os.environ[name] = str(threads)
    threadpool_limits(threads)  # the libraries loaded already (inherited when forked)
    for module in modules:
        importlib.import_module(module)


#: What the workers of the pool being forked inherit (see :class:`ProcessPool`).
_INHERITED: Any = None


def inherited() -> Any:
    """In a worker of a :class:`ProcessPool` that :attr:`~ProcessPool.inherits`: the
    pool's ``inherit`` object, as it was in the parent process when the pool was made
    (None elsewhere)."""
    return _INHERITED


#: Environment variables of the thread counts of OpenMP and the BLAS libraries.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class ProcessPool:
    """Local worker processes for an ordered map over a stream of large items, a few
    items ahead of the caller (:meth:`imap`), or for calls one at a time (:meth:`submit`:
    with one worker, a process of its own that keeps its state between calls).

    On Linux the workers are copies of this process made at once (``fork``), after it
    imported ``warm_up``: they start with those modules loaded instead of importing them
    again each (2.5 CPU seconds apiece for xgboost and scikit-learn, competing with the
    caller's own start on a small machine), and with ``inherit``, an object they read
    where the caller left it (:func:`inherited`) rather than receiving a pickled copy of
    it with each item: the scoring pipeline makes its pool once the cohort is read and
    the model loaded, and hands its workers chunk numbers instead of the chunks
    (pickling, sending and unpickling 50 MB of text per chunk took a tenth of the CPU
    time of scoring a million patients). Elsewhere than Linux (macOS' fork is unsafe
    for some libraries) they are fresh processes that import ``warm_up`` as they start,
    and inherit nothing (:attr:`inherits` is False: the caller sends what they need).

    A forked worker takes no part in what this process does after the pool is made
    (threads it starts, files it opens later) and holds only the thread that made the
    pool: make it when no other thread is busy, and before any OpenMP work (xgboost's
    predictions) here, since a forked child cannot use its parent's started OpenMP
    threads and would wait for them for ever. Use as a context manager: leaving it, or
    an error, stops the workers, and they end with this process however it ends.

    Parameters
    ----------
    n_workers : int
        Worker processes (-1: one per core).
    warm_up : sequence of str
        Modules the workers need (imported here first, when the workers are forked).
    inherit : object, optional
        What the forked workers find with :func:`inherited` (not pickled).
    name : str, optional
        The workers' process name, as ``ps`` and ``top`` show it (Linux; at most 15
        characters kept).
    """

    def __init__(self, n_workers: int, *, warm_up: tuple[str, ...] = (),
                 inherit: Any = None, name: str = "") -> None:
        import gc
        import importlib
        import multiprocessing
        import os
        import sys
        from concurrent.futures import ProcessPoolExecutor

        from joblib import effective_n_jobs

        global _INHERITED
        self.n_workers = effective_n_jobs(n_workers)
        #: Threads each worker's numeric libraries may use: its share of the cores.
        self.threads = max(1, (os.cpu_count() or 1) // self.n_workers)
        forked = sys.platform.startswith("linux")
        #: Whether the workers hold ``inherit`` (forked, and something to inherit).
        self.inherits = forked and inherit is not None
        if forked:
            for module in warm_up:
                importlib.import_module(module)
        self._executor = ProcessPoolExecutor(
            self.n_workers,
            mp_context=multiprocessing.get_context("fork" if forked else "spawn"),
            initializer=_start_worker,
            initargs=(tuple(warm_up), os.getpid(), self.threads, name))
        if forked:
            _INHERITED = inherit
            # the objects made so far stay out of the workers' garbage collections: a
            # collection writes to every object it visits, and each worker would copy
            # the pages of this process' whole heap
            gc.freeze()
        try:
            for _ in range(self.n_workers):  # forks every worker now (at the first)
                self._executor.submit(int)
        finally:
            if forked:
                gc.unfreeze()
                _INHERITED = None
        #: The worker processes, watched while a result is awaited (:meth:`result`).
        self._workers = list((self._executor._processes or {}).values())

    def imap(self, func: Callable[[Any], Any], items, *, ahead: int | None = None
             ) -> Iterator[Any]:
        """``func(item)`` for each item, computed in the workers, yielded in the items'
        order; at most ``ahead`` (default twice the workers) items are in flight, so only
        those are held in memory. A worker's error is raised here."""
        from collections import deque

        ahead = ahead or 2 * self.n_workers
        pending: deque = deque()
        try:
            for item in items:
                pending.append(self.submit(func, item))
                if len(pending) >= ahead:
                    yield self.result(pending.popleft())
            while pending:
                yield self.result(pending.popleft())
        except WorkerLost:  # nothing more will come: the pool is stopped as it is left
            raise
        except Exception:  # let the items in flight end before the pool is stopped
            from concurrent.futures import wait

            wait(pending)
            raise

    def submit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Start ``func(*args, **kwargs)`` in a worker (calls run in the order given when
        there is one worker); :meth:`result` waits for what it returns."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._executor.submit(func, *args, **kwargs)
        except BrokenProcessPool:
            raise WorkerLost(self._lost_message()) from None

    def result(self, future: Future) -> Any:
        """What the call :meth:`submit` started returned, or its error raised here, once
        it is there; :class:`WorkerLost` as soon as a worker is seen to have ended
        (checked every :data:`WATCH_SECONDS`).

        The executor notices a worker that dies while working, but not one killed while
        it writes its result to the pipe: its reader then waits for the rest of the
        result, and so would this call, for ever."""
        from concurrent.futures import wait
        from concurrent.futures.process import BrokenProcessPool

        while not wait([future], timeout=WATCH_SECONDS).done:
            if self._ended():
                raise WorkerLost(self._lost_message()) from None
        try:
            return future.result()
        except BrokenProcessPool:
            raise WorkerLost(self._lost_message()) from None

    def _ended(self) -> list[tuple[int, int | None]]:
        """(pid, exit code) of each worker that has ended (the code None if unknown)."""
        import time
        from multiprocessing.connection import wait

        # spawned workers (not Linux) may be started after the pool, as work comes
        for process in list((self._executor._processes or {}).values()):
            if all(process is not known for known in self._workers):
                self._workers.append(process)
        try:
            ready = set(wait([process.sentinel for process in self._workers], timeout=0))
        except (OSError, ValueError):  # closed meanwhile: the pool is being stopped
            return []
        ended = []
        for process in self._workers:
            if process.sentinel not in ready:
                continue
            code = process.exitcode
            for _ in range(20):  # the executor's own thread may be reaping it: a moment
                if code is not None:
                    break
                time.sleep(0.05)
                code = process.exitcode
            ended.append((process.pid, code))
        return ended

    def _lost_message(self) -> str:
        import signal

        ended = self._ended()
        if not ended:
            return "a worker process ended abruptly"
        # the executor ends the other workers (SIGTERM) once it sees one lost: name that one
        pid, code = min(ended, key=lambda e: (e[1] is None, e[1] == -signal.SIGTERM))
        if code is None:
            how = "its exit status is unknown"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"killed by {name}"
            if -code == signal.SIGKILL:
                how += (" (what the system sends when memory runs out: fewer workers "
                        "(n_jobs) or smaller chunks (chunk_size) need less)")
        else:
            how = f"exited with status {code}"
        return f"worker process {pid} ended before returning its work: {how}"

    def close(self) -> None:
        """Stop the workers (those still working are killed) and wait for them.

        The executor's own thread may be reading a result that a killed worker was
        writing: it would wait for the rest of it for ever (this process holds the
        results pipe open too), and the exit with it. Closing this process' end once the
        workers are gone ends that read."""
        executor = self._executor
        processes = list((executor._processes or {}).values())
        results = getattr(executor, "_result_queue", None)
        manager = getattr(executor, "_executor_manager_thread", None)
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join()
        writer = getattr(results, "_writer", None)
        if writer is not None:
            writer.close()
        if manager is not None:
            manager.join(timeout=10)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def process_pool(n_workers: int, *, warm_up: tuple[str, ...] = (), inherit: Any = None,
                 name: str = "") -> Iterator[ProcessPool | None]:
    """A :class:`ProcessPool` of ``n_workers`` for the block, or None (work in this
    process) when ``n_workers`` is 1 or less."""
    if n_workers <= 1:
        yield None
        return
    with ProcessPool(n_workers, warm_up=warm_up, inherit=inherit, name=name) as pool:
        yield pool
