"""Stage `score`: FID/IS (or fd_domain/is_domain) of one trained row's EMA generator, plus
UpsampledFID when params ask for it (score.upsampled maps the row's dataset to the same data at 2S),
plus the Frechet distance of every kept snapshot when score.curve lists the row (Fig. 8's curve).

Reads runs/<row>/network-snapshot.pt, runs/<row>/snapshots/ and data/reference/<dataset>.npz; writes
reports/metrics/score/<row>.json (a DVC metrics file) and the same numbers to MLflow. Every input is
checked before any image is generated; the metrics file is written atomically at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import Params
from pipeline.data.preview import save_grid
from pipeline.headline import write_split
from pipeline.io import clear_stale_outputs
from pipeline.metrics.inception import FeatureExtractor, quantize
from pipeline.metrics.reference import Reference, build_extractor, load_reference
from pipeline.metrics.scoring import (
    FIXED_GRID_KINDS,
    GeneratorSampler,
    MetricsInputError,
    ScoreConfig,
    latents_for_seeds,
    pick_device,
    score_generator,
    score_images,
)
from pipeline.progress import progress_bar
from pipeline.snapshots import load_ema_generator, load_row_snapshot, row_truncation
from pipeline.tracking import headline, log_on_latest_run, resolve_tracking_uri, score_step, stage_run, table_tag
from pipeline.train.checkpoint import KEPT_SNAPSHOTS_DIR, kept_snapshot_files
from stages import paths


def snapshot_file(row: str) -> Path:
    return paths.snapshot_file(row)


def score_metrics_file(row: str) -> Path:
    return paths.score_metrics(row)


def score_config(params: Params) -> ScoreConfig:
    return params.score


def load_snapshot_generator(params: Params, row: str, root: Path = Path(".")) -> tuple[nn.Module, dict[str, Any]]:
    """(EMA generator in eval mode, snapshot info: step, kimg) of a trained row."""
    return load_row_snapshot(params, row, root / snapshot_file(row))


def curve_snapshots(params: Params, row: str, root: Path = Path(".")) -> dict[int, Path]:
    """step -> kept snapshot of `row` to score for its curve, each checked to load into the row's generator."""
    run_dir = root / paths.run_dir(row)
    files = kept_snapshot_files(run_dir)
    if not files:
        keep = params.train_options(row).keep_snapshot_every
        cause = (
            f"train.keep_snapshot_every is not set for it: set it (or rows.{row}.train.keep_snapshot_every)"
            if keep is None
            else f"it was trained before train.keep_snapshot_every ({keep}) was set, and kept snapshots are only written while training"
        )
        raise MetricsInputError(
            f"score.curve lists row {row!r} but '{run_dir / KEPT_SNAPSHOTS_DIR}' holds no kept snapshots: {cause}; re-train it "
            f"(`pipeline train --row {row} --no-resume`), or remove the row from score.curve.rows"
        )
    for path in files.values():
        load_ema_generator(params, row, path)  # a snapshot that does not fit stops us now, not hours into scoring
    return files


def score_curve(
    params: Params,
    row: str,
    files: Mapping[int, Path],
    extractor: FeatureExtractor,
    ref: Reference,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, float]]:
    """[{step, kimg, fd}] of the kept snapshots, each scored on the first score.curve.num_images of the main score's seeds."""
    cfg = score_config(params)
    curve_cfg = cfg.model_copy(update={"num_images": cfg.curve.num_images})
    points, total = [], len(files) * curve_cfg.num_images
    for i, path in enumerate(files.values()):
        generator, info = load_ema_generator(params, row, path)
        sampler = GeneratorSampler(generator, cfg.truncation_psi, pick_device(cfg.device), cfg.w_avg_samples)
        before = i * curve_cfg.num_images
        advance = None if progress is None else (lambda done, _, before=before: progress(before + done, total))
        fd = score_images(sampler, generator.z_dim, extractor, ref.stats, curve_cfg, advance)[extractor.fd_name]
        points.append({"step": info["step"], "kimg": info["kimg"], "fd": fd})
    return points


def _extractor(params: Params, dataset: str, root: Path) -> FeatureExtractor:
    return build_extractor(params.reference, dataset, root / paths.domain_net_file(dataset))


def _checked_reference(
    params: Params, dataset: str, root: Path, resolution: int, extractor: FeatureExtractor, what: str
) -> Reference:
    ref = load_reference(root / paths.reference_stats_file(dataset), dataset)
    redo = f"re-run `pipeline reference --dataset {dataset}`"
    if ref.resolution != resolution:
        raise MetricsInputError(
            f"reference statistics of {dataset!r} are of {ref.resolution} px images but {what} needs {resolution} px; "
            f"point the row (or score.upsampled) at a dataset prepared at {resolution} px, or {redo} after preparing it at {resolution} px"
        )
    if ref.features != extractor.kind or ref.weights_sha256 != extractor.weights_sha256:
        raise MetricsInputError(
            f"reference statistics of {dataset!r} were computed with {ref.features} features (weights {ref.weights_sha256[:12]}), "
            f"but scoring uses {extractor.kind} (weights {extractor.weights_sha256[:12]}); {redo}"
        )
    return ref


def _kind(generator: Any) -> str:
    return generator["kind"] if isinstance(generator, Mapping) else generator.kind


def run(params: Params, row: str, root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Score the trained `row`; write its metrics file and MLflow run; return the metrics."""
    cfg = score_config(params)
    row_cfg = params.row(row)
    if row_cfg.released is not None:  # the published FID's setting, so ours compares with it
        cfg = cfg.model_copy(update={"truncation_psi": row_truncation(params, row)})
    clear_stale_outputs(
        root, paths.score_metrics(row), paths.details(paths.score_metrics(row)), paths.samples_png(row)
    )  # a killed earlier score's temporaries
    generator, info = load_snapshot_generator(params, row, root)
    resolution = int(generator.resolution)
    extractor = _extractor(params, row_cfg.dataset, root)
    ref = _checked_reference(params, row_cfg.dataset, root, resolution, extractor, f"row {row!r}")
    upsampled = None
    if row_cfg.dataset in cfg.upsampled:
        high = cfg.upsampled[row_cfg.dataset]
        params.dataset(high)
        extractor_2x = _extractor(params, high, root)
        ref_2x = _checked_reference(
            params,
            high,
            root,
            2 * resolution,
            extractor_2x,
            f"UpsampledFID of row {row!r} (score.upsampled.{row_cfg.dataset})",
        )
        upsampled = (ref_2x.stats, extractor_2x, _kind(row_cfg.generator) not in FIXED_GRID_KINDS)
    curve_files = curve_snapshots(params, row, root) if cfg.curve.includes(row) else {}

    tags = {
        "stage": "score",
        "row": row,
        "dataset": row_cfg.dataset,
        "profile": params.profile,
        "table": table_tag(params, row),
    }
    run_params = {
        "row": row,
        **cfg.model_dump(mode="json"),
        "features": extractor.kind,
        "weights_sha256": extractor.weights_sha256,
    }
    with stage_run(
        resolve_tracking_uri(params.tracking.uri), params.tracking.experiment, f"score/{row}", tags, run_params
    ) as tracker:
        with progress_bar(f"score {row}", progress) as advance:
            metrics = score_generator(generator, extractor, ref.stats, cfg, upsampled, advance)
        curve = []
        if curve_files:
            with progress_bar(f"score {row}: curve of {len(curve_files)} snapshots", progress) as advance:
                curve = score_curve(params, row, curve_files, extractor, ref, advance)
        # settings_sha256: the row's settings minus its seed, so that tables can tell repeats of this row apart from
        # stale files
        result = {
            "row": row,
            "profile": params.profile,
            "settings_sha256": params.settings_fingerprint(row),
            "dataset": row_cfg.dataset,
            "features": extractor.kind,
            "weights_sha256": extractor.weights_sha256,
            "reference_images": ref.stats.count,
            "truncation_psi": cfg.truncation_psi,
            **info,
            **metrics,
            **({"curve": curve} if curve else {}),
        }
        write_split(root / score_metrics_file(row), root / paths.details(score_metrics_file(row)), result, "score")
        _write_samples(generator, cfg, root / paths.samples_png(row), f"{row}: {info['kimg']:g} kimg")
        tracker.log_metrics(
            {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=score_step(info["kimg"])
        )
        # The headline scores on the training run too: its compare view then shows spec and outcome.
        if tracker.enabled:
            log_on_latest_run(
                tracker.record["uri"],
                params.tracking.experiment,
                f"train/{row}",
                headline(metrics),
                score_step(info["kimg"]),
            )
        for point in curve:
            # MLflow step = images shown, as in the training run's curves.
            tracker.log_metrics({f"curve_{extractor.fd_name}": point["fd"]}, step=int(round(point["kimg"] * 1000)))
        tracker.log_artifact(root / paths.samples_png(row), name="samples.png")  # one name: compare lines them up
    return result


SAMPLE_GRID = 6


def _write_samples(generator: nn.Module, cfg: ScoreConfig, out: Path, what: str) -> None:
    """A grid of the scored generator's first images (the same seeds as the metrics), versioned in
    reports/ so a reader sees what each row produces without running anything."""
    sampler = GeneratorSampler(generator, cfg.truncation_psi, pick_device(cfg.device), cfg.w_avg_samples)
    z = latents_for_seeds(range(cfg.seed_start, cfg.seed_start + SAMPLE_GRID**2), generator.z_dim)
    with torch.no_grad():
        images = quantize(sampler(z)).permute(0, 2, 3, 1).cpu().numpy()
    last = cfg.seed_start + SAMPLE_GRID**2 - 1
    save_grid(out, images, SAMPLE_GRID, title=f"{what}, seeds {cfg.seed_start}..{last}, psi {cfg.truncation_psi:g}")
