"""Ingest speed and memory at scale (make bench): 1,000,000 patients, 8 analytes x 2
timepoints (16 million CSF rows), from CSV and from Parquet.

Targets (issue 3): at least 1 million rows per second from Parquet; CSV ingest within 3x
a plain ``pandas.read_csv(engine="pyarrow")`` of the same file; peak memory under 6 GiB.
Each measurement runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
ANALYTES = ["TGF-beta1", "MCP-1", "VEGF", "Angiogenin", "IL-6", "IL-10", "TNF-alpha", "IL-1beta"]
TIMEPOINTS = ["baseline", "week4"]


def generate(directory: Path, n_patients: int, seed: int = 0) -> None:
    """Write a synthetic cohort (patients, one visit each, long CSF) as CSV and Parquet."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("PT", np.char.zfill(np.arange(n_patients).astype(str), 7))
    csv_dir, parquet_dir = directory / "csv", directory / "parquet"
    for d in (csv_dir, parquet_dir):
        d.mkdir(parents=True, exist_ok=True)
    patients = pa.table({
        "subject_id": ids, "arm": np.where(rng.random(n_patients) < 0.5, "MSC", "control"),
        "age": rng.integers(30, 75, n_patients).astype(str),
        "sex": np.where(rng.random(n_patients) < 0.6, "male", "female"),
        "onset_site": np.where(rng.random(n_patients) < 0.2, "bulbar", "spinal"),
        "onset_months": np.round(rng.uniform(6, 40, n_patients), 1).astype(str),
    })
    alsfrs = pa.table({"subject_id": ids, "day": np.zeros(n_patients, int).astype(str),
                       "alsfrs_r": rng.integers(25, 46, n_patients).astype(str)})
    n = n_patients * len(ANALYTES) * len(TIMEPOINTS)
    values = np.round(np.exp(rng.normal(4, 1, n)), 1)
    text = values.astype(str).astype(object)
    censored = values < 15.6
    text[censored] = "<15.6"
    csf = pa.table({
        "subject_id": np.repeat(ids, len(ANALYTES) * len(TIMEPOINTS)),
        "timepoint": np.tile(np.repeat(TIMEPOINTS, len(ANALYTES)), n_patients),
        "analyte": np.tile(ANALYTES, n_patients * len(TIMEPOINTS)),
        "value": pa.array(text, pa.string()),
        "unit": np.full(n, "pg/mL"),
    })
    for name, table in (("patients", patients), ("alsfrs", alsfrs), ("csf", csf)):
        pacsv.write_csv(table, csv_dir / f"{name}.csv")
        target = parquet_dir / (f"{name}.parquet" if name == "csf" else f"{name}.csv")
        if name == "csf":
            pq.write_table(table, target)
        else:
            pacsv.write_csv(table, target)


_MEASURE = """
import json, resource, sys, time
t = time.perf_counter()
{body}
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""

_BASELINE = """
import pandas as pd
table = pd.read_csv({path!r}, engine="pyarrow")
rows = len(table)
"""

_INGEST = """
from csf_responder.config import PanelSpec, load_config
from csf_responder.contracts import check_cohort
from csf_responder.io import read_cohort
panel = load_config({panel!r}, PanelSpec)[0]
checked = check_cohort(read_cohort({cohort!r}), panel=panel)
rows = int(checked.accounting["rows_read"].iloc[2])
assert checked.accounting["rows_rejected"].sum() == 0, checked.rejects.head()
"""


def measure(body: str) -> dict[str, float]:
    script = _MEASURE.format(body=body.strip())
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench" / "ingest")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ingest_results.json")
    args = parser.parse_args()

    data = args.data / f"{args.patients}"
    if not (data / "parquet" / "csf.parquet").exists():
        start = time.perf_counter()
        generate(data, args.patients)
        print(f"generated {data} in {time.perf_counter() - start:.0f} s")
    panel = str(ROOT / "configs" / "panels" / "csf_cytokines.yaml")
    rows = args.patients * len(ANALYTES) * len(TIMEPOINTS)
    baseline = measure(_BASELINE.format(path=str(data / "csv" / "csf.csv")))
    from_csv = measure(_INGEST.format(panel=panel, cohort=str(data / "csv")))
    from_parquet = measure(_INGEST.format(panel=panel, cohort=str(data / "parquet")))
    results = {
        "patients": args.patients, "csf_rows": rows,
        "read_csv_pyarrow_seconds": round(baseline["seconds"], 2),
        "ingest_csv_seconds": round(from_csv["seconds"], 2),
        "ingest_parquet_seconds": round(from_parquet["seconds"], 2),
        "parquet_rows_per_second": round(rows / from_parquet["seconds"]),
        "csv_vs_read_csv_ratio": round(from_csv["seconds"] / baseline["seconds"], 2),
        "peak_rss_gib": round(max(from_csv["peak_rss_gib"], from_parquet["peak_rss_gib"]), 2),
        "targets": {"parquet_rows_per_second": ">= 1000000", "csv_vs_read_csv_ratio": "<= 3",
                    "peak_rss_gib": "< 6"},
    }
    results["meets_targets"] = {
        "parquet_rows_per_second": results["parquet_rows_per_second"] >= 1_000_000,
        "csv_vs_read_csv_ratio": results["csv_vs_read_csv_ratio"] <= 3,
        "peak_rss_gib": results["peak_rss_gib"] < 6,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
