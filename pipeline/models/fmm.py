"""FMM, factorised multiplicative modulation (paper section 2, the first contribution).

A layer n_in -> n_out keeps a shared matrix W_s; the hypernetwork predicts A (n_out x r),
B (r x n_in) and a bias per image, and the image's weight is W = W_s * act(A B) (elementwise).
`act` is 2*sigmoid by default (released code: the modulation is centred at 1), plain sigmoid as the
paper writes it, or one of two forms without activation (Table 2, "without FMM activation"; the
paper does not say which): identity, W = W_s * A B, centred at 0, or centred, W = W_s * (1 + A B /
sqrt(r)), the form of every non-sigmoid variant in the authors' later code (their StyleGAN2-ADA
generator). Rank 1 is squeeze-and-excitation; full rank is a plain hypernetwork layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pipeline.models.specs import FMM_ACTIVATIONS, FMMActivation


def fmm_activation(x: Tensor, activation: FMMActivation, rank: int = 1) -> Tensor:
    """act(A B) for x = A B of rank `rank` (used by "centred" to keep the product's variance at 1)."""
    if activation == "sigmoid2":
        return 2.0 * torch.sigmoid(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "identity":
        return x
    if activation == "centred":
        return 1.0 + x / math.sqrt(rank)
    raise ValueError(f"unknown FMM activation {activation!r}; allowed: {', '.join(FMM_ACTIVATIONS)}")


class FMMLinear(nn.Module):
    """n_in -> n_out with W = W_s * act(A B) and a generated bias; A, B, bias come per image."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        rank: int = 10,
        activation: FMMActivation = "sigmoid2",
        weight_std: float | None = None,
        bias_std: float | None = None,
    ):
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"FMMLinear needs positive sizes, got {n_in} -> {n_out}")
        if not 1 <= rank <= min(n_in, n_out):
            raise ValueError(
                f"FMM rank {rank} does not fit the layer {n_in} -> {n_out}: "
                f"allowed 1 .. {min(n_in, n_out)} (min of the layer's sizes)"
            )
        if activation not in FMM_ACTIVATIONS:
            raise ValueError(f"unknown FMM activation {activation!r}; allowed: {', '.join(FMM_ACTIVATIONS)}")
        self.n_in, self.n_out, self.rank, self.activation = n_in, n_out, rank, activation
        weight_std = math.sqrt(2.0 / n_in) if weight_std is None else weight_std
        self.bias_std = 0.2 * math.sqrt(2.0 / n_in) if bias_std is None else bias_std
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * weight_std)  # W_s, shared by all images
        self.n_ext = rank * (n_out + n_in) + n_out  # A, B, bias

    def factors(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, n_ext) -> A (N, n_out, r), B (N, r, n_in), bias (N, n_out), in this order in raw."""
        n, r = raw.shape[0], self.rank
        a_end = self.n_out * r
        b_end = a_end + r * self.n_in
        a = raw[:, :a_end].reshape(n, self.n_out, r)
        b = raw[:, a_end:b_end].reshape(n, r, self.n_in)
        return a, b, self.bias_std * raw[:, b_end:]

    def weight_and_bias(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """The per-image weight W_s * act(A B), (N, n_out, n_in), and bias, (N, n_out)."""
        a, b, bias = self.factors(raw)
        return self.weight * fmm_activation(a @ b, self.activation, self.rank), bias

    def forward(self, x: Tensor, raw: Tensor) -> Tensor:
        w, bias = self.weight_and_bias(raw)  # once per image ...
        return torch.baddbmm(bias.unsqueeze(2), w, x)  # ... then one batched matmul over all pixels

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, rank={self.rank}, activation={self.activation}, n_ext={self.n_ext}"
