"""Shared test setup: no telemetry, no network, paths of the project's own configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def cli_env() -> dict[str, str]:
    """Environment of a ``csf-responder`` subprocess: no telemetry, a wide console (the
    summaries do not wrap), and no inherited tracking store (each test names its own)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(autouse=True)
def _offline_mlflow(monkeypatch, tmp_path):
    """Keep MLflow quiet and away from the checkout: no telemetry, a per-test store."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def configs_dir() -> Path:
    return CONFIGS
