"""The generated dense layer (paper section 2): every weight comes from the hypernetwork.

W = sigma_w * raw_W and b = sigma_b * raw_b, one (W, b) per image. Features are laid out as
(N, C, P): N images, C channels, P pixels, so a layer is one batched matmul W @ x over all pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GeneratedLinear(nn.Module):
    """n_in -> n_out with weight and bias predicted per image; no shared parameters."""

    def __init__(self, n_in: int, n_out: int, weight_std: float | None = None, bias_std: float | None = None):
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"GeneratedLinear needs positive sizes, got {n_in} -> {n_out}")
        self.n_in, self.n_out = n_in, n_out
        self.weight_std = math.sqrt(2.0 / n_in) if weight_std is None else weight_std
        self.bias_std = 0.2 * self.weight_std if bias_std is None else bias_std
        self.n_ext = n_in * n_out + n_out

    def weight_and_bias(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """(N, n_ext) -> W (N, n_out, n_in), b (N, n_out)."""
        n = raw.shape[0]
        w = self.weight_std * raw[:, : self.n_in * self.n_out].reshape(n, self.n_out, self.n_in)
        b = self.bias_std * raw[:, self.n_in * self.n_out :]
        return w, b

    def forward(self, x: Tensor, raw: Tensor) -> Tensor:
        w, b = self.weight_and_bias(raw)
        return torch.baddbmm(b.unsqueeze(2), w, x)  # (N, n_out, P)

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, n_ext={self.n_ext}"
