"""Generators of the INR family (Table 1 rows latent_inr, hyper_inr, hyper_fourier, hyper_fmm, inr_gan).

All follow the generator interface the training code relies on:
mapping(z) -> w (W space: the hypernetwork trunk's output), synthesize(w, grid) -> images in
[-1, 1], forward(z), macs_paper(resolution), param_groups(). Being coordinate-based, they also expose
inr_params(w) -> (N, n_ext) and render(params, grid), so a caller can interpolate in parameter space
and evaluate any grid: denser, wider or sparser.
"""

from __future__ import annotations

from torch import Tensor, nn

from pipeline.models.coords import Grid
from pipeline.models.hypernetwork import HyperNetwork
from pipeline.models.inr import MultiScaleINR, SingleScaleINR
from pipeline.models.latent_inr import LatentINR


def as_grid(grid: Grid | int | None, resolution: int) -> Grid:
    """None -> the trained [0, 1) grid; an int -> that resolution over [0, 1)."""
    if grid is None:
        return Grid(resolution)
    if isinstance(grid, int):
        return Grid(grid)
    if isinstance(grid, Grid):
        return grid
    raise ValueError(f"expected a Grid, an int resolution or None, got {type(grid).__name__}")


class _INRGenerator(nn.Module):
    """What both coordinate-based generators share: a `hyper` network (z -> W space) and a `decoder`
    INR, with the paper's two learning-rate groups."""

    def forward(self, z: Tensor) -> Tensor:
        return self.synthesize(self.mapping(z))

    def macs_paper(self, resolution: int | None = None) -> int:
        return self.hyper.macs_paper() + self.decoder.macs_paper(resolution or self.resolution)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"inr": list(self.decoder.parameters()), "hyper": list(self.hyper.parameters())}


class HyperINRGenerator(_INRGenerator):
    """A hypernetwork that generates every external parameter of an INR decoder, per image."""

    def __init__(
        self, decoder: SingleScaleINR | MultiScaleINR, z_dim: int = 512, hidden_dim: int = 1024, n_residual: int = 2
    ):
        super().__init__()
        self.decoder = decoder
        self.hyper = HyperNetwork(decoder.n_ext, z_dim, hidden_dim, n_residual)
        self.z_dim, self.w_dim, self.resolution = z_dim, hidden_dim, decoder.resolution
        self.n_ext = decoder.n_ext

    def mapping(self, z: Tensor) -> Tensor:
        return self.hyper.trunk(z)

    def inr_params(self, w: Tensor) -> Tensor:
        return self.hyper.inr_params(w)

    def render(self, params: Tensor, grid: Grid | int | None = None) -> Tensor:
        return self.decoder.render(params, as_grid(grid, self.resolution))

    def synthesize(self, w: Tensor, grid: Grid | int | None = None) -> Tensor:
        return self.render(self.inr_params(w), grid)


class LatentINRGenerator(_INRGenerator):
    """Row 1: the hypernetwork trunk gives w; a shared-weight INR takes [x, y, w] at every pixel.

    Its per-image "INR parameters" are w itself, so parameter-space interpolation is W-space
    interpolation.
    """

    def __init__(self, decoder: LatentINR, z_dim: int = 512, n_residual: int = 2):
        super().__init__()
        self.decoder = decoder
        self.hyper = HyperNetwork(0, z_dim, decoder.w_dim, n_residual)
        self.z_dim, self.w_dim, self.resolution = z_dim, decoder.w_dim, decoder.resolution
        self.n_ext = decoder.w_dim

    def mapping(self, z: Tensor) -> Tensor:
        return self.hyper.trunk(z)

    def inr_params(self, w: Tensor) -> Tensor:
        return w

    def render(self, params: Tensor, grid: Grid | int | None = None) -> Tensor:
        return self.decoder.render(params, as_grid(grid, self.resolution))

    def synthesize(self, w: Tensor, grid: Grid | int | None = None) -> Tensor:
        return self.render(w, grid)
