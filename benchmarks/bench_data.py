"""What the training benchmarks share: the command line they take and the labelled rows
of the configured cohort, read exactly as ``make train`` reads them."""

from __future__ import annotations

import argparse
from pathlib import Path

from csf_responder.config import TrainConfig, load_config
from csf_responder.ingest import ingest_cohort
from csf_responder.training import TrainingData, training_data


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` (default configs/train.yaml) and repeatable ``--set key.path=value``."""
    parser.add_argument("--config", type=Path, default=Path("configs/train.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")


def labelled_rows(args: argparse.Namespace) -> tuple[TrainConfig, TrainingData]:
    """The config of ``args`` and its cohort's labelled MSC rows (ingest included)."""
    config, _ = load_config(args.config, TrainConfig, overrides=args.overrides)
    cohort = ingest_cohort(config.cohort.path, panel=config.panel,
                           indication=config.indication, labels=config.labels,
                           drop_columns=config.ingest.drop_columns)
    return config, training_data(cohort.table, arm="MSC", minimum=config.ingest.min_labelled)
