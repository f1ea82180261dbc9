"""Shared test setup: no telemetry, no network, paths of the project's own configs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _offline_mlflow(monkeypatch):
    """Keep MLflow quiet and local: no telemetry, no tracking URI from the environment."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def configs_dir() -> Path:
    return CONFIGS
