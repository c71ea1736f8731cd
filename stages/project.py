"""Stage `project`: embed N_ts real test images into one model's Z and W spaces (StyleGAN2's projector,
no noise maps), for the keypoint prediction loss.

Writes data/projections/<model>.npz (latents, reconstructions, per-image losses, the test images'
indices), reports/figures/project/<model>.png (targets, Z and W reconstructions) and
reports/metrics/project/<model>.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.analysis.keypoints import load_regressor
from pipeline.analysis.options import ProjectConfig
from pipeline.analysis.projection import make_loss, project, save_projection_figure, snapshot_record, to_uint8
from pipeline.config import ConfigError, Params
from pipeline.data.dataset import PreparedDataset
from pipeline.io import atomic_file, clear_stale_outputs, sha256_file, write_json
from pipeline.metrics.scoring import pick_device
from pipeline.progress import progress_bar
from pipeline.tracking import resolve_tracking_uri, stage_run
from pipeline.train.checkpoint import NETWORK_SNAPSHOT, load_checkpoint
from stages import paths


def projections_file(model: str) -> Path:
    return paths.DATA / "projections" / f"{model}.npz"


def project_figure(model: str) -> Path:
    return paths.REPORTS / "figures" / "project" / f"{model}.png"


def project_metrics(model: str) -> Path:
    return paths.REPORTS / "metrics" / "project" / f"{model}.json"


def regressor_file(dataset: str) -> Path:
    return paths.DATA / "keypoints" / dataset / "regressor.pt"


def project_config(params: Params) -> ProjectConfig:
    return params.optional_section("project")


def model_row(params: Params, model: str) -> str:
    """The ablation row a model name stands for; unknown names fail with the known ones."""
    models = project_config(params).models
    if model not in models:
        raise ConfigError(
            f"unknown model {model!r}; project.models in params.yaml defines: {', '.join(sorted(models)) or 'none'} "
            f"(add `{model}: <row>` there to analyse another row)"
        )
    return models[model]


def resolve_device(device: str) -> torch.device:
    """pipeline.metrics.scoring.pick_device, its error raised as a ConfigError the CLI reports cleanly."""
    try:
        return pick_device(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_row_generator(generator: dict[str, Any]) -> torch.nn.Module:
    from pipeline.models.registry import build_generator

    return build_generator(generator)


def snapshot_path(params: Params, model: str, root: Path) -> tuple[str, Path]:
    """(row, runs/<row>/network-snapshot.pt) of `model`; a row not trained yet says how to train it."""
    row = model_row(params, model)
    snapshot = root / paths.run_dir(row) / NETWORK_SNAPSHOT
    if not snapshot.is_file():
        raise FileNotFoundError(
            f"model {model!r} (row {row!r}) has no trained snapshot at '{snapshot}'; "
            f"train it first with `pipeline train --row {row}` (or `dvc repro train@{row}`)"
        )
    return row, snapshot


def load_generator(
    params: Params, model: str, root: Path, device: torch.device
) -> tuple[torch.nn.Module, str, Path, dict[str, Any]]:
    """(EMA generator of `model`'s row in eval mode, row, snapshot path, {sha256, step} of the snapshot)."""
    row, snapshot = snapshot_path(params, model, root)
    sha256 = sha256_file(
        snapshot
    )  # before loading: a snapshot replaced meanwhile then fails the next check, not silently
    payload = load_checkpoint(snapshot, required=("G_ema",))
    generator = (payload.get("info") or {}).get("generator") or params.row(row).generator
    G = build_row_generator(generator)
    G.load_state_dict(payload["G_ema"])
    return G.to(device).eval(), row, snapshot, {"sha256": sha256, "step": int(payload.get("step", 0))}


def load_test_images(root: Path, cfg: ProjectConfig, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 test images (N_ts, S, S, 3) and their indices in the prepared dataset."""
    where = root / paths.prepared_dir(cfg.dataset)
    if not where.is_dir():
        raise FileNotFoundError(
            f"prepared dataset '{where}' does not exist; run `pipeline prepare --dataset {cfg.dataset}` first"
        )
    images = PreparedDataset(where).images  # checked: a damaged file is named with the command that remakes it
    stop = cfg.first + cfg.num_images
    if stop > len(images):
        raise ConfigError(
            f"project: images {cfg.first}..{stop - 1} were asked for but dataset {cfg.dataset!r} has {len(images)}; "
            f"lower project.num_images or project.first, or prepare more images"
        )
    if images.shape[1] != resolution:
        raise ConfigError(
            f"project.dataset {cfg.dataset!r} is {images.shape[1]} px but the generator makes {resolution} px images; "
            f"prepare the test images at {resolution} px"
        )
    return np.asarray(images[cfg.first : stop]), np.arange(cfg.first, stop)


def domain_feature_net(params: Params, cfg: ProjectConfig, root: Path):
    """The trunk of the trained keypoint regressor, or None for pixel MSE alone."""
    if cfg.projector.loss != "pixel_domain" or cfg.domain_features == "none":
        return None
    kpl = params.kpl
    if kpl is None or kpl.regressor is None:
        raise ConfigError(
            "project.domain_features 'keypoint_regressor' needs kpl.regressor in params.yaml (or set project.domain_features: none)"
        )
    regressor = load_regressor(root / regressor_file(kpl.regressor.dataset))
    regressor.model.to(resolve_device(cfg.device)).requires_grad_(False)
    return regressor.features


@contextmanager
def counting_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None] | None]:
    """`advance(n)` adds n done units to a progress bar of `total` (None when disabled)."""
    if not enabled:
        yield None
        return
    with progress_bar(description) as update:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done, total)

        yield advance


def run(params: Params, model: str, root: Path = Path("."), progress: bool = True) -> dict:
    """Project `model`'s test images into each configured space; return the metrics written."""
    cfg = project_config(params)
    device = resolve_device(cfg.device)
    clear_stale_outputs(root, projections_file(model), project_figure(model), project_metrics(model))
    G, row, snapshot, source = load_generator(params, model, root, device)
    images, indices = load_test_images(root, cfg, G.resolution)
    loss_fn = make_loss(cfg.projector, domain_feature_net(params, cfg, root)).to(device)
    targets = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    tags = {"stage": "project", "model": model, "row": row, "profile": params.profile, "table": "table3"}
    run_params = {"model": model, "row": row, **cfg.model_dump(mode="json", exclude={"models"})}
    arrays: dict[str, np.ndarray] = {"indices": indices, **snapshot_record(source["sha256"], source["step"])}
    metrics: dict[str, Any] = {
        "model": model,
        "row": row,
        "snapshot": str(snapshot),
        "num_images": len(images),
        "loss": getattr(loss_fn, "name", cfg.projector.loss),
        "steps": cfg.projector.steps,
    }
    recons = []
    with stage_run(
        resolve_tracking_uri(params.tracking.uri), params.tracking.experiment, f"project/{model}", tags, run_params
    ) as tracker:
        for space in cfg.spaces:
            start = time.perf_counter()
            with counting_bar(
                f"project {model} into {space.upper()}", len(images) * cfg.projector.steps, progress
            ) as advance:
                result = project(G, targets, space, loss_fn, cfg.projector, seed=cfg.seed, progress=advance)
            arrays[space] = result.latents.numpy().astype(np.float32)
            arrays[f"reconstructions_{space}"] = to_uint8(result.reconstructions)
            arrays[f"loss_{space}"] = result.loss
            recons.append(result.reconstructions)
            pixel_mse = float((result.reconstructions - targets).square().mean())
            metrics[space] = {
                "loss_mean": float(result.loss.mean()),
                "pixel_mse": pixel_mse,
                "seconds": round(time.perf_counter() - start, 2),
            }
            tracker.log_metrics({f"{space}_loss_mean": metrics[space]["loss_mean"], f"{space}_pixel_mse": pixel_mse})
        with atomic_file(root / projections_file(model)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        save_projection_figure(root / project_figure(model), targets, recons, cfg.figure_columns)
        write_json(root / project_metrics(model), metrics)
        tracker.log_artifact(root / project_figure(model), "figures")
    return metrics
