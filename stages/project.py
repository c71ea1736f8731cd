"""Stage `project`: embed N_ts real test images into one model's Z and W spaces (StyleGAN2's projector,
no noise maps), for the keypoint prediction loss.

Writes data/projections/<model>.npz (latents, reconstructions, per-image losses, the test images'
indices), reports/figures/project/<model>.png (targets, Z and W reconstructions) and
reports/metrics/project/<model>.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.analysis.keypoints import load_regressor
from pipeline.analysis.options import ProjectConfig
from pipeline.analysis.projection import make_loss, project, save_projection_figure, snapshot_record, to_uint8
from pipeline.config import ConfigError, Params
from pipeline.data.dataset import PreparedDataset
from pipeline.devices import resolve_device
from pipeline.headline import write_split
from pipeline.io import atomic_file, clear_stale_outputs
from pipeline.progress import counting_bar
from pipeline.snapshots import load_model_generator, model_row, project_config
from pipeline.tracking import resolve_tracking_uri, stage_run
from stages import paths


def projections_file(model: str) -> Path:
    return paths.projections_file(model)


def project_figure(model: str) -> Path:
    return paths.REPORTS / "figures" / "project" / f"{model}.png"


def project_metrics(model: str) -> Path:
    return paths.REPORTS / "metrics" / "project" / f"{model}.json"


def load_generator(
    params: Params, model: str, root: Path, device: torch.device
) -> tuple[torch.nn.Module, str, Path, dict[str, Any]]:
    """(EMA generator of `model`'s row in eval mode, row, snapshot path, {sha256, step} of the snapshot)."""
    snapshot = root / paths.snapshot_file(model_row(params, model))
    G, row, source = load_model_generator(params, model, snapshot, device)
    return G, row, snapshot, source


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
    regressor = load_regressor(root / paths.regressor_file(kpl.regressor.dataset))
    regressor.model.to(resolve_device(cfg.device)).requires_grad_(False)
    return regressor.features


def run(params: Params, model: str, root: Path = Path("."), progress: bool = True) -> dict:
    """Project `model`'s test images into each configured space; return the metrics written."""
    cfg = project_config(params)
    device = resolve_device(cfg.device)
    clear_stale_outputs(
        root,
        projections_file(model),
        project_figure(model),
        project_metrics(model),
        paths.details(project_metrics(model)),
    )
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
        save_projection_figure(
            root / project_figure(model),
            targets,
            recons,
            cfg.figure_columns,
            labels=[space.upper() for space in cfg.spaces],
            title=f"{model} (row {row}, step {source['step']}): test images and their projections",
        )
        write_split(root / project_metrics(model), root / paths.details(project_metrics(model)), metrics, "project")
        tracker.log_artifact(root / project_figure(model), "figures")
    return metrics
