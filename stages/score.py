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
from pipeline.io import clear_stale_outputs, write_json
from pipeline.metrics.inception import FeatureExtractor, quantize
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
from pipeline.tracking import headline, log_on_latest_run, resolve_tracking_uri, score_step, stage_run, table_tag
from pipeline.train.checkpoint import KEPT_SNAPSHOTS_DIR, NETWORK_SNAPSHOT, kept_snapshot_files
from pipeline.train.options import recorded_changes, resolve_train_config
from stages import paths
from stages.reference import Reference, build_extractor, load_reference, reference_stats_file


def snapshot_file(row: str) -> Path:
    return paths.run_dir(row) / NETWORK_SNAPSHOT


def score_metrics_file(row: str) -> Path:
    return paths.score_metrics(row)


def score_config(params: Params) -> ScoreConfig:
    return params.score


def load_generator(generator: nn.Module, state_dict: Mapping[str, Any], where: str) -> nn.Module:
    """Load the EMA weights of a snapshot into a freshly built generator; a mismatch says what to do."""
    try:
        generator.load_state_dict(state_dict)
    except RuntimeError as err:
        raise MetricsInputError(
            f"snapshot '{where}' does not fit the row's generator as params.yaml builds it ({str(err).splitlines()[0]}); "
            "the row's settings changed since training: re-train it (`pipeline train --row ROW --no-resume`)"
        ) from None
    return generator.eval()


def load_snapshot_generator(params: Params, row: str, root: Path = Path(".")) -> tuple[nn.Module, dict[str, Any]]:
    """(EMA generator in eval mode, snapshot info: step, kimg) of a trained row."""
    path = root / snapshot_file(row)
    if not path.is_file():
        released = params.row(row).released
        if released is not None:
            raise MetricsInputError(
                f"row {row!r} has not been imported: '{path}' does not exist; put the authors' checkpoint at "
                f"'{root / released.pickle}' (download {released.url}) and run `pipeline import --row {row}` first"
            )
        raise MetricsInputError(
            f"row {row!r} has not been trained: '{path}' does not exist; run `pipeline train --row {row}` first"
        )
    return load_ema_generator(params, row, path)


def load_ema_generator(params: Params, row: str, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(EMA generator in eval mode, step, kimg) of one snapshot file of `row` (final or kept)."""
    from pipeline.models.registry import build_generator, parse_generator_spec
    from pipeline.train.checkpoint import load_checkpoint

    cfg = params.row(row)
    payload = load_checkpoint(path, required=("G_ema", "info"))
    spec = parse_generator_spec(cfg.generator)
    info = payload["info"] if isinstance(payload["info"], Mapping) else {}
    trained_with = info.get("generator")
    if trained_with is None or _spec_dump(trained_with) != spec.model_dump(mode="json"):
        raise MetricsInputError(
            f"snapshot '{path}' was trained with generator settings {trained_with}, but params.yaml now says "
            f"{spec.model_dump(mode='json')}; re-train the row (`pipeline train --row {row} --no-resume`) or restore its settings"
        )
    # The same generator on another dataset, or with other training settings, is another row's snapshot:
    # scoring it would write that row's numbers under this row's name. An imported row was trained by the
    # authors: its snapshot must be an import (of the configured file when a sha256 is given), not a training.
    if cfg.released is not None:
        changes = _import_changes(info, cfg.dataset, cfg.released.sha256)
    else:
        changes = recorded_changes(
            info, cfg.dataset, resolve_train_config(params.train, cfg.train, where=f"train + rows.{row}.train")
        )
    if changes:
        shown = "; ".join(f"{k}: {old!r} there, {new!r} in params.yaml" for k, (old, new) in changes.items())
        raise MetricsInputError(
            f"snapshot '{path}' is not row {row!r} as params.yaml defines it (recorded row {info.get('row')!r}; {shown}); "
            f"re-train the row (`pipeline train --row {row} --no-resume`) or restore its settings"
        )
    generator = load_generator(build_generator(spec), payload["G_ema"], str(path))
    # An imported row's metrics say which file they measure (tables put the published FID beside ours).
    provenance = {k: info.get(k) for k in ("source", "pickle_name", "sha256")} if cfg.released is not None else {}
    return generator, {"step": int(payload.get("step", 0)), "kimg": float(payload.get("kimg", 0.0)), **provenance}


def _import_changes(info: Mapping[str, Any], dataset: str, sha256: str | None) -> dict[str, tuple[Any, Any]]:
    """What an imported row's snapshot (`info` as stages/released.py records it) has other than the row says."""
    changes: dict[str, tuple[Any, Any]] = {}
    if info.get("source") != "imported":
        changes["source"] = (info.get("source", "trained"), "imported")
    if info.get("dataset") != dataset:
        changes["dataset"] = (info.get("dataset"), dataset)
    if sha256 is not None and info.get("sha256") != sha256.lower():
        changes["released.sha256"] = (info.get("sha256"), sha256)
    return changes


def row_truncation(params: Params, row: str) -> float:
    """score.truncation_psi, or a released row's published setting (e.g. 0.9 for the authors' Bedrooms)."""
    released = params.row(row).released
    return released.truncation_psi if released is not None else params.score.truncation_psi


def curve_snapshots(params: Params, row: str, root: Path = Path(".")) -> dict[int, Path]:
    """step -> kept snapshot of `row` to score for its curve, each checked to load into the row's generator."""
    run_dir = root / paths.run_dir(row)
    files = kept_snapshot_files(run_dir)
    if not files:
        keep = resolve_train_config(
            params.train, params.row(row).train, where=f"train + rows.{row}.train"
        ).keep_snapshot_every
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


def _spec_dump(settings: Any) -> Any:
    from pipeline.models.registry import parse_generator_spec

    try:
        return parse_generator_spec(settings).model_dump(mode="json")
    except ValueError:
        return settings  # settings of an older format: differ from any current spec


def _checked_reference(
    params: Params, dataset: str, root: Path, resolution: int, extractor: FeatureExtractor, what: str
) -> Reference:
    ref = load_reference(root / reference_stats_file(dataset), dataset)
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
    clear_stale_outputs(root, paths.score_metrics(row), paths.samples_png(row))  # a killed earlier score's temporaries
    generator, info = load_snapshot_generator(params, row, root)
    resolution = int(generator.resolution)
    extractor = build_extractor(params, row_cfg.dataset, root)
    ref = _checked_reference(params, row_cfg.dataset, root, resolution, extractor, f"row {row!r}")
    upsampled = None
    if row_cfg.dataset in cfg.upsampled:
        high = cfg.upsampled[row_cfg.dataset]
        params.dataset(high)
        extractor_2x = build_extractor(params, high, root)
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
        write_json(root / score_metrics_file(row), result)
        _write_samples(generator, cfg, root / paths.samples_png(row))
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


def _write_samples(generator: nn.Module, cfg: ScoreConfig, out: Path) -> None:
    """A grid of the scored generator's first images (the same seeds as the metrics), versioned in
    reports/ so a reader sees what each row produces without running anything."""
    sampler = GeneratorSampler(generator, cfg.truncation_psi, pick_device(cfg.device), cfg.w_avg_samples)
    z = latents_for_seeds(range(cfg.seed_start, cfg.seed_start + SAMPLE_GRID**2), generator.z_dim)
    with torch.no_grad():
        images = quantize(sampler(z)).permute(0, 2, 3, 1).cpu().numpy()
    save_grid(out, images, SAMPLE_GRID)
