"""UpsampledFID: the interpolation modes, and a coordinate-based generator that renders an exact
continuous image scores ~0 on the dense grid while upsampled versions score more."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.metrics.frechet import GaussianAccumulator
from pipeline.metrics.inception import quantize
from pipeline.metrics.upsampled import UPSAMPLE_MODES, upsample2x, upsampled_scores


class PixelFeatures:
    """A stand-in extractor: the raw pixels of a 4x4 average-pooled image plus a high-pass energy."""

    kind, fd_name, is_name, weights_sha256 = "test", "fd_test", "is_test", ""
    dim = 3 * 16 + 1

    def __call__(self, images):
        x = images.float() / 127.5 - 1
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        hp = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))[:, None] * 10
        return torch.cat([pooled, hp], 1), torch.zeros(len(x), 2)


def render(z: torch.Tensor, resolution: int) -> torch.Tensor:
    """A continuous image per latent, sampled at pixel centres: sharp-edged disc plus a sine."""
    a = (torch.arange(resolution) + 0.5) / resolution
    y, x = torch.meshgrid(a, a, indexing="ij")
    cx, cy, f = 0.5 + 0.2 * torch.tanh(z[:, 0]), 0.5 + 0.2 * torch.tanh(z[:, 1]), 3 + torch.sigmoid(z[:, 2]) * 4
    disc = ((x - cx[:, None, None]) ** 2 + (y - cy[:, None, None]) ** 2 < 0.09).float()
    wave = torch.sin(2 * math.pi * f[:, None, None] * x)
    img = 0.6 * disc * 2 - 0.6 + 0.3 * wave
    return torch.stack([img, img.flip(-1), -img], 1).clamp(-1, 1)


def test_modes_upsample_by_two():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(upsample2x(x, "nearest"), x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    for mode in UPSAMPLE_MODES:
        assert upsample2x(x, mode).shape == (2, 3, 8, 8)
        assert torch.allclose(upsample2x(torch.full((1, 3, 4, 4), 0.3), mode), torch.full((1, 3, 8, 8), 0.3))
    with pytest.raises(ValueError, match="unknown upsampling mode 'area'"):
        upsample2x(x, "area")


def test_dense_grid_beats_upsampling_for_an_exact_renderer():
    ext, s = PixelFeatures(), 16
    zs = [torch.randn(64, 3, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    acc = GaussianAccumulator(ext.dim)
    for z in zs:
        acc.update(ext(quantize(render(z, 2 * s)))[0])
    calls = []

    def generate_at(z, r):
        calls.append(r)
        return render(z, r)

    scores = upsampled_scores(generate_at, zs, s, acc.stats(), ext, dense_grid=True)
    assert set(scores) == {f"fd_test_up2x_{v}" for v in (*UPSAMPLE_MODES, "grid")}
    assert set(calls) == {s, 2 * s}
    assert abs(scores["fd_test_up2x_grid"]) < 1e-6
    for mode in UPSAMPLE_MODES:
        assert scores[f"fd_test_up2x_{mode}"] > 1e-3


def test_wrong_generator_output_is_reported():
    ext = PixelFeatures()
    acc = GaussianAccumulator(ext.dim)
    acc.update(torch.randn(4, ext.dim))
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\) was asked for"):
        upsampled_scores(lambda z, r: torch.zeros(len(z), 3, 4, 4), [torch.zeros(2, 3)], 8, acc.stats(), ext)
    with pytest.raises(ValueError, match="no UpsampledFID variant"):
        upsampled_scores(render, [torch.zeros(2, 3)], 8, acc.stats(), ext, modes=())
