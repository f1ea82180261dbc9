"""Speed benchmarks (make bench): time the CLI's --help and make train; write the figures.

Targets (issue 2): ``make train`` on the default cohort under 60 s once .venv exists,
``csf-responder --help`` under 1 s, on the project's 2-core machine. Timings are
recorded, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {"help_seconds": 1.0, "train_seconds": 60.0}


def _time(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--repeats", type=int, default=5,
                        help="runs of --help to take the median of")
    args = parser.parse_args()

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    help_runs = [_time([str(BIN / "csf-responder"), "--help"], env) for _ in range(args.repeats)]
    if not (ROOT / "data" / "raw" / "phase2" / "patients.csv").exists():
        subprocess.run(["make", "--no-print-directory", "data"], cwd=ROOT, env=env, check=True)
    with tempfile.TemporaryDirectory() as store:
        # a fresh store, as on a first run, kept out of the user's mlruns/
        env_train = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        sets = f"--set tracking.artifact_root={store}/artifacts"
        train = _time(["make", "--no-print-directory", "train", f"SET={sets}"], env_train)

    figures = {"help_seconds": round(statistics.median(help_runs), 3),
               "train_seconds": round(train, 1)}
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "figures": figures,
        "targets": TARGETS,
        "meets_targets": {k: figures[k] < TARGETS[k] for k in TARGETS},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
