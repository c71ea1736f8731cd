"""Stage `prepare`: one dataset from its raw source to the prepared format, a preview grid and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import DatasetConfig, Params
from pipeline.data.dataset import open_images
from pipeline.data.prepare import prepare_dataset
from pipeline.data.preview import save_grid
from pipeline.io import remove_stale_temporaries, sigterm_as_exit, write_json
from pipeline.progress import progress_bar
from pipeline.tracking import resolve_tracking_uri, stage_run
from stages import paths


def run(params: Params, dataset: str, root: Path = Path(".")) -> dict:
    """Prepare `dataset` of `params` under `root`; return its statistics.

    Temporaries that a killed earlier run left beside the outputs are removed first; SIGTERM, like
    Ctrl+C, removes this run's own before the process ends."""
    cfg = params.dataset(dataset)
    cfg.check_sources_exist(dataset)  # before any work, and before an MLflow run is opened
    out_dir, preview, metrics = (
        root / paths.prepared_dir(dataset),
        root / paths.prepare_preview(dataset),
        root / paths.prepare_metrics(dataset),
    )
    for output in (out_dir, preview, metrics):
        remove_stale_temporaries(output)
    with sigterm_as_exit():
        return _run(params, dataset, cfg, out_dir, preview, metrics)


def _run(params: Params, dataset: str, cfg: DatasetConfig, out_dir: Path, preview: Path, metrics: Path) -> dict:
    tags = {"stage": "prepare", "dataset": dataset, "profile": params.profile}
    run_params = {"dataset": dataset, **cfg.model_dump(mode="json"), "preview_grid": params.prepare.preview_grid}
    with stage_run(
        resolve_tracking_uri(params.tracking.uri), params.tracking.experiment, f"prepare/{dataset}", tags, run_params
    ) as tracker:
        with progress_bar(f"prepare {dataset}") as advance:
            stats = prepare_dataset(
                cfg, out_dir, chunk_size=params.prepare.chunk_size, workers=params.prepare.workers, progress=advance
            )
        _write_preview(out_dir, preview, params.prepare.preview_grid)
        # `seconds` goes here, not into the prepared folder: later stages depend on that folder, not on this file.
        write_json(
            metrics,
            {k: v for k, v in stats.items() if k not in ("class_names", "bad_names", "tiny_names", "keypoint_names")},
        )
        tracker.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        tracker.log_artifact(preview, "figures")
        tracker.log_artifact(out_dir / "meta.json")
    return stats


def _write_preview(prepared: Path, out: Path, side: int) -> None:
    images = open_images(prepared, json.loads((prepared / "meta.json").read_text()))
    n = min(side * side, len(images))
    kp_path = prepared / "keypoints.npy"
    keypoints = None
    if kp_path.exists():
        # Ground-truth keypoints on the last row only, so a glance checks they sit on the faces
        # while the other rows show the images as the models see them.
        keypoints = np.load(kp_path)[:n].copy()
        keypoints[: max(n - side, 0)] = np.nan
    save_grid(out, np.asarray(images[:n]), side, keypoints)
