"""Properties of continuous images: extrapolation keeps the image inside the frame, a denser grid keeps
the trained pixels, parameter interpolation ends at both images and is not a pixel blend, and the
frequencies are the row norms of the generated Fourier bases."""

from __future__ import annotations

import pytest
import torch

from pipeline.analysis.properties import (
    extrapolate,
    extrapolation_grid,
    frequency_norms,
    inr_params,
    interpolate,
    super_resolve,
)
from pipeline.models.registry import build_generator

HYPER = dict(z_dim=8, hyper_dim=16, hyper_residual=1)
INR_GAN = dict(
    kind="inr_gan",
    resolution=16,
    rank=2,
    **HYPER,
    blocks=[
        dict(resolution=8, width=8, n_freqs=4, n_layers=1),
        dict(resolution=16, width=8, n_freqs=3, n_layers=1, to_rgb=True),
    ],
)
ROWS = {
    "inr_gan": INR_GAN,
    "hyper_fourier": dict(kind="hyper_fourier", resolution=8, width=8, n_layers=2, n_freqs=4, **HYPER),
    "latent_inr": dict(kind="latent_inr", resolution=8, width=8, n_layers=2, **HYPER),
}


def _generator(settings: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    G = build_generator(settings).eval()
    return G, G.mapping(torch.randn(3, G.z_dim))


@pytest.mark.parametrize("row", list(ROWS))
def test_extrapolation_centre_is_the_image(row):
    G, w = _generator(ROWS[row])
    s = G.resolution
    native = super_resolve(G, w)["native"]
    for margin, wide in zip((0.25, 0.5), extrapolate(G, w, (0.25, 0.5))):
        k = round(margin * s)
        assert wide.shape[-1] == s + 2 * k
        assert torch.allclose(wide[..., k : k + s, k : k + s], native, atol=1e-5)
        assert not torch.allclose(
            wide[..., :k, :k], wide[..., k : 2 * k, k : 2 * k], atol=1e-3
        )  # something new outside


def test_extrapolation_grid_refuses_margins_that_change_the_pixel_spacing():
    assert extrapolation_grid(16, 0.25).resolution == 24
    with pytest.raises(ValueError, match=r"margin 0.3 gives 25.6 pixels"):
        extrapolation_grid(16, 0.3)


@pytest.mark.parametrize("row", ["inr_gan", "hyper_fourier"])
def test_superresolution_keeps_the_trained_pixels_and_adds_new_ones(row):
    G, w = _generator(ROWS[row])
    out = super_resolve(G, w, factor=2)
    s = G.resolution
    assert set(out) == {"native", "inr", "nearest", "bilinear", "bicubic"}
    assert all(v.shape[-1] == 2 * s for k, v in out.items() if k != "native")
    # The last grid is denser, its even points are the trained ones (the INR-GAN's lower block keeps its grid).
    assert torch.allclose(out["inr"][..., ::2, ::2], out["native"], atol=1e-5)
    assert torch.equal(out["nearest"][..., ::2, ::2], out["native"])
    assert not torch.allclose(out["inr"], out["nearest"], atol=1e-3)


@pytest.mark.parametrize("row", list(ROWS))
def test_parameter_interpolation_ends_at_both_images_and_differs_from_a_pixel_blend(row):
    G, w = _generator(ROWS[row])
    in_params, in_pixels = interpolate(G, w[:2], w[1:], steps=5)
    native = super_resolve(G, w)["native"]
    assert in_params.shape == (2, 5, 3, G.resolution, G.resolution)
    assert torch.allclose(in_params[:, 0], native[:2], atol=1e-6) and torch.allclose(
        in_params[:, -1], native[1:], atol=1e-6
    )
    assert torch.allclose(in_pixels[:, 2], 0.5 * (native[:2] + native[1:]), atol=1e-6)  # the pixel blend, t = 1/2
    assert not torch.allclose(in_params[:, 2], in_pixels[:, 2], atol=1e-3)
    with pytest.raises(ValueError, match="at least 2 steps"):
        interpolate(G, w[:1], w[1:2], steps=1)


def test_frequencies_are_row_norms_of_the_generated_bases():
    G, w = _generator(INR_GAN)
    norms = frequency_norms(G, w)
    assert [len(n) for n in norms] == [3 * 4, 3 * 3]  # images x F per block
    raw = (
        inr_params(G, w).detach()[:, : 2 * 4].reshape(3, 4, 2) * 10.0
    )  # block 0's basis: B = 10 * raw, (b_x, b_y) rows
    expected = torch.sqrt(raw[..., 0] ** 2 + raw[..., 1] ** 2).flatten().double().numpy()
    assert norms[0] == pytest.approx(expected, rel=1e-6)
    G_latent, w_latent = _generator(ROWS["latent_inr"])
    assert frequency_norms(G_latent, w_latent) == []  # raw (x, y) input: no Fourier features


def test_convolutional_generators_are_refused():
    G = build_generator(
        dict(kind="stylegan2", resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=16)
    )
    with pytest.raises(ValueError, match="no INR decoder"):
        extrapolate(G, torch.zeros(1, 8), (0.5,))
