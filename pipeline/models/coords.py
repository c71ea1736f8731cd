"""Coordinate grids: where an INR is evaluated (paper section 2, "Coordinate grid").

An S x S grid over [start, end) has pixel (i, j) at p = (start + j * h, start + i * h) with
h = (end - start) / S: x runs along the width, rows are stacked top to bottom (row-major), and the
default range [0, 1) gives p = (j / S, i / S). A wider range (e.g. [-0.3, 1.3]) extrapolates
outside the training frame; a larger S is a denser grid over the same square.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Grid:
    """A square grid of `resolution` x `resolution` points covering [start, end) on both axes."""

    resolution: int
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ValueError(f"grid resolution must be a positive integer, got {self.resolution!r}")
        if not self.end > self.start:
            raise ValueError(f"grid range must satisfy start < end, got [{self.start}, {self.end})")

    @property
    def step(self) -> float:
        return (self.end - self.start) / self.resolution

    def with_resolution(self, resolution: int) -> Grid:
        """The same range sampled at another resolution (what each multi-scale block does)."""
        return Grid(resolution, self.start, self.end)

    def axis(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """The S positions along one axis: start + k * step, k = 0 .. S-1."""
        k = torch.arange(self.resolution, device=device, dtype=dtype or torch.get_default_dtype())
        return self.start + k * self.step

    def coords(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """(S*S, 2) coordinates (x, y), row-major: row i*S + j holds (axis[j], axis[i])."""
        a = self.axis(device, dtype)
        y, x = torch.meshgrid(a, a, indexing="ij")
        return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
