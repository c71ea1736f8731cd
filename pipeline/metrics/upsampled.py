"""UpsampledFID (paper Fig. 3): how well a generator trained at S serves images at 2S.

Images generated at S are upsampled to 2S with nearest, bilinear and bicubic interpolation; a
coordinate-based generator is also evaluated directly on the denser 2S grid. Each variant is scored
against real images prepared at 2S, with the feature extractor given (Inception: `fid_up2x_<variant>`,
domain network: `fd_domain_up2x_<variant>`). The same latents feed every variant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.metrics.frechet import GaussianAccumulator, GaussianStats, frechet_distance_stats
from pipeline.metrics.inception import FeatureExtractor, quantize
from pipeline.metrics.options import UPSAMPLE_MODES

DENSE_GRID = "grid"  # the variant name of direct generation at 2S


def upsample2x(images: Tensor, mode: str) -> Tensor:
    """(N, C, S, S) in [-1, 1] -> (N, C, 2S, 2S) with `mode` (half-pixel centres, align_corners=False)."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}; allowed: {', '.join(UPSAMPLE_MODES)}")
    if mode == "nearest":
        return F.interpolate(images, scale_factor=2, mode="nearest")
    return F.interpolate(images, scale_factor=2, mode=mode, align_corners=False)


def metric_name(extractor: FeatureExtractor, variant: str) -> str:
    return f"{extractor.fd_name}_up2x_{variant}"


def upsampled_scores(
    generate_at: Callable[[Tensor, int], Tensor],
    latents: Iterable[Tensor],
    resolution: int,
    reference: GaussianStats,
    extractor: FeatureExtractor,
    modes: Iterable[str] = UPSAMPLE_MODES,
    dense_grid: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Frechet distances of each 2S variant to `reference` (statistics of real images at 2S).

    `generate_at(z, r)` returns images in [-1, 1], (N, 3, r, r); `latents` yields batches of z. With
    `dense_grid`, `generate_at(z, 2 * resolution)` is scored as the variant 'grid'."""
    modes = list(modes)
    for m in modes:
        if m not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling mode {m!r}; allowed: {', '.join(UPSAMPLE_MODES)}")
    variants = modes + ([DENSE_GRID] if dense_grid else [])
    if not variants:
        raise ValueError("no UpsampledFID variant requested (give upsampling modes or dense_grid=True)")
    accs = {v: GaussianAccumulator(extractor.dim) for v in variants}
    done = 0
    for z in latents:
        with torch.no_grad():
            low = generate_at(z, resolution).float().cpu()
            _check_shape(low, resolution)
            for m in modes:
                accs[m].update(extractor(quantize(upsample2x(low, m)))[0])
            if dense_grid:
                high = generate_at(z, 2 * resolution).float().cpu()
                _check_shape(high, 2 * resolution)
                accs[DENSE_GRID].update(extractor(quantize(high))[0])
        done += len(z)
        if progress is not None:
            progress(done)
    return {metric_name(extractor, v): frechet_distance_stats(accs[v].stats(), reference) for v in variants}


def _check_shape(images: Tensor, resolution: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (resolution, resolution):
        raise ValueError(
            f"generate_at returned {tuple(images.shape)} but (N, 3, {resolution}, {resolution}) was asked for"
        )
