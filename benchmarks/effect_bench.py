"""Speed benchmark of the effect pipeline (make bench): write the figures.

Targets (issue 7), on the project's 2-core machine, once .venv exists (recorded, never
asserted in tests):

- ``effect_seconds`` < 60: the default ``make effect`` (``csf-responder effect`` with
  ``configs/effect.yaml``) on the default phase 2 size cohort, as a fresh process
  logging into a temporary MLflow store that a first run created; the fastest of
  ``--repeats`` runs (every run recorded), with the split the run logs;
- ``enrichment_seconds`` < 60: :func:`csf_responder.enrichment.enrichment_table` over 20
  thresholds x 1,000 simulated trials per threshold, on the default config's settings,
  for a pool of the phase 2 size (64 patients) and of 4,000; the larger counts.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {"effect_seconds": (60.0, operator.lt), "enrichment_seconds": (60.0, operator.lt)}


def _effect(store: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(BIN / "csf-responder"), "effect", "--config", "configs/effect.yaml",
                    "--set", f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
                    "--set", f"tracking.artifact_root={store / 'artifacts'}",
                    "--set", f"tracking.report_dir={store / 'reports'}"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _enrichment(m: int) -> float:
    from csf_responder.config import EffectConfig, load_config
    from csf_responder.enrichment import enrichment_table, threshold_grid

    config, _ = load_config(ROOT / "configs" / "effect.yaml", EffectConfig)
    en = config.enrichment
    rng = np.random.default_rng(0)
    score = rng.normal(size=m)
    mu0 = -6 + rng.normal(0, 1.5, m)
    mu1 = mu0 + 3 + 1.5 * score  # benefit about 3 points, rising with the score
    start = time.perf_counter()
    enrichment_table(score, mu0, mu1, 4.0, thresholds=threshold_grid(score, en.n_thresholds),
                     powers=tuple(en.powers), alpha=en.alpha, n_trials=en.n_trials,
                     n_bootstrap=en.n_bootstrap, seed=0, n_max_cap=en.n_max_cap)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "effect_results.json")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if not (ROOT / "data" / "raw" / "phase2" / "patients.csv").exists():
        subprocess.run([str(BIN / "csf-responder"), "simulate"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        first = _effect(store, env)
        runs = [_effect(store, env) for _ in range(args.repeats)]
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("csf-responder-effect")
        parents = [r for r in client.search_runs([experiment.experiment_id],
                                                 order_by=["attributes.start_time DESC"])
                   if "mlflow.parentRunId" not in r.data.tags]
        logged = parents[0].data.metrics.get("seconds_total")
    pools = {m: round(_enrichment(m), 2) for m in (64, 4000)}
    figures = {"effect_seconds": round(min(runs), 1),
               "enrichment_seconds": max(pools.values())}
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "figures": figures,
        "runs": {"effect_first_run_seconds": round(first, 1),
                 "effect_runs_seconds": [round(r, 1) for r in runs],
                 "effect_seconds_in_process": round(logged, 1) if logged else None,
                 "enrichment_seconds_by_pool": pools},
        "targets": {k: f"< {bound:g}" for k, (bound, _) in TARGETS.items()},
        "meets_targets": {k: bool(op(figures[k], bound)) for k, (bound, op) in TARGETS.items()},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
