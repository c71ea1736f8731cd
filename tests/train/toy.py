"""Tiny models and data for training tests: a few thousand parameters, 8 x 8 images."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn
from torch.utils.data import Dataset

Z_DIM, RES = 4, 8


class ToyGenerator(nn.Module):
    """Follows the generator interface: mapping, synthesize, forward, param_groups."""

    z_dim, w_dim, resolution = Z_DIM, 8, RES

    def __init__(self):
        super().__init__()
        self.hyper = nn.Sequential(nn.Linear(Z_DIM, 8), nn.LeakyReLU(0.2))
        self.inr = nn.Linear(8, 3 * RES * RES)

    def mapping(self, z):
        return self.hyper(z)

    def synthesize(self, w, grid=None):
        return torch.tanh(self.inr(w)).view(-1, 3, RES, RES)

    def forward(self, z):
        return self.synthesize(self.mapping(z))

    def param_groups(self):
        return {"inr": list(self.inr.parameters()), "hyper": list(self.hyper.parameters())}


class NoisyToyGenerator(ToyGenerator):
    """Adds noise from torch's global RNG, like StyleGAN2's noise inputs and style mixing: exact resume
    then needs the RNG states restored and no stray draws between steps."""

    def forward(self, z):
        return super().forward(z) + 0.05 * torch.randn(z.shape[0], 3, RES, RES)


class ToyDiscriminator(nn.Module):
    """An MLP on each image alone: no coupling between the samples of a batch (no minibatch-stddev),
    so a batch split over processes gives the same gradients as the whole batch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * RES * RES, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


class ToyImages(Dataset):
    """Deterministic images in [-1, 1]; `nan_from` makes item fetches from that count on return NaN,
    `kill_at` SIGKILLs the process at that fetch (a crash at an arbitrary point of training)."""

    def __init__(self, n: int = 32, nan_from: int | None = None, kill_at: int | None = None):
        g = torch.Generator().manual_seed(123)
        base = torch.linspace(-1, 1, RES).view(1, 1, 1, RES)
        self.images = (0.5 * base + 0.5 * torch.rand(n, 3, RES, RES, generator=g) * 2 - 0.5).clamp(-1, 1)
        self.nan_from, self.kill_at, self.fetches = nan_from, kill_at, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.fetches += 1
        if self.kill_at is not None and self.fetches == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        image = self.images[i]
        if self.nan_from is not None and self.fetches >= self.nan_from:
            image = torch.full_like(image, float("nan"))
        return image, 0


def toy_options(**overrides):
    from pipeline.train.options import TrainConfig

    base = dict(
        total_batch=8,
        iterations=6,
        snapshot_every=2,
        log_every=1,
        sample_grid=2,
        device="cpu",
        lr={"d": 0.01, "inr": 0.01, "hyper": 0.005},
    )
    return TrainConfig(**{**base, **overrides})


class StyledToyGenerator(ToyGenerator):
    """Per-layer styles like StyleGAN2 (broadcast_ws; synthesize takes (N, L, w_dim)), so path-length
    regularisation applies: the image is a linear map of the L styles, then tanh."""

    num_ws = 2

    def broadcast_ws(self, w):
        return w[:, None].expand(-1, self.num_ws, -1) if w.ndim == 2 else w

    def synthesize(self, w, grid=None):
        ws = self.broadcast_ws(w)
        return torch.tanh(self.inr(ws[:, 0]) + 0.5 * self.inr(ws[:, 1])).view(-1, 3, RES, RES)
