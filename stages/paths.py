"""Where each stage writes; dvc.yaml declares the same paths (a test keeps the two in step)."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
REPORTS = Path("reports")


def prepared_dir(dataset: str) -> Path:
    return DATA / "prepared" / dataset


def prepare_preview(dataset: str) -> Path:
    return REPORTS / "figures" / "prepare" / f"{dataset}.png"


def prepare_metrics(dataset: str) -> Path:
    return REPORTS / "metrics" / "prepare" / f"{dataset}.json"
