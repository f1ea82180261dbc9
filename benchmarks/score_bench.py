"""Scoring speed and memory at scale (make bench; issue 6, item 7).

Trains the default model into a temporary store (``make train``), simulates scoring
cohorts of ``--n`` and ``--n / 10`` patients (``csf-responder simulate --scoring``,
Parquet CSF), then scores each end to end with ``csf-responder score`` in a fresh process
(ingest, contracts, features, prediction, intervals, top-3 reasons, drift, writing),
recording wall time and, in one more run, peak memory: the largest sum over the process
and its worker processes of their proportional set size (PSS, each page shared by k
processes counted 1/k in each: the machine's memory the run holds; sampled every 0.1 s,
which slows the run, hence not timed). The timed runs record the largest sum of their
resident sizes (RSS) as well: forked workers share the cohort and the model with the
command, and that sum counts each shared page once per process (an upper bound).

Targets, with the default model on 2 cores:

- ``score_seconds`` < 120 for 1,000,000 patients, ``score_peak_gib`` (PSS) < 4;
- ``score_vs_parts_ratio`` <= 1.5: the end-to-end time over the sum of its unavoidable
  parts, measured in the same run in a separate process (:func:`parts`): reading the
  three files (pyarrow, every column as text), each model's own prediction on the
  feature matrix (the final model and its interval models), the final model's own SHAP
  contributions (xgboost ``pred_contribs``), and writing the scores as Parquet and CSV;
- ``scaling_10x_ratio`` <= 11: the time of ``--n`` patients over that of ``--n / 10``.

The speed of this machine's two virtual cores drifts by a fifth from one minute to the
next (other tenants of the host), so each end-to-end run and each measurement of the
parts is repeated (``--repeat``, default 3), alternately, and the fastest of each is
kept (every sample is recorded, with each run's ratio to the parts measured right after
it): the same treatment for both sides of the ratio.

Memory is the other source of noise on this virtual machine: memory a process frees is
handed back to the host within a few seconds, and touching it again is slow. A fresh
GiB of a NumPy array, 15 s after the last was freed, took 2.3-2.7 s of system time in
the 2 MiB pages NumPy asks for by default and 1.3-1.6 s in 4 KiB pages (0.1 s right
after freeing it, 0.8 s two seconds later). The command stops NumPy asking
(``NUMPY_MADVISE_HUGEPAGE=0``, see ``csf_responder.execution.ALLOCATOR_SETTINGS``), and
Arrow, whose own allocator asks too, allocates with glibc's malloc
(``ARROW_DEFAULT_MEMORY_POOL=system``): a million patients take 2.0-2.6 s of system time
(3.8-4.6 s with either asking), which still depends on what ran just before.

    .venv/bin/python benchmarks/score_bench.py [--n 1000000] [--repeat 3] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "csf-responder")


def _tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and all its descendants (Linux /proc)."""
    page, total = os.sysconf("SC_PAGE_SIZE"), 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/stat") as stream:  # field 24: RSS in pages
                total += int(stream.read().rsplit(")", 1)[1].split()[21]) * page
        except OSError:
            continue
    return total


def _tree_pss(root: int) -> int:
    """Proportional set size (bytes) of process ``root`` and all its descendants: their
    pages, each shared one counted once in all (Linux ``smaps_rollup``)."""
    total = 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as stream:
                total += next((int(line.split()[1]) * 1024 for line in stream
                               if line.startswith("Pss:")), 0)
        except OSError:  # ended meanwhile
            continue
    return total


def _descendants(root: int) -> list[int]:
    """``root`` and the processes it started, and theirs (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                parent = int(stream.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _sampled(args: list[str], env: dict[str, str], size) -> tuple[float, float]:
    """Wall seconds of one command in a fresh process, and the largest ``size(pid)`` of
    the process and its workers (bytes, given in GiB), sampled every 0.1 s: the sum of
    their resident memory (:func:`_tree_rss`, shared pages count once per process: an
    upper bound, cheap enough for a timed run) or of their PSS (:func:`_tree_pss`)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, size(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{stderr}")
    return seconds, peak / 2**30


def parts(cohort: Path, out: Path, model_uri: str) -> dict[str, float]:
    """Seconds of the unavoidable parts of scoring ``cohort`` (scores already in ``out``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from csf_responder import scoring, tracking
    from csf_responder.ingest import scoring_chunks

    def read_text(path: Path) -> None:  # the header alone first: the file is read once
        with pacsv.open_csv(path) as reader:
            names = reader.schema.names
        pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names}))

    timings: dict[str, float] = {}
    start = time.perf_counter()
    for name in ("patients.csv", "alsfrs.csv"):
        read_text(cohort / name)
    csf = next(cohort.glob("csf.*"))
    if csf.suffix == ".parquet":
        pq.read_table(csf)
    else:
        read_text(csf)
    timings["read_files"] = time.perf_counter() - start

    loaded = tracking.load_scoring_model(model_uri)
    model, profile = loaded.model, loaded.profile
    panel, indication = scoring.contract_specs(profile)
    predict = shap = 0.0
    # in chunks to bound memory, larger than scoring's: no more calls than it makes
    for chunk in scoring_chunks(cohort, panel=panel, indication=indication,
                                chunk_size=100_000, **profile["contract"]["lead_in"]):
        X = chunk.table[profile["inputs"]]
        for m in [model, *loaded.interval_models]:
            matrix = m[:-1].transform(X).to_numpy(dtype="float64")
            classifier = m[-1]
            if hasattr(classifier, "get_booster"):  # as scoring runs it: every core
                classifier.set_params(n_jobs=os.cpu_count() or 1)
            start = time.perf_counter()
            classifier.predict_proba(matrix)
            predict += time.perf_counter() - start
            if m is model:
                start = time.perf_counter()
                scoring._shap_contributions(classifier, matrix,
                                            np.asarray(profile["background_mean"]))
                shap += time.perf_counter() - start
    timings["model_predictions"] = predict
    timings["final_model_shap"] = shap

    scores = pq.read_table(out / "scores.parquet")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        pq.write_table(scores, Path(scratch) / "scores.parquet")
        pacsv.write_csv(scores, Path(scratch) / "scores.csv")
        timings["write_scores"] = time.perf_counter() - start
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "score_results.json")
    parser.add_argument("--parts-of", type=Path, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--scores", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts_of:  # the separate process measuring the parts
        print(json.dumps(parts(args.parts_of, args.scores, args.model)))
        return

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/store/mlflow.db"}
        store = [f"tracking.artifact_root={scratch}/store/artifacts"]
        sets = [a for s in [*store, f"tracking.report_dir={scratch}/reports"]
                for a in ("--set", s)]
        if not (ROOT / "data" / "raw" / "phase2" / "patients.csv").exists():
            subprocess.run(["make", "--no-print-directory", "data"], cwd=ROOT, env=env,
                           check=True)
        subprocess.run([CLI, "train", *sets], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        model = "models:/csf-responder/1"
        results: dict[str, dict[str, float]] = {}
        for n in (args.n // 10, args.n):
            cohort = scratch / f"cohort-{n}"
            subprocess.run([CLI, "simulate", "--scoring", "--n", str(n), "--format", "parquet",
                            "--out", str(cohort)], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            runs, samples = [], []
            for k in range(args.repeat):  # alternately: both sides see the same machine
                out = scratch / f"scores-{n}-{k}"
                runs.append(_sampled([CLI, "score", "--cohort", str(cohort), "--model", model,
                                      "--out", str(out), "--set", store[0]], env, _tree_rss))
                found = subprocess.run(
                    [sys.executable, __file__, "--parts-of", str(cohort), "--scores", str(out),
                     "--model", model], cwd=ROOT, env=env, check=True, capture_output=True,
                    text=True)
                samples.append(json.loads(found.stdout.strip().splitlines()[-1]))
                shutil.rmtree(out)
            out = scratch / f"scores-{n}-memory"
            _, memory = _sampled([CLI, "score", "--cohort", str(cohort), "--model", model,
                                  "--out", str(out), "--set", store[0]], env, _tree_pss)
            shutil.rmtree(out)
            seconds, peak = min(r[0] for r in runs), max(r[1] for r in runs)
            timings = {part: min(t[part] for t in samples) for part in samples[0]}
            results[str(n)] = {"seconds": round(seconds, 1), "peak_gib": round(memory, 2),
                               "peak_rss_sum_gib": round(peak, 2),
                               "parts_seconds": {k: round(v, 1) for k, v in timings.items()},
                               "parts_total_seconds": round(sum(timings.values()), 1),
                               "ratio_to_parts": round(seconds / sum(timings.values()), 2),
                               "samples": {"seconds": [round(r[0], 1) for r in runs],
                                           "parts_total_seconds": [
                                               round(sum(t.values()), 1) for t in samples],
                                           # each run over the parts measured after it:
                                           # how much of the ratio is the machine's noise
                                           "ratios_by_pair": [
                                               round(r[0] / sum(t.values()), 2)
                                               for r, t in zip(runs, samples, strict=True)]}}
    big, small = results[str(args.n)], results[str(args.n // 10)]
    figures = {"score_seconds": big["seconds"], "score_peak_gib": big["peak_gib"],
               "score_vs_parts_ratio": big["ratio_to_parts"],
               "scaling_10x_ratio": round(big["seconds"] / small["seconds"], 2)}
    targets = {"score_seconds": 120, "score_peak_gib": 4, "score_vs_parts_ratio": 1.5,
               "scaling_10x_ratio": 11}
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # other work on the 2 cores stretches the end-to-end runs
                    "load_average_1min_at_start": round(load, 2),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "patients": args.n, "repeat": args.repeat, "figures": figures, "runs": results,
        "targets": {k: f"<= {v}" if k.endswith("ratio") else f"< {v}"
                    for k, v in targets.items()},
        "meets_targets": {k: (figures[k] <= v if k.endswith("ratio") else figures[k] < v)
                          for k, v in targets.items()},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
