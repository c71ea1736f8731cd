"""The hypernetwork G (paper section 2): noise z -> W space -> every external parameter of the INR.

z (512) -> Linear 512->1024 + ReLU -> residual layers h + alpha * ReLU(Linear(h)) (alpha learned,
initialised to 0.1) -> the "connector", one Linear 1024 -> N_ext that emits the INR's parameters in
forward order. The trunk's output (before the connector) is the W space used by KPL and truncation.
The connector holds 90-99% of the parameters; its bias is scaled by 1/sqrt(hidden) = 1/32 at init.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ResidualLayer(nn.Module):
    """h -> h + alpha * ReLU(Linear(h)) with a learned scalar alpha."""

    def __init__(self, dim: int, alpha_init: float = 0.1):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.full((), alpha_init))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.alpha * torch.relu(self.linear(h))


class HyperNetwork(nn.Module):
    """Trunk z -> w (N, hidden_dim), and when n_ext > 0 a connector w -> INR parameters (N, n_ext)."""

    def __init__(
        self, n_ext: int, z_dim: int = 512, hidden_dim: int = 1024, n_residual: int = 2, alpha_init: float = 0.1
    ):
        super().__init__()
        if n_ext < 0 or z_dim < 1 or hidden_dim < 1 or n_residual < 0:
            raise ValueError(
                f"bad hypernetwork sizes: n_ext={n_ext}, z_dim={z_dim}, "
                f"hidden_dim={hidden_dim}, n_residual={n_residual}"
            )
        self.z_dim, self.hidden_dim, self.n_ext = z_dim, hidden_dim, n_ext
        self.input = nn.Linear(z_dim, hidden_dim)
        self.residual = nn.ModuleList(ResidualLayer(hidden_dim, alpha_init) for _ in range(n_residual))
        self.connector = nn.Linear(hidden_dim, n_ext) if n_ext > 0 else None
        if self.connector is not None:
            with torch.no_grad():
                self.connector.bias.mul_(1.0 / math.sqrt(hidden_dim))

    def trunk(self, z: Tensor) -> Tensor:
        """z (N, z_dim) -> w (N, hidden_dim), the W space."""
        h = torch.relu(self.input(z))
        for layer in self.residual:
            h = layer(h)
        return h

    def inr_params(self, w: Tensor) -> Tensor:
        """w (N, hidden_dim) -> raw INR parameters (N, n_ext)."""
        if self.connector is None:
            raise ValueError("this hypernetwork has no connector (n_ext = 0): it only produces w")
        return self.connector(w)

    def forward(self, z: Tensor) -> Tensor:
        return self.inr_params(self.trunk(z))

    def macs_paper(self) -> int:
        """Once per image: every Linear's in x out, biases excluded."""
        return self.z_dim * self.hidden_dim + len(self.residual) * self.hidden_dim**2 + self.hidden_dim * self.n_ext
