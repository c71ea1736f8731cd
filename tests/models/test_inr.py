"""The INR decoders: upsampling independence, multi-scale super-resolution, the latent INR's
per-image bias against the explicit [x, y, w] concatenation, and grid errors."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.coords import Grid
from pipeline.models.inr import BlockConfig, Connector, MultiScaleINR, SingleScaleINR, upsample
from pipeline.models.latent_inr import LatentINR

BLOCKS = [BlockConfig(8, 8, 3, 2, to_rgb=True), BlockConfig(16, 6, 4, 2, to_rgb=True)]


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() > 0


def test_nearest_upsampling_changes_exactly_the_2x2_children():
    torch.manual_seed(0)
    s = 4
    x = torch.randn(2, 3, s * s)
    y = x.clone()
    y[1, 2, 1 * s + 2] += 1.0  # low-res pixel (i=1, j=2) of image 1, channel 2
    diff = _changed(upsample(x, s, 2 * s, "nearest"), upsample(y, s, 2 * s, "nearest")).view(2, 3, 2 * s, 2 * s)
    expected = torch.zeros_like(diff)
    expected[1, 2, 2:4, 4:6] = True
    assert torch.equal(diff, expected)
    bilinear = _changed(upsample(x, s, 2 * s, "bilinear"), upsample(y, s, 2 * s, "bilinear"))
    assert bilinear.sum() > 4  # bilinear mixes neighbours: the independence is nearest's property


def test_connector_keeps_pixels_independent_with_nearest_upsampling():
    torch.manual_seed(0)
    s = 4
    conn = Connector(prev_width=5, e_dim=6, width=7, rank=2, activation="sigmoid2", upsampling="nearest")
    raw = torch.randn(1, conn.n_ext)
    h_prev, e = torch.randn(1, 5, s * s), torch.randn(1, 6, 4 * s * s)
    from pipeline.models.inr import ParamReader

    out = conn(h_prev, s, e, 2 * s, ParamReader(raw, conn.n_ext))
    h2 = h_prev.clone()
    h2[0, :, 3 * s + 0] += 1.0  # every channel of low-res pixel (3, 0)
    out2 = conn(h2, s, e, 2 * s, ParamReader(raw, conn.n_ext))
    touched = _changed(out, out2).any(dim=1).view(2 * s, 2 * s)
    allowed = torch.zeros_like(touched)
    allowed[6:8, 0:2] = True
    assert touched.any() and not (touched & ~allowed).any()


@pytest.mark.parametrize("factor", [2, 4])
def test_multiscale_superresolution_doubles_side_and_keeps_even_pixels(factor):
    torch.manual_seed(0)
    inr = MultiScaleINR(BLOCKS, rank=2, upsampling="nearest")
    raw = torch.randn(2, inr.n_ext) * 0.5
    base = inr.render(raw, Grid(16))
    dense = inr.render(raw, Grid(16 * factor))
    assert base.shape == (2, 3, 16, 16) and dense.shape == (2, 3, 16 * factor, 16 * factor)
    assert torch.allclose(dense[..., ::factor, ::factor], base, atol=1e-5)
    assert inr.block_resolutions(16 * factor) == [8, 16 * factor]  # only the final block is denser
    assert not torch.allclose(dense[..., 1::factor, 1::factor], base, atol=1e-3)  # new points are new


def test_multiscale_bilinear_differs_from_nearest():
    torch.manual_seed(0)
    near = MultiScaleINR(BLOCKS, rank=2, upsampling="nearest")
    bil = MultiScaleINR(BLOCKS, rank=2, upsampling="bilinear")
    bil.load_state_dict(near.state_dict())
    raw = torch.randn(1, near.n_ext)
    assert not torch.allclose(near.render(raw, Grid(16)), bil.render(raw, Grid(16)))


def test_multiscale_sparser_and_wider_grids():
    torch.manual_seed(0)
    inr = MultiScaleINR(BLOCKS, rank=2)
    raw = torch.randn(1, inr.n_ext)
    assert inr.block_resolutions(4) == [2, 4]
    assert inr.render(raw, Grid(4)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"1.6 wide .* 12.8 is not a whole number"):
        inr.render(raw, Grid(16, -0.3, 1.3))  # blocks trained at 8 and 16 cannot keep their density over 1.6


@pytest.mark.parametrize("start,end,side", [(-0.5, 1.5, 32), (-0.25, 1.25, 24), (-0.5, 1.5, 16)])
def test_multiscale_extrapolation_keeps_every_block_density(start, end, side):
    """Over [start, end) each block keeps its trained pixel spacing, so the grid points inside [0, 1)
    are the trained ones and the central crop equals the ordinary image (or, for a sparser preview,
    the ordinary preview)."""
    torch.manual_seed(0)
    inr = MultiScaleINR(BLOCKS, rank=2)
    raw = torch.randn(2, inr.n_ext)
    span = end - start
    inner = round(side / span)  # pixels of the wide image inside [0, 1): 16, or 8 for the preview
    assert inr.block_resolutions(side, span) == [side // 2, side]
    base, wide = inr.render(raw, Grid(inner)), inr.render(raw, Grid(side, start, end))
    first = round(-start * inner)
    assert torch.allclose(wide[..., first : first + inner, first : first + inner], base, atol=1e-5)
    assert not torch.allclose(wide[..., :first, :first], wide[..., first : 2 * first, first : 2 * first], atol=1e-3)
    assert inr.macs_paper(8) < inr.macs_paper(16) < inr.macs_paper(32)


@pytest.mark.parametrize("bad", [24, 12, 1, 0])
def test_multiscale_rejects_grids_it_cannot_render(bad):
    """Trained at 16 with blocks at 8 and 16: 16 * 2^m or 16 / 2^m down to 2 only."""
    inr = MultiScaleINR(BLOCKS, rank=2)
    with pytest.raises(ValueError, match=rf"\b{bad}\b"):
        inr.block_resolutions(bad)


def test_decoders_reject_parameter_vectors_of_the_wrong_size():
    inr = SingleScaleINR(8, 4, 2, embedding="coords", layer="dense")
    with pytest.raises(ValueError, match=rf"\(N, {inr.n_ext}\)"):
        inr.render(torch.zeros(1, inr.n_ext + 1), Grid(8))


def test_latent_inr_equals_the_explicit_x_y_w_concatenation():
    torch.manual_seed(0)
    n, w_dim, s = 3, 5, 4
    inr = LatentINR(s, w_dim, width=6, n_layers=3, skip_input=True)
    w = torch.randn(n, w_dim)
    coords = Grid(s).coords()
    e = torch.cat([coords.t().expand(n, 2, s * s), w[:, :, None].expand(n, w_dim, s * s)], dim=1)
    h = torch.relu(torch.einsum("oi,nip->nop", inr.layers[0].weight, e) + inr.layers[0].bias[:, None])
    for layer in inr.layers[1:]:
        x = torch.cat([h, e], dim=1)
        h = torch.relu(torch.einsum("oi,nip->nop", layer.weight, x) + layer.bias[:, None])
    rgb = torch.einsum("oi,nip->nop", inr.to_rgb.weight, h) + inr.to_rgb.bias[:, None]
    assert torch.allclose(inr.render(w, Grid(s)), torch.tanh(rgb).view(n, 3, s, s), atol=1e-5)


def test_fourier_bases_are_the_bases_each_block_renders_with():
    torch.manual_seed(0)
    inr = MultiScaleINR(BLOCKS, rank=2)
    single = SingleScaleINR(8, 4, 2, embedding="fourier", n_freqs=3, layer="dense")
    for decoder, fourier_modules in ((inr, [b.fourier for b in inr.blocks]), (single, [single.fourier])):
        raw = torch.randn(2, decoder.n_ext)
        used = []
        for m in fourier_modules:  # record the raw basis each Fourier module is given while rendering
            m.register_forward_hook(lambda mod, args, out: used.append(mod.basis(args[1])))
        decoder.render(raw, Grid(decoder.resolution))
        bases = decoder.fourier_bases(raw)
        assert len(bases) == len(used) and all(torch.equal(a, b) for a, b in zip(bases, used))
        assert bases[0].shape == (2, fourier_modules[0].n_freqs, 2)
    assert (
        SingleScaleINR(8, 4, 2, embedding="coords", layer="dense").fourier_bases(torch.zeros(1, 4 * 3 + 4 * 7 + 15))
        == []
    )
