"""Where the parallel work runs (csf_responder.execution): local processes or a real
dask.distributed cluster (a scheduler and two worker processes over TCP on loopback),
with the same numbers on both."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from csf_responder import effect, execution
from csf_responder.config import EffectConfig, ExecutionSpec, TrainConfig, load_config
from csf_responder.errors import ConfigError
from csf_responder.ingest import ingest_cohort
from csf_responder.io import write_cohort
from csf_responder.models import baseline_features, make_classifier
from csf_responder.simulate import simulate_trial
from csf_responder.training import training_data
from pipelines.console import Reporter
from pipelines.train import develop
from tests.conftest import CONFIGS, SHARED_TRAIN, alive
from tests.simulated import effect_rows

#: A training config small enough for a test (tests/test_train_e2e's, two families, few
#: interval models), the permutation test on.
TRAIN = [*SHARED_TRAIN, "validation.permutation_test=true", "validation.n_permutations=3",
         "validation.n_jobs=2", "validation.n_interval_models=2",
         "models={logistic_l2: models/logistic_l2.yaml, xgboost: models/xgboost.yaml}"]


def _train_config(*overrides: str) -> TrainConfig:
    return load_config(CONFIGS / "train.yaml", TrainConfig, overrides=[*TRAIN, *overrides])[0]


# ------------------------------------------------------------------------- config
def test_default_is_local_processes():
    config = _train_config()
    assert config.execution == ExecutionSpec(backend="local", address=None)
    effect_config = load_config(CONFIGS / "effect.yaml", EffectConfig)[0]
    assert effect_config.execution.backend == "local"


def test_dask_needs_an_address():
    with pytest.raises(ConfigError, match="execution.address"):
        _train_config("execution.backend=dask")
    with pytest.raises(ConfigError, match="not a scheduler address"):
        _train_config("execution.backend=dask", "execution.address=127.0.0.1")
    config = _train_config("execution.backend=dask", "execution.address=tcp://127.0.0.1:8786")
    assert config.execution.address == "tcp://127.0.0.1:8786"


def test_local_backend_imports_no_dask():
    code = ("import sys\n"
            "from csf_responder.config import ExecutionSpec\n"
            "from csf_responder.execution import execution\n"
            "import pipelines.train, pipelines.effect, pipelines.cli\n"
            "with execution(ExecutionSpec()):\n"
            "    pass\n"
            "loaded = sorted(m for m in ('dask', 'distributed') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unreachable_scheduler_is_one_clear_error(monkeypatch):
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(execution, "CONNECT_TIMEOUT_SECONDS", 2)
    spec = ExecutionSpec(backend="dask", address=f"tcp://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="no dask scheduler answered"), \
            execution.execution(spec):
        pass


# ----------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster():
    """A dask scheduler and two single-threaded worker processes on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", scheduler_port=0,
                                           dashboard_address=None)
    try:
        yield ExecutionSpec(backend="dask", address=cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small simulated trial (40 MSC, 10 control), through the real ingest."""
    from csf_responder.config import SimulationConfig

    path = tmp_path_factory.mktemp("cohort")
    sim, _ = load_config(CONFIGS / "simulate.yaml", SimulationConfig,
                         overrides=["n_msc=40", "n_control=10"])
    trial = simulate_trial(sim)
    write_cohort(path, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    return path


def _develop(path, spec: ExecutionSpec):
    config = _train_config().model_copy(update={"execution": spec})
    table = ingest_cohort(path, panel=config.panel, indication=config.indication,
                          labels=config.labels, drop_columns=[]).table
    data = training_data(table, arm="MSC", minimum=config.ingest.min_labelled)
    return develop(config, data, reporter=Reporter(Console(file=io.StringIO())))


def test_training_with_permutation_test_gives_the_same_numbers_on_dask(cluster, cohort):
    local = _develop(cohort, ExecutionSpec())
    dask = _develop(cohort, cluster)
    assert dask.best == local.best
    for name, ours in {**local.results, **local.references}.items():
        theirs = {**dask.results, **dask.references}[name]
        mine, other = ours.metric_values(), theirs.metric_values()
        assert set(mine) == set(other), name
        if name != "prevalence":
            assert "permutation_p" in mine, name
        for metric, value in mine.items():
            assert other[metric] == pytest.approx(value, abs=1e-12, nan_ok=True), \
                (name, metric)
        np.testing.assert_array_equal(theirs.cv.oof, ours.cv.oof)
        assert theirs.cv.fold_params == ours.cv.fold_params
        assert theirs.params == ours.params
        assert len(theirs.interval_models) == len(ours.interval_models)
    for name, delta in local.deltas.items():
        assert dask.deltas[name] == delta, name


def test_t_learner_gives_the_same_benefit_on_dask(cluster, cohort):
    config = load_config(CONFIGS / "effect.yaml", EffectConfig)[0]
    data = effect_rows(cohort, config)
    spec = config.learners["logistic_l2"]
    steps = baseline_features(panel=config.panel, indication=config.indication,
                              features=config.features, csf=False)

    def benefit(backend: ExecutionSpec):
        with execution.execution(backend):
            return effect.t_learner_benefit(
                data.X, data.treated, data.outcome("responder"), features=steps,
                learner=lambda kind: (make_classifier(spec, seed=1), spec.search),
                name="l2", kind="binary", outcome="responder", n_folds=3, n_bootstrap=4,
                level=0.9, seed=1, n_jobs=2)

    local, dask = benefit(ExecutionSpec()), benefit(cluster)
    for field in ("benefit", "low", "high", "mu0", "mu1", "fold"):
        np.testing.assert_array_equal(getattr(dask, field), getattr(local, field))


def _nested_backend() -> str:
    from joblib.parallel import get_active_backend

    return type(get_active_backend()[0]).__name__


def test_tasks_run_their_own_joblib_calls_serially_on_the_cluster(cluster):
    from joblib import Parallel, delayed

    with execution.execution(cluster):
        plain = Parallel(n_jobs=2)(delayed(_nested_backend)() for _ in range(2))
        wrapped = Parallel(n_jobs=2)(delayed(execution.serial(_nested_backend))()
                                     for _ in range(2))
    assert set(plain) == {"DaskDistributedBackend"}  # what serial() prevents
    assert set(wrapped) == {"SequentialBackend"}


# ------------------------------------------------------------------- process pool
def _square_after(item):
    import os
    import time

    value, pause = item
    time.sleep(pause)  # later items finish first: the order must still be the items'
    from threadpoolctl import threadpool_info

    limits = {info["num_threads"] for info in threadpool_info()}  # OpenMP and BLAS
    return value * value, os.getpid(), os.environ.get("OMP_NUM_THREADS"), limits


def _fail_on_three(value):
    if value == 3:
        raise ValueError("three is not welcome")
    return value


def test_process_pool_maps_in_order_in_other_processes_a_few_items_ahead():
    import os

    pulled = []

    def items():
        for value in range(8):
            pulled.append(value)
            yield value, 0.3 if value % 2 == 0 else 0.0

    with execution.ProcessPool(2, warm_up=("json",)) as pool:
        assert pool.n_workers == 2 and pool.threads == max(1, (os.cpu_count() or 1) // 2)
        results = pool.imap(_square_after, items(), ahead=3)
        first = next(results)
        assert len(pulled) == 3  # only ``ahead`` items read before the first result
        rest = list(results)
    values = [first[0], *(r[0] for r in rest)]
    assert values == [v * v for v in range(8)]
    pids = {r[1] for r in [first, *rest]}
    assert os.getpid() not in pids and len(pids) <= 2
    assert {r[2] for r in [first, *rest]} == {str(pool.threads)}
    assert set().union(*(r[3] for r in [first, *rest])) == {pool.threads}


def _remember(value, *, then=None):
    """Keeps ``value`` in the worker, and returns what it held before, its pid and
    name (a pool of one worker: the calls share the process)."""
    import os

    held = getattr(execution, "_HELD", None)
    execution._HELD = value
    name = (Path("/proc/self/comm").read_text().strip()
            if Path("/proc/self/comm").exists() else "")
    if then == "fail":
        raise ValueError(f"failed after holding {value}")
    return held, os.getpid(), name


@pytest.mark.parametrize("platform", ["linux", "darwin"])  # a forked, a spawned worker
def test_a_pool_of_one_runs_submitted_calls_in_order_in_one_named_process(platform,
                                                                         monkeypatch):
    """What the scoring recipe does with MLflow: calls with keyword arguments, run one
    after the other in the same other process, whose state the later ones see; a call's
    error is raised where its result is asked for, and the process goes on."""
    import os

    if platform == "linux" and not sys.platform.startswith("linux"):
        pytest.skip("fork")
    real = sys.platform
    monkeypatch.setattr(sys, "platform", platform)
    with execution.ProcessPool(1, name="csf-test-helper-process") as pool:
        first = pool.submit(_remember, "a")
        second = pool.submit(_remember, "b")
        failing = pool.submit(_remember, "c", then="fail")
        last = pool.submit(_remember, "d")
        assert pool.result(second)[0] == "a" and pool.result(first)[0] is None
        with pytest.raises(ValueError, match="failed after holding c"):
            pool.result(failing)
        held, pid, name = pool.result(last)
    assert held == "c" and pid != os.getpid()
    assert {pool.result(f)[1] for f in (first, second)} == {pid}
    if real.startswith("linux"):
        assert name == "csf-test-helper"  # the kernel keeps 15 characters
        assert Path("/proc/self/comm").read_text().strip() != name  # not this process


_CLOSING = """
import sys, time
from csf_responder import execution

def big(_):
    return b"x" * (40 << 20)  # a result written to the pipe in many pieces

for pause in (0.3, 0.6, 0.9):
    with execution.ProcessPool(2) as pool:
        results = pool.imap(big, range(40))
        next(results)
        time.sleep(pause)  # leave while the workers are sending their next results
    print("closed", flush=True)
"""


def test_a_pool_left_while_its_workers_send_results_closes_without_waiting_for_them():
    """Killed halfway through writing a result, a worker leaves the executor's reader
    waiting for the rest of it; closing must end that wait (or the process hangs at
    exit)."""
    done = subprocess.run([sys.executable, "-c", _CLOSING], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["closed"] * 3


def _marks(_):
    import sys

    return ("colorsys" in sys.modules,
            getattr(sys.modules["csf_responder.execution"], "_PARENT_MARK", None))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_pool_workers_are_forked_with_the_modules_already_imported(monkeypatch):
    """The workers are copies of this process made after it imported the warm-up
    modules: they hold what it set before (no fresh interpreter) and the modules."""
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.setattr(execution, "_PARENT_MARK", "set here", raising=False)
    with execution.ProcessPool(2, warm_up=("colorsys",)) as pool:
        assert "colorsys" in sys.modules  # imported here, before the workers were made
        seen = set(pool.imap(_marks, range(4)))
    assert seen == {(True, "set here")}


class _Unpicklable:
    """Fails if it is ever pickled: what a worker holds of it was inherited."""

    def __init__(self, rows):
        self.rows = rows

    def __reduce__(self):
        raise AssertionError("pickled")


def _inherited_row(k):
    import os

    return execution.inherited().rows[k], os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork")
def test_forked_workers_inherit_the_pools_object_without_pickling_it():
    import os

    shared = _Unpicklable([f"row {k}" for k in range(6)])
    with execution.ProcessPool(2, inherit=shared) as pool:
        assert pool.inherits
        assert execution.inherited() is None  # only the workers hold it
        found = list(pool.imap(_inherited_row, range(6)))
    assert [row for row, _ in found] == shared.rows
    assert os.getpid() not in {pid for _, pid in found}


def _inherited_nothing(_):
    return execution.inherited()


def test_spawned_workers_inherit_nothing(monkeypatch):
    """Where workers are not forked (macOS, Windows) the caller is told to send what
    they need: ``inherits`` is False, and the object is not there."""
    monkeypatch.setattr(sys, "platform", "darwin")
    with execution.ProcessPool(2, inherit=["rows"]) as pool:
        assert not pool.inherits
        assert set(pool.imap(_inherited_nothing, range(2))) == {None}


def test_process_pool_raises_a_workers_error_here():
    with execution.ProcessPool(2) as pool, pytest.raises(ValueError, match="three"):
        list(pool.imap(_fail_on_three, range(6)))


def _killed_on(value):
    import signal
    import time

    if value == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return value


@pytest.mark.parametrize("platform", ["linux", "darwin"])  # forked, spawned workers
def test_a_worker_killed_while_working_is_one_clear_error_naming_its_signal(platform,
                                                                           monkeypatch):
    """The system's out-of-memory killer ends a worker with SIGKILL: the map stops with
    an error a user can read (which worker, how it ended, what to change), not the
    executor's traceback."""
    from csf_responder.errors import CsfResponderError, WorkerLost

    if platform == "linux" and not sys.platform.startswith("linux"):
        pytest.skip("fork")
    monkeypatch.setattr(sys, "platform", platform)
    with execution.ProcessPool(2) as pool, pytest.raises(WorkerLost) as raised:
        list(pool.imap(_killed_on, range(20)))
    assert isinstance(raised.value, CsfResponderError)  # shown as one line by the CLI
    message = str(raised.value)
    assert "killed by SIGKILL" in message and "n_jobs" in message
    assert f"worker process {pool._workers[0].pid}" in message or \
        f"worker process {pool._workers[1].pid}" in message


_KILLED_MID_RESULT = """
import os, signal, struct, sys, time
from csf_responder import execution
from csf_responder.errors import WorkerLost

def half_a_result(value):
    if value != 2:
        time.sleep(0.2)
        return value
    # as if killed while writing its result: the length of a 1 MiB message, 10 bytes of
    # it, then the end (the executor's reader now waits for the rest)
    frame = sys._getframe()
    while "result_queue" not in frame.f_locals:
        frame = frame.f_back
    queue = frame.f_locals["result_queue"]
    with queue._wlock:
        os.write(queue._writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 10)
        os.kill(os.getpid(), signal.SIGKILL)

started = time.monotonic()
try:
    with execution.ProcessPool(2) as pool:
        list(pool.imap(half_a_result, range(8)))
except WorkerLost as error:
    print(f"lost after {time.monotonic() - started:.1f} s: {error}", flush=True)
"""


def test_a_worker_killed_while_sending_its_result_does_not_leave_the_map_waiting():
    """The executor does not notice a worker killed halfway through writing a result to
    the pipe (its reader waits for the rest): the pool's own watch on its workers ends
    the map with the same clear error, within a second or so, and the pool closes."""
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_RESULT], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lost after "), (done.stdout, done.stderr)
    assert "killed by SIGKILL" in done.stdout


def test_no_pool_for_one_worker():
    with execution.process_pool(1) as pool:
        assert pool is None


_CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from csf_responder.execution import keep_freed_memory
    keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
size = int(sys.argv[2])
for _ in range(40):  # tables built and dropped, as chunk after chunk is scored
    a = np.ones(size)
    b = np.ones(size) + a
    del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _fresh_python(code: str, *args) -> int:
    """The number ``code`` prints, run in a new interpreter whose environment holds none
    of the allocator settings (its first argument: ``keep`` to set them itself)."""
    env = {k: v for k, v in os.environ.items() if k not in execution.ALLOCATOR_SETTINGS}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          check=True, capture_output=True, text=True)
    return int(done.stdout)


def _page_faults(mode: str, size: int) -> int:
    return _fresh_python(_CHURN, mode, size)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("size", [1_000_000, 8_000_000], ids=["8MB", "64MB"])
def test_freed_memory_is_reused_instead_of_faulted_in_again(size):
    """Each array freed and made again costs fresh pages by default (64 MB ones are
    mapped and unmapped each time); with the allocator settings the process reuses its
    own."""
    assert _page_faults("keep", size) < _page_faults("default", size) / 4


_HUGE = """
import sys
if sys.argv[1] == "keep":
    from csf_responder.execution import keep_freed_memory
    keep_freed_memory()
import numpy as np
a = np.ones(2**24)  # 128 MB, touched
with open("/proc/self/smaps_rollup") as stream:
    print(next(int(line.split()[1]) for line in stream if line.startswith("AnonHugePages:")))
"""


def _huge_pages_kib(mode: str) -> int:
    return _fresh_python(_HUGE, mode)


def _transparent_huge_pages() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text.split("[", 1)[-1].split("]", 1)[0]


@pytest.mark.skipif(_transparent_huge_pages() != "madvise",
                    reason="huge pages only where a program asks for them (Linux)")
def test_large_arrays_are_not_given_huge_pages():
    """NumPy asks for huge pages for large arrays by default (where the kernel grants
    them); with the allocator settings it does not."""
    default = _huge_pages_kib("default")
    if default == 0:
        pytest.skip("no huge page was free to give")
    assert _huge_pages_kib("keep") == 0


_ARROW_HUGE = """
import sys
if sys.argv[1] == "keep":
    from csf_responder.execution import keep_freed_memory
    keep_freed_memory()
import pyarrow.compute as pc
values = pc.random(2**24)  # 128 MB from Arrow's allocator, written
with open("/proc/self/smaps_rollup") as stream:
    print(next(int(line.split()[1]) for line in stream if line.startswith("AnonHugePages:")))
"""


@pytest.mark.skipif(_transparent_huge_pages() != "madvise",
                    reason="huge pages only where a program asks for them (Linux)")
def test_arrow_buffers_are_not_given_huge_pages():
    """Arrow's default allocator (mimalloc) asks for huge pages for its buffers; with the
    allocator settings Arrow allocates with glibc's malloc, which does not."""
    default = _fresh_python(_ARROW_HUGE, "default")
    if default == 0:
        pytest.skip("no huge page was free to give, or Arrow's allocator asked for none")
    assert _fresh_python(_ARROW_HUGE, "keep") == 0


_BLAS_THREADS = """
import sys
if sys.argv[1] == "single":
    from csf_responder.execution import single_threaded_blas
    single_threaded_blas()
import numpy, scipy.linalg
from threadpoolctl import threadpool_info
print(max((pool["num_threads"] for pool in threadpool_info()
           if pool["internal_api"] == "openblas"), default=0))
"""


def _blas_threads(mode: str, **environment: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in execution._THREAD_VARIABLES}
    done = subprocess.run([sys.executable, "-c", _BLAS_THREADS, mode],
                          env={**env, **environment}, check=True, capture_output=True,
                          text=True)
    return int(done.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs one thread anyway")
def test_single_threaded_blas_starts_openblas_with_one_thread_unless_told_otherwise():
    default = _blas_threads("default")
    if default == 0:
        pytest.skip("NumPy and SciPy use another BLAS than OpenBLAS here")
    assert default > 1
    assert _blas_threads("single") == 1
    assert _blas_threads("single", OPENBLAS_NUM_THREADS="2") == 2  # the user's own wins


def _environment(names) -> dict:
    return {name: os.environ.get(name) for name in names}


def test_allocator_settings_reach_the_workers_and_the_users_own_win(monkeypatch):
    for name in execution.ALLOCATOR_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "100")  # the user's own
    execution.keep_freed_memory()
    expected = {**execution.ALLOCATOR_SETTINGS, "MIMALLOC_PURGE_DELAY": "100"}
    assert _environment(expected) == expected
    with execution.ProcessPool(1) as pool:
        (seen,) = pool.imap(_environment, [list(expected)])
    assert seen == expected


_ORPHANS = """
import os, time
from csf_responder import execution

def pid(delay):
    time.sleep(delay)
    return os.getpid()

with execution.ProcessPool(2) as pool:
    print(*sorted(set(pool.imap(pid, [0.5] * 4))), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_pool_workers_end_when_their_parent_is_killed():
    """A scoring run killed outright (SIGKILL) cannot stop its workers; they end with it
    instead of going on with their chunks."""
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", _ORPHANS], stdout=subprocess.PIPE,
                              text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
