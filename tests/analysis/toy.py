"""Tiny generators following the generator interface (z_dim, w_dim, resolution, mapping, synthesize)."""

from __future__ import annotations

import torch
from torch import nn


class ToyGenerator(nn.Module):
    """z (6) -> w (6) through an invertible linear map + LeakyReLU; w -> 8 x 8 images through a
    linear layer and tanh. Injective in both spaces, so a projection can recover the latent."""

    z_dim, w_dim, resolution = 6, 6, 8

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.map = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3 * 8 * 8)
        with torch.no_grad():
            q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
            self.map.weight.copy_(q)
            self.map.bias.zero_()
            self.out.weight.copy_(torch.randn(3 * 64, 6, generator=g) * 0.3)
            self.out.bias.zero_()

    def mapping(self, z):
        return nn.functional.leaky_relu(self.map(z), 0.5)

    def synthesize(self, w, grid=None):
        return torch.tanh(self.out(w)).view(-1, 3, 8, 8)

    def forward(self, z):
        return self.synthesize(self.mapping(z))


class LinearKeypointGenerator(nn.Module):
    """Images whose first row holds 0.5 + 0.02 * A w (inside [-1, 1], so clamping never bites): keypoints read off that row (`RowKeypoints`)
    are an exact linear function of w and (the mapping being linear) of z."""

    z_dim, w_dim, resolution, num_keypoints = 4, 4, 8, 3

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("M", torch.randn(4, 4, generator=g) / 2 + torch.eye(4))
        self.register_buffer("A", torch.randn(2 * self.num_keypoints, 4, generator=g))
        self.dummy = nn.Parameter(torch.zeros(()))  # the code under test looks up G's device from a parameter

    def mapping(self, z):
        return z @ self.M.T + 0.1

    def synthesize(self, w, grid=None):
        img = torch.zeros(len(w), 3, 8, 8)
        img[:, 0, 0, : 2 * self.num_keypoints] = 0.5 + 0.02 * (w @ self.A.T)
        return img + self.dummy


class RowKeypoints:
    names = ("a", "b", "c")

    def __call__(self, images):
        return images[:, 0, 0, :6].reshape(-1, 3, 2).numpy().astype("float32")
