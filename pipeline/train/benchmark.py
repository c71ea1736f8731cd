"""Training throughput: images per second of full training steps (D step with R1, G step, EMA)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from pipeline.train.distributed import DistContext, pick_device
from pipeline.train.options import TrainConfig
from pipeline.train.trainer import GANTrainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_training(
    generator: nn.Module,
    discriminator: nn.Module,
    options: TrainConfig,
    batch: int,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
) -> dict[str, Any]:
    """Median time of `steps` training steps on random reals after `warmup` untimed ones.

    R1 follows options (every step by default), so the figure is the paper's training cost per image.
    Returns images/s, the median and quartiles of the step time, and peak GPU memory where known."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"benchmark needs steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    dev = pick_device(device if device != "auto" else options.device, 0)
    ctx = DistContext(device=dev)
    trainer = GANTrainer(generator, discriminator, options, ctx, per_rank=batch)
    resolution, z_dim = generator.resolution, generator.z_dim
    gen = torch.Generator().manual_seed(0)
    reals = (torch.rand(batch, 3, resolution, resolution, generator=gen) * 2 - 1).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        z_d, z_g = torch.randn(2, batch, z_dim, generator=gen).to(dev)
        _sync(dev)
        t0 = time.perf_counter()
        trainer.step(reals, z_d, z_g, i)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [median, median, median]
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch": batch,
        "resolution": resolution,
        "mixed_precision": options.mixed_precision,
        "steps": steps,
        "warmup": warmup,
        "step_s_median": median,
        "step_s_q1": q[0],
        "step_s_q3": q[2],
        "images_per_s": batch / median,
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
