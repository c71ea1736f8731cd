"""Score a generator: FID/IS (or fd_domain/is_domain) and UpsampledFID from a fixed seed range.

Latent i of a scoring is drawn from its own seed (seed_start + i), so two scorings of one snapshot,
or of two snapshots, see the same z whatever the batch size or the number of images. Also the
typed options of the `reference` and `score` stages (params.yaml sections of the same names).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from pipeline.metrics.frechet import GaussianStats, frechet_distance_stats
from pipeline.metrics.inception import FeatureExtractor, inception_score, quantize, summarize
from pipeline.metrics.options import ScoreConfig
from pipeline.metrics.upsampled import upsampled_scores

W_AVG_SEED = 123_456_789  # latents for the W-space mean; a range apart from the scoring seeds
NOISE_SEED = 987_654_321  # the global RNG while scoring: StyleGAN2-style per-layer noise is drawn from it


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Fix torch's global RNG inside the block and restore it after: generators that draw noise inputs
    (StyleGAN2's per-layer noise) then give the same images, and scores, every time."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# Generators evaluated on a fixed pixel grid: no direct generation at 2S for UpsampledFID.
FIXED_GRID_KINDS = frozenset({"stylegan2"})


class MetricsInputError(ValueError):
    """Scoring cannot start: a missing or mismatched input; the message names it and what to do."""


def pick_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available; set device: auto or cpu")
    return torch.device(preference)


def latents_for_seeds(seeds: range, z_dim: int) -> Tensor:
    """One z per seed, each from its own generator: z of seed s never depends on the others."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def latent_batches(num_images: int, batch: int, z_dim: int, seed_start: int = 0) -> Iterator[Tensor]:
    for start in range(seed_start, seed_start + num_images, batch):
        yield latents_for_seeds(range(start, min(start + batch, seed_start + num_images)), z_dim)


class GeneratorSampler:
    """`sampler(z, resolution) -> images in [-1, 1]` for a trained generator in eval mode.

    Truncation psi < 1 moves w towards the W mean: the generator's own running mean when its mapping
    takes `truncation_psi` (StyleGAN2's w_avg), else the mean of `w_avg_samples` mapped latents.
    A resolution other than the native one evaluates the generator on a denser (or sparser) grid."""

    def __init__(
        self,
        generator: nn.Module,
        truncation_psi: float = 1.0,
        device: torch.device | str = "cpu",
        w_avg_samples: int = 10000,
    ):
        self.device = torch.device(device)
        self.G = generator.to(self.device).eval()
        self.psi = truncation_psi
        self.resolution = int(generator.resolution)
        self._native_truncation = "truncation_psi" in inspect.signature(generator.mapping).parameters
        self._w_avg = None
        if truncation_psi != 1.0 and not self._native_truncation:
            self._w_avg = self._mean_w(w_avg_samples)

    @torch.no_grad()
    def _mean_w(self, n: int, batch: int = 1000) -> Tensor:
        g = torch.Generator().manual_seed(W_AVG_SEED)
        total = None
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.G.z_dim, generator=g).to(self.device)
            s = self.G.mapping(z).double().sum(0)
            total = s if total is None else total + s
        return (total / n).float()

    @torch.no_grad()
    def mapping(self, z: Tensor) -> Tensor:
        z = z.to(self.device)
        if self._native_truncation:
            return self.G.mapping(z, truncation_psi=self.psi)
        w = self.G.mapping(z)
        return w if self._w_avg is None else torch.lerp(self._w_avg, w, self.psi)

    @torch.no_grad()
    def __call__(self, z: Tensor, resolution: int | None = None) -> Tensor:
        w = self.mapping(z)
        if resolution is None or resolution == self.resolution:
            return self.G.synthesize(w).float()
        from pipeline.models.coords import Grid

        return self.G.synthesize(w, Grid(resolution)).float()


def score_images(
    sampler: Callable[[Tensor, int | None], Tensor],
    z_dim: int,
    extractor: FeatureExtractor,
    reference: GaussianStats,
    cfg: ScoreConfig,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """The Frechet distance and inception-score formula of cfg.num_images generated images (noise
    inputs, where the generator has them, from a fixed seed: the same snapshot always scores the same)."""
    batches = (quantize(sampler(z, None)) for z in latent_batches(cfg.num_images, cfg.batch, z_dim, cfg.seed_start))
    with seeded_global_rng(NOISE_SEED + cfg.seed_start, getattr(sampler, "device", "cpu")):
        summary = summarize(
            batches, extractor, None if progress is None else (lambda done: progress(done, cfg.num_images))
        )
    is_mean, is_std = inception_score(summary.logits)
    return {
        extractor.fd_name: frechet_distance_stats(summary.stats, reference),
        extractor.is_name: is_mean,
        f"{extractor.is_name}_std": is_std,
    }


def score_generator(
    generator: nn.Module,
    extractor: FeatureExtractor,
    reference: GaussianStats,
    cfg: ScoreConfig,
    upsampled: tuple[GaussianStats, FeatureExtractor, bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Score a trained generator; returns a flat dict of metrics.

    `upsampled` = (statistics of real images at 2S, the extractor they were computed with, whether
    the generator can be evaluated on a denser grid) adds the UpsampledFID variants."""
    sampler = GeneratorSampler(generator, cfg.truncation_psi, pick_device(cfg.device), cfg.w_avg_samples)
    total = cfg.num_images * (2 if upsampled else 1)
    metrics: dict[str, float] = {
        "num_images": cfg.num_images,
        "truncation_psi": cfg.truncation_psi,
        "seed_start": cfg.seed_start,
    }
    metrics |= score_images(sampler, generator.z_dim, extractor, reference, cfg, progress)
    if upsampled is not None:
        ref2, ext2, dense = upsampled
        with seeded_global_rng(NOISE_SEED + cfg.seed_start + 1, sampler.device):
            metrics |= upsampled_scores(
                sampler,
                latent_batches(cfg.num_images, cfg.batch, generator.z_dim, cfg.seed_start),
                sampler.resolution,
                ref2,
                ext2,
                cfg.upsample_modes,
                dense,
                None if progress is None else (lambda done: progress(cfg.num_images + done, total)),
            )
    return metrics
