"""Fourier features with a basis predicted per image (paper section 2, "Fourier features").

e(p) = [sin(B p); cos(B p)] with B in R^{F x 2}. The hypernetwork predicts B for every image:
B = scale * raw (scale 10, no 2*pi factor, no bias). Row norms of B are the frequencies the model
chose (Fig. 17).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """Coordinates (P, 2) and raw basis (N, 2F) -> features (N, 2F, P): F sines, then F cosines."""

    def __init__(self, n_freqs: int, scale: float = 10.0):
        super().__init__()
        if n_freqs < 1:
            raise ValueError(f"Fourier features need n_freqs >= 1, got {n_freqs}")
        self.n_freqs = n_freqs
        self.scale = scale
        self.n_ext = 2 * n_freqs  # B: F rows of (b_x, b_y)
        self.out_dim = 2 * n_freqs

    def basis(self, raw: Tensor) -> Tensor:
        """(N, 2F) hypernetwork outputs -> B, (N, F, 2)."""
        return self.scale * raw.reshape(raw.shape[0], self.n_freqs, 2)

    def forward(self, coords: Tensor, raw: Tensor) -> Tensor:
        proj = self.basis(raw) @ coords.t()  # (N, F, P): one matmul per image over every pixel
        return torch.cat([proj.sin(), proj.cos()], dim=1)
