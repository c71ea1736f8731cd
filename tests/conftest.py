"""Shared fixtures: telemetry off, one torch thread, the micro profile, an isolated project folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["PIPELINE_SYSTEM_METRICS"] = "0"  # no sampler thread per training run; test_tracking switches it on

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

try:
    import torch

    torch.set_num_threads(1)  # 2 shared cores: keep tests from fighting each other
except ImportError:  # pragma: no cover - torch is a dependency
    pass


@pytest.fixture
def micro_dict() -> dict:
    """The micro profile as a plain mapping, to edit before validation; without the Table 3 and
    properties sections, whose row references would pin the rows a test replaces (tests that need them
    add their own)."""
    data = yaml.safe_load((REPO / "profiles" / "micro.yaml").read_text())
    data.pop("project")
    data.pop("kpl")
    data.pop("properties")
    return data


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch project folder (cwd) with the micro profile as params.yaml and its own MLflow store."""
    shutil.copy(REPO / "profiles" / "micro.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path
