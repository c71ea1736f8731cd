"""Exponential moving average of the generator's weights (samples and metrics use the EMA copy)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of the generator to hold the average; it starts equal to the generator."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * generator for parameters; buffers (running means of w and
    the like) are copied, as StyleGAN2 does, since they are statistics rather than weights."""
    for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), generator.buffers(), strict=True):
        b_ema.copy_(b)
