"""Parallel speed of the permutation test (make bench): 1 vs 2 local workers, and dask.

The work: the permutation test of one model family (``--family``, default logistic_l2),
``--permutations`` (200) permutations of the whole nested procedure of
``configs/train.yaml`` (5 x 5 outer folds, 5-fold inner search) on the phase 2 size cohort
``data/raw/phase2`` (simulated with ``csf-responder simulate`` if missing), as
:func:`csf_responder.validation.permutation_null` runs it in ``make train
--permutation-test``.

Target (issue 8, item 5), on the project's 2-core machine (recorded, never asserted in
tests):

- ``parallel_efficiency`` >= 0.8: ``T1 / (2 x T2)``, T1 the wall time with one worker
  (``n_jobs=1``: in this process, no pool), T2 with two local worker processes
  (``execution.backend: local``, ``n_jobs=2``);
- recorded beside it, no target: ``dask_seconds``, the same work on
  ``execution.backend: dask`` with a scheduler and 2 single-threaded workers started
  with the dask CLI on 127.0.0.1 (as ``make cluster``), already running, and its ratio
  to T2.

Each side runs as a fresh process that loads the config and the cohort first and times
``permutation_null`` alone (starting the local pool, or connecting to the cluster, is
inside the time). The sides alternate ``--repeats`` times and the fastest run of each
counts; every run is recorded with the machine's load average, because other work on the
2 cores stretches the 2-worker runs more than the 1-worker one and lowers the efficiency.
The null distributions of every run must be identical, whichever backend ran them (else
the script fails).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = "configs/train.yaml"
TARGETS = {"parallel_efficiency": 0.8}  # at least
SIDES = ("local_1_worker", "local_2_workers", "dask_2_workers")


def _measure(side: str, family: str, permutations: int, address: str | None) -> None:
    """One side, in this (fresh) process: print its seconds and null distribution."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_data import labelled_rows

    from csf_responder.config import ExecutionSpec
    from csf_responder.execution import execution
    from csf_responder.models import make_pipeline
    from csf_responder.validation import permutation_null

    config, data = labelled_rows(argparse.Namespace(config=ROOT / CONFIG, overrides=[]))
    v, spec = config.validation, config.models[family]
    pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                             features=config.features, seed=config.seed)
    backend = (ExecutionSpec(backend="dask", address=address) if side.startswith("dask")
               else ExecutionSpec())
    start = time.perf_counter()
    with execution(backend):
        null = permutation_null(pipeline, data.X, data.y, n_permutations=permutations,
                                n_splits=v.n_splits, n_repeats=v.n_repeats, seed=config.seed,
                                search=spec.search, inner_splits=v.inner_splits,
                                n_jobs=1 if side == "local_1_worker" else 2)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "n_labelled": len(data.y),
                      "null": [float(x) for x in null]}))


def _side(side: str, args: argparse.Namespace, address: str | None) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--measure", side, "--family", args.family,
           "--permutations", str(args.permutations)]
    if address:
        cmd += ["--address", address]
    done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["load_average_1min_at_start"] = round(load, 2)
    print(f"{side}: {found['seconds']:.1f} s (load {load:.1f})", file=sys.stderr)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Cluster:
    """A dask scheduler and 2 single-threaded worker processes on 127.0.0.1 (the dask
    CLI, as make cluster), stopped on exit."""

    def __enter__(self) -> str:
        from distributed import Client

        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.processes = [
            subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", port, "--dashboard-address", "127.0.0.1:0"],
                             **quiet),
            subprocess.Popen([str(BIN / "dask"), "worker", self.address, "--host",
                              "127.0.0.1", "--nworkers", "2", "--nthreads", "1",
                              "--dashboard-address", "127.0.0.1:0"], **quiet)]
        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        return self.address

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" /
                        "parallel_results.json")
    parser.add_argument("--family", default="logistic_l2",
                        help="model family of configs/train.yaml whose test is timed")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternating runs of each side (the fastest of each counts)")
    parser.add_argument("--measure", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(args.measure, args.family, args.permutations, args.address)
        return

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if not (ROOT / "data" / "raw" / "phase2" / "patients.csv").exists():
        subprocess.run([str(BIN / "csf-responder"), "simulate"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side in SIDES[:2]:
            runs[side].append(_side(side, args, None))
        # the cluster runs only for its own side: an idle scheduler and workers still
        # take CPU (heartbeats) that would stretch the local runs
        with _Cluster() as address:
            runs[SIDES[2]].append(_side(SIDES[2], args, address))
    nulls = {json.dumps(run["null"]) for side in SIDES for run in runs[side]}
    if len(nulls) != 1:
        raise SystemExit("the null distributions differ between runs or backends")
    t1, t2, td = (min(run["seconds"] for run in runs[side]) for side in SIDES)
    figures = {"parallel_efficiency": round(t1 / (2 * t2), 3),
               "seconds_1_worker": round(t1, 1), "seconds_2_workers": round(t2, 1),
               "speedup_2_workers": round(t1 / t2, 2),
               "dask_seconds_2_workers": round(td, 1),
               "dask_vs_local_2_workers": round(td / t2, 3)}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "usable_cores": usable,
                    "python": platform.python_version(), "platform": platform.platform(),
                    # other work on the shared cores stretches the 2-worker runs most
                    "load_average_1min_at_start": round(load, 2),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "work": {"config": CONFIG, "family": args.family, "permutations": args.permutations,
                 "cohort": "data/raw/phase2",
                 "n_labelled": runs[SIDES[0]][0]["n_labelled"],
                 "identical_null_on_every_side": True},
        "figures": figures,
        "runs": {side: [{"seconds": round(run["seconds"], 1),
                         "load_average_1min_at_start": run["load_average_1min_at_start"]}
                        for run in runs[side]] for side in SIDES},
        "targets": {name: f">= {bound:g}" for name, bound in TARGETS.items()},
        "notes": {"parallel_efficiency": "T1 / (2 x T2): 1 worker (n_jobs=1, no pool) vs "
                                         "2 local worker processes (n_jobs=2)",
                  "dask_seconds_2_workers": "execution.backend dask, a scheduler and 2 "
                                            "single-threaded workers on 127.0.0.1; no target"},
        "meets_targets": {name: bool(figures[name] >= bound) for name, bound in TARGETS.items()},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
