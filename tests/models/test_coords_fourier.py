"""Closed-form checks of the coordinate grid and the per-image Fourier features."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.coords import Grid
from pipeline.models.fourier import FourierFeatures
from pipeline.models.inr import to_image


def test_grid_coordinates_are_j_over_s_i_over_s_row_major():
    s = 4
    coords = Grid(s).coords()
    expected = torch.tensor([[j / s, i / s] for i in range(s) for j in range(s)])
    assert coords.shape == (s * s, 2)
    assert torch.equal(coords, expected)


def test_grid_pixel_order_matches_image_layout_x_along_width():
    s = 8
    feats = Grid(s).coords().t().unsqueeze(0)  # (1, 2, P) as an INR would carry them
    img = torch.atanh(to_image(feats.clamp(max=0.99), s))  # undo the tanh of to_image
    i, j = 3, 5
    assert img[0, 0, i, j].item() == pytest.approx(j / s, abs=1e-5)  # channel x varies along width
    assert img[0, 1, i, j].item() == pytest.approx(i / s, abs=1e-5)


def test_grid_with_a_wider_range_for_extrapolation():
    g = Grid(4, -0.5, 1.5)
    assert torch.allclose(g.axis(), torch.tensor([-0.5, 0.0, 0.5, 1.0]))
    assert g.coords()[-1].tolist() == [1.0, 1.0]
    assert g.with_resolution(8).step == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [dict(resolution=0), dict(resolution=4, start=1.0, end=0.0)])
def test_grid_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="grid"):
        Grid(**bad)


def test_fourier_features_equal_sin_cos_of_scaled_basis_times_coordinates():
    torch.manual_seed(0)
    n, f, p = 3, 5, 7
    ff = FourierFeatures(f, scale=10.0)
    coords, raw = torch.rand(p, 2), torch.randn(n, ff.n_ext)
    b = 10.0 * raw.view(n, f, 2)  # B = 10 * raw, rows (b_x, b_y), no 2*pi
    proj = torch.einsum("nfk,pk->nfp", b, coords)
    expected = torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)
    assert torch.allclose(ff(coords, raw), expected, atol=1e-5)


def test_fourier_basis_layout_first_row_is_bx_by():
    ff = FourierFeatures(1, scale=10.0)
    coords = Grid(4).coords()
    raw = torch.tensor([[0.1, 0.0]])  # B = [[1, 0]]: e = [sin x, cos x]
    e = ff(coords, raw)
    assert torch.allclose(e[0, 0], torch.sin(coords[:, 0]))
    assert torch.allclose(e[0, 1], torch.cos(coords[:, 0]))
