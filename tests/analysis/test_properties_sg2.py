"""Properties of continuous images for INR-GAN in StyleGAN2's layout (inr_gan_sg2): extrapolation and
super-resolution draw its grids, the properties that read a hypernetwork's INR parameters are named as
not applicable, and StyleGAN2 (a fixed pixel grid) is still refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.coords import Grid
from pipeline.models.registry import build_generator

TINY_SG2 = dict(
    kind="inr_gan_sg2",
    resolution=16,  # blocks 8, 8, 16
    z_dim=16,
    w_dim=16,
    channel_base=128,
    channel_max=16,
    fmm_rank=2,
    const_channels=4,
    const_channels_high=4,
    random_fourier_features=4,
    random_fourier_resolutions=(16,),
)
BILINEAR = dict(TINY_SG2, upsampling="bilinear", instance_norm=True)


def _generator(settings: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    G = build_generator(settings).eval()
    return G, G.mapping(torch.randn(4, G.z_dim))


def test_extrapolation_centre_is_the_image_when_pixels_are_independent():
    # Nearest upsampling and 1x1 layers: a pixel depends only on its coordinates at every block, and a margin
    # that is a whole number of pixels of the lowest block keeps every block on its trained lattice.
    from pipeline.analysis.properties import extrapolate, super_resolve

    G, w = _generator(TINY_SG2)
    s = G.resolution
    native = super_resolve(G, w)["native"]
    assert torch.equal(native, G.synthesize(w).clamp(-1, 1))
    for margin, wide in zip((0.25, 0.5), extrapolate(G, w, (0.25, 0.5))):
        k = round(margin * s)
        assert wide.shape == (4, 3, s + 2 * k, s + 2 * k)
        assert torch.allclose(wide[..., k : k + s, k : k + s], native, atol=1e-5)
        assert not torch.allclose(wide[..., :k, :k], wide[..., k : 2 * k, k : 2 * k], atol=1e-3)


def test_extrapolation_centre_moves_when_pixels_depend_on_the_grid():
    # The "-bil" variant: align_corners=True bilinear upsampling places samples by the grid's extent and
    # instance norm divides by a std over all pixels, so a wider grid changes the centre too (not a bug).
    from pipeline.analysis.properties import extrapolate, pixels_are_independent, super_resolve

    G, w = _generator(BILINEAR)
    assert not pixels_are_independent(G) and pixels_are_independent(_generator(TINY_SG2)[0])
    native = super_resolve(G, w)["native"]
    (wide,) = extrapolate(G, w, (0.25,))
    assert wide.shape[-1] == 24
    assert (wide[..., 4:20, 4:20] - native).abs().max() > 1e-2


def test_margin_that_shifts_the_lowest_block_off_its_lattice_is_refused():
    from pipeline.analysis.properties import check_margin, extrapolate

    G, w = _generator(TINY_SG2)
    check_margin(G, 0.25)
    # 1/16 is a whole pixel at 16 px (18 px a side) but half a pixel of the 8 px blocks
    with pytest.raises(ValueError, match=r"margin 0.0625 is 0.5 pixels of the 8 px blocks.*multiple of 1/8"):
        extrapolate(G, w, (0.0625,))


def test_superresolution_doubles_every_block_and_stays_the_same_image():
    # Every block runs on a 2x denser lattice, so the lower blocks' nearest-neighbour context moves and the
    # even pixels are not the trained ones (unlike inr_gan, whose lower blocks keep their grid); what holds is
    # that the 2x2 average of the dense image is its own image, far closer to it than to another image.
    from pipeline.analysis.properties import super_resolve

    G, w = _generator(TINY_SG2)
    out = super_resolve(G, w, factor=2)
    assert set(out) == {"native", "inr", "nearest", "bilinear", "bicubic"}
    assert out["native"].shape[-1] == 16 and all(out[k].shape[-1] == 32 for k in out if k != "native")
    assert torch.equal(out["inr"], G.synthesize(w, Grid(32)).clamp(-1, 1))
    pooled = F.avg_pool2d(out["inr"], 2)
    own = (pooled - out["native"]).abs().mean()
    other = (pooled - out["native"].roll(1, dims=0)).abs().mean()
    assert own < 0.5 * other
    assert not torch.allclose(out["inr"], out["nearest"], atol=1e-2)


def test_only_the_properties_of_inr_parameters_are_not_applicable():
    from pipeline.analysis.properties import PROPERTIES, not_applicable

    G, _ = _generator(TINY_SG2)
    skipped = not_applicable(G)
    assert set(skipped) == {"interpolation", "frequencies"} and set(skipped) < set(PROPERTIES)
    assert "no INR parameters" in skipped["interpolation"] and "fixed" in skipped["frequencies"]
    inr, _ = _generator(dict(kind="latent_inr", resolution=8, width=8, n_layers=2, z_dim=8))
    assert not_applicable(inr) == {}


def test_stylegan2_has_no_property_and_is_refused():
    from pipeline.analysis.properties import extrapolate, not_applicable

    G, w = _generator(dict(kind="stylegan2", resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16))
    with pytest.raises(ValueError, match=r"StyleGAN2Generator.*fixed pixel grid.*inr_gan_sg2"):
        not_applicable(G)
    with pytest.raises(ValueError, match=r"StyleGAN2Generator.*fixed pixel grid"):
        extrapolate(G, w, (0.25,))
