"""Device choice for stages and commands: pick_device's errors as ConfigErrors the CLI reports in one line."""

from __future__ import annotations

import torch

from pipeline.config import ConfigError
from pipeline.metrics.scoring import pick_device


def resolve_device(device: str) -> torch.device:
    """pipeline.metrics.scoring.pick_device for a params.yaml value, its error raised as a ConfigError."""
    try:
        return pick_device(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_device_flag(device: str, command: str) -> str:
    """pick_device for a command-line value: auto -> cuda when available, else cpu; an unknown
    name or cuda without a GPU is a one-line error naming the flag, not a traceback."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{command}: --device {device!r} is not one of auto, cpu, cuda")
    try:
        return pick_device(device).type
    except ValueError:
        raise ConfigError(
            f"{command}: --device cuda, but no CUDA device is available here; use --device cpu or auto"
        ) from None
