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
    ema_params, params = list(ema.parameters()), [p.detach() for p in generator.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"EMA copy has {len(ema_params)} parameters, the generator {len(params)}")
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # one fused pass instead of one op per tensor
    ema_buffers, buffers = list(ema.buffers()), list(generator.buffers())
    if len(ema_buffers) != len(buffers):
        raise ValueError(f"EMA copy has {len(ema_buffers)} buffers, the generator {len(buffers)}")
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)
