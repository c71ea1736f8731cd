"""Exponential moving average of the generator's weights (samples and metrics use the EMA copy)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of the generator to hold the average; it starts equal to the generator."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


def ema_beta(beta: float, batch: int, images_seen: int, rampup: float | None) -> float:
    """The EMA coefficient of a step that starts after `images_seen` images, `batch` images per step.

    rampup None: `beta` itself, every step (the paper text). Otherwise StyleGAN2-ADA's ramp-up: with
    `beta` read as the full half-life h = batch * ln 0.5 / ln beta images, the step uses the half-life
    min(h, images_seen * rampup), i.e. beta_t = 0.5 ** (batch / max(min(h, images_seen * rampup), 1e-8)),
    so G_ema follows G closely early on, when G is far from anything worth averaging."""
    if rampup is None:
        return beta
    if rampup <= 0:
        raise ValueError(f"EMA ramp-up must be positive, got {rampup}; give e.g. 0.05 or None for no ramp-up")
    if beta <= 0:
        return 0.0  # half-life 0: G_ema copies G at every step, ramp or not
    half_life = batch * math.log(0.5) / math.log(beta)
    ramped = images_seen * rampup
    if ramped >= half_life:
        return beta  # the configured value itself, not 0.5 ** (batch / h), which can differ in the last bit
    return 0.5 ** (batch / max(ramped, 1e-8))  # the 1e-8 floor as StyleGAN2-ADA: step 0 gives beta 0


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
