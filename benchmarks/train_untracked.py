"""``make train`` without MLflow, figures or the report (issue 5, item 7).

Runs the computing half of the training recipe, ``pipelines.train.develop`` (every family
and reference validated, final models and SHAP values, deltas vs clinical-only, sample
size), on the same config, overrides and cohort, behind the same CLI entry costs (config
loading, ingest, a rich progress bar to a discarded console). What ``make train`` takes
beyond this is the price of tracking: MLflow's import and store, child and parent logging,
models, figures, registry and report. Prints the wall time of the whole process, imports
included, as JSON.

    .venv/bin/python benchmarks/train_untracked.py [--config configs/train.yaml]
        [--set key.path=value ...]
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the heavy imports: they count, as in make train

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

from bench_data import add_config_arguments, labelled_rows  # noqa: E402
from rich.console import Console  # noqa: E402

from pipelines.console import Reporter  # noqa: E402
from pipelines.train import develop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    args = parser.parse_args()

    config, data = labelled_rows(args)
    developed = develop(config, data, reporter=Reporter(Console(file=io.StringIO())))
    print(json.dumps({"seconds": round(time.perf_counter() - START, 2),
                      "best_family": developed.best,
                      "auc": {name: round(result.auc.estimate, 4) for name, result in
                              {**developed.results, **developed.references}.items()}}))


if __name__ == "__main__":
    main()
