"""Stage `properties`: the figures of continuous images for one trained INR row (Figs. 2/10, 3/15, 5, 17).

Reads runs/<row>/network-snapshot.pt (G_ema); writes reports/figures/properties/<row>/ (extrapolation,
super-resolution, interpolation, frequencies) and reports/metrics/properties/<row>.json, and logs
both to MLflow. The metrics include a check that is exact by construction when pixels are independent:
the centre of every extrapolated image must equal the ordinary image (each block keeps its trained
pixel spacing). An inr_gan_sg2 row draws the first two figures; the details file names the properties
it skips (`skipped`, one reason each) and what its figures mean for it (`notes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.analysis.options import PropertiesConfig
from pipeline.analysis.projection import to_uint8
from pipeline.analysis.properties import (
    PROPERTIES,
    SUPERRES_BASELINES,
    check_margin,
    extrapolate,
    frequency_norms,
    interpolate,
    not_applicable,
    pixels_are_independent,
    save_extrapolation_figure,
    save_frequency_figure,
    save_image_table,
    super_resolve,
)
from pipeline.config import ConfigError, Params
from pipeline.data.preview import save_grid
from pipeline.headline import write_split
from pipeline.io import clear_stale_outputs
from pipeline.metrics.scoring import GeneratorSampler, latents_for_seeds, pick_device
from pipeline.models.coords import Grid
from pipeline.models.inr_sg2 import INRStyleGAN2Generator
from pipeline.progress import progress_bar
from pipeline.snapshots import load_row_snapshot
from pipeline.tracking import resolve_tracking_uri, score_step, stage_run
from stages import paths

FIGURES = ("extrapolation.png", "superresolution.png", "interpolation.png", "frequencies.png")  # one per PROPERTIES
FREQUENCY_BATCH = 32
FREQUENCY_SEED = 10_000  # Fig. 17's images: a seed range apart from the figures' own (seed_start, ...)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [10, 50, 90])
    return {"p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "mean": float(values.mean())}


def run(params: Params, row: str, root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Draw the four figures of `row` and return its metrics (also written and logged)."""
    cfg: PropertiesConfig = params.properties
    params.row(row)  # unknown rows stop here with the list of known ones
    metrics_file = paths.properties_metrics(row)
    clear_stale_outputs(root, paths.properties_dir(row), metrics_file, paths.details(metrics_file))
    generator, info = load_row_snapshot(params, row, root / paths.snapshot_file(row))
    device = pick_device(cfg.device)
    sampler = GeneratorSampler(generator, cfg.truncation_psi, device)
    G = sampler.G
    s = int(G.resolution)
    try:  # a fixed-grid generator (params.yaml listed it by hand around the validator) stops here
        skipped = not_applicable(G)
    except ValueError as err:
        raise ConfigError(f"properties --row {row}: {err}") from None
    try:  # a margin that would need fractional pixels stops here, before the MLflow run opens
        for m in cfg.margins:
            check_margin(G, m)
    except ValueError as err:
        raise ConfigError(f"properties.margins {cfg.margins} cannot be drawn for row {row!r}: {err}") from None
    notes = _notes(G)
    out_dir = root / paths.properties_dir(row)
    tags = {
        "stage": "properties",
        "row": row,
        "dataset": params.row(row).dataset,
        "profile": params.profile,
        "table": "figures",  # Figs. 4-7: continuous-image properties
    }
    with (
        stage_run(
            resolve_tracking_uri(params.tracking.uri),
            params.tracking.experiment,
            f"properties/{row}",
            tags,
            {"row": row, **cfg.model_dump(mode="json")},
        ) as tracker,
        progress_bar(f"properties {row}", progress) as advance,
    ):
        n = cfg.num_images
        seeds = range(cfg.seed_start, cfg.seed_start + 2 * n)
        with torch.no_grad():
            w = sampler.mapping(latents_for_seeds(seeds, G.z_dim).to(device))
        w_a, w_b = w[:n], w[n:]

        try:
            wides = extrapolate(G, w_a, cfg.margins)
        except ValueError as err:  # a lower block of the multi-scale INR that the margin would put off its pixel grid
            raise ConfigError(f"properties.margins {cfg.margins} cannot be drawn for row {row!r}: {err}") from None
        native = super_resolve(G, w_a, cfg.superres_factor)
        centre_error = max(
            float(
                (wide[..., round(m * s) : round(m * s) + s, round(m * s) : round(m * s) + s] - native["native"])
                .abs()
                .max()
            )
            for wide, m in zip(wides, cfg.margins)
        )
        save_extrapolation_figure(
            out_dir / FIGURES[0], native["native"], wides, cfg.margins, title=_extrapolation_title(G, row)
        )
        factor = cfg.superres_factor
        save_image_table(
            out_dir / FIGURES[1],
            {
                f"{s} px": _enlarge(native["native"], factor),
                f"INR at {factor * s} px": native["inr"],
                **{f"{mode} x{factor}": native[mode] for mode in SUPERRES_BASELINES},
            },
            title=f"{row}: a denser grid vs upsampling the {s} px image",
        )
        result = {
            "row": row,
            "profile": params.profile,
            **info,
            "resolution": s,
            "extrapolation_centre_max_abs_error": centre_error,
            "superres_inr_vs_bicubic_mean_abs": float((native["inr"] - native["bicubic"]).abs().mean()),
            "superres_inr_vs_nearest_mean_abs": float((native["inr"] - native["nearest"]).abs().mean()),
        }
        if advance:
            advance(1, 3)

        if "interpolation" not in skipped:
            in_params, in_pixels = interpolate(G, w_a, w_b, cfg.interpolation_steps)
            pairs = min(n, 3)
            columns = {}
            for j in range(cfg.interpolation_steps):
                t = j / (cfg.interpolation_steps - 1)
                columns[f"t={t:.2f}"] = torch.stack(
                    [x for i in range(pairs) for x in (in_params[i, j], in_pixels[i, j])]
                )
            save_image_table(
                out_dir / FIGURES[2], columns, title=f"{row}: odd rows interpolate INR parameters, even rows pixels"
            )
            result["interpolation_params_vs_pixels_mean_abs"] = float((in_params - in_pixels).abs().mean())
        if advance:
            advance(2, 3)

        if "frequencies" not in skipped:
            norms: list[list[np.ndarray]] = []
            for start in range(0, cfg.frequency_images, FREQUENCY_BATCH):
                count = min(FREQUENCY_BATCH, cfg.frequency_images - start)
                seeds_f = range(FREQUENCY_SEED + start, FREQUENCY_SEED + start + count)
                with torch.no_grad():
                    w_f = sampler.mapping(latents_for_seeds(seeds_f, G.z_dim).to(device))
                norms.append(frequency_norms(G, w_f))
            per_block = [np.concatenate(parts) for parts in zip(*norms)] if norms and norms[0] else []
            labels = _block_labels(G, len(per_block))
            save_frequency_figure(
                out_dir / FIGURES[3],
                per_block,
                labels,
                f"{row}: |B_f| of {cfg.frequency_images} images"
                if per_block
                else f"{row}: no Fourier features (raw (x, y) input)",
            )
            result["frequencies"] = {label: _percentiles(v) for label, v in zip(labels, per_block)}
        if advance:
            advance(3, 3)

        if skipped:  # which figures a reader will not find, and why (details only: not numbers)
            result["skipped"] = skipped
        if notes:
            result["notes"] = notes
        write_split(root / metrics_file, root / paths.details(metrics_file), result, "properties")
        tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, float)}, step=score_step(info["kimg"]))
        for prop, name in zip(PROPERTIES, FIGURES):
            if prop not in skipped:
                tracker.log_artifact(out_dir / name, "figures")
    return result


def _enlarge(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel replication, so the trained-resolution column is drawn at the others' size."""
    return images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


def _notes(G: torch.nn.Module) -> list[str]:
    """What the figures of an inr_gan_sg2 row mean, where that differs from an INR decoder's."""
    if not isinstance(G, INRStyleGAN2Generator):
        return []
    notes = [
        "learned constant: sampled bilinearly between its trained points on a denser grid and held at its edge "
        "values outside [0, 1); the authors' code draws only the training grid, so this rule is ours",
        "super-resolution: every block runs on the denser grid (as UpsampledFID), so the even pixels are not "
        "the trained ones",
    ]
    if not pixels_are_independent(G):
        notes.append(
            "extrapolation: bilinear upsampling (align_corners=True) and instance norm make every pixel depend on "
            "the whole grid, so the centre of a wide image is not the image (extrapolation_centre_max_abs_error)"
        )
    return notes


def _extrapolation_title(G: torch.nn.Module, row: str) -> str:
    if not isinstance(G, INRStyleGAN2Generator):
        return ""
    title = f"{row}: learned constant held at its edge outside [0, 1]"
    if not pixels_are_independent(G):
        title += "\npixels depend on the whole grid (bilinear, instance norm): the centre moves"
    return title


def _block_labels(G: torch.nn.Module, count: int) -> list[str]:
    configs = getattr(G.decoder, "configs", None)
    if configs is not None and len(configs) == count:
        return [f"block {i} ({c.resolution} px, F={c.n_freqs})" for i, c in enumerate(configs)]
    return [f"basis {i}" for i in range(count)]


def sample(
    params: Params,
    row: str,
    resolution: int | None = None,
    start: float = 0.0,
    end: float = 1.0,
    num: int = 16,
    seed_start: int = 0,
    truncation_psi: float = 1.0,
    out: Path | None = None,
    device: str = "auto",
) -> Path:
    """`pipeline sample`: a grid of the row's G_ema images on an S x S grid over [start, end)^2
    (default: the trained resolution over [0, 1)); returns the PNG written."""
    generator, _ = load_row_snapshot(params, row, paths.snapshot_file(row))
    sampler = GeneratorSampler(generator, truncation_psi, pick_device(device))
    G = sampler.G
    s = resolution or int(G.resolution)
    try:
        grid = Grid(s, start, end)
        with torch.no_grad():
            w = sampler.mapping(latents_for_seeds(range(seed_start, seed_start + num), G.z_dim))
            images = torch.cat([G.synthesize(w[i : i + 8], grid).clamp(-1, 1) for i in range(0, num, 8)])
    except ValueError as err:  # a grid the generator cannot draw: one line for the CLI, not a traceback
        raise ConfigError(f"pipeline sample --row {row} --resolution {s} --range {start:g} {end:g}: {err}") from None
    out = out or Path("samples") / f"{row}_{s}px_{start:g}_{end:g}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(out, to_uint8(images), int(np.ceil(np.sqrt(num))))
    return out
