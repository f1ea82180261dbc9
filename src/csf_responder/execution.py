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

dask and distributed are imported only when the dask backend is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from csf_responder.errors import ConfigError

if TYPE_CHECKING:
    from csf_responder.config import ExecutionSpec

__all__ = ["CONNECT_TIMEOUT_SECONDS", "execution", "serial"]

#: How long to wait for the scheduler at ``execution.address`` before giving up.
CONNECT_TIMEOUT_SECONDS = 20


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
