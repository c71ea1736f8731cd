"""Generator throughput (images/s) and peak memory, for `pipeline bench` and Table 2's img/s column.

All generators are measured in one process: a warm-up pass of each first, then `repeats` rounds in
which every generator runs `iters` batches in turn (alternating, so a slow phase of a shared
machine hits every row alike); the median over rounds is reported.

Peak memory is what one generator needs: its parameters plus the largest growth of allocated memory
above the level before its batches. On CUDA the growth comes from the caching allocator
(torch.cuda.max_memory_allocated); on the CPU from the process's resident set, sampled every
millisecond by a thread (the allocator may reuse pages another row freed, so on the CPU it is a
lower bound for all but the first row).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import psutil
import torch
from torch import nn

from pipeline.metrics.options import BENCH_DTYPES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"


class _RSSPeak:
    """Highest resident set size of this process while the context is open (sampling thread)."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s, self.peak = interval_s, 0
        self._proc = psutil.Process()
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> _RSSPeak:
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


def benchmark_generators(
    generators: Sequence[tuple[str, nn.Module]],
    resolution: int,
    batch: int,
    device: torch.device | str = "cpu",
    dtype: Literal["fp32", "bf16"] = "fp32",
    warmup: int = 2,
    repeats: int = 5,
    iters: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per generator: row, resolution, batch, device, dtype, img_per_s (median), peak_mem_mb,
    plus img_per_s_runs (every round) and params_mb."""
    device = torch.device(device)
    if dtype not in BENCH_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(BENCH_DTYPES)}")
    if dtype == "bf16" and device.type != "cuda":
        raise ValueError("bf16 autocast is measured on CUDA only; use dtype fp32 on the CPU")
    names = [name for name, _ in generators]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    for name, g in generators:
        if int(g.resolution) != resolution:
            raise ValueError(
                f"generator {name!r} is built for {g.resolution} px, not {resolution}; build it at the benchmark resolution"
            )
    models = [g.to(device).eval() for _, g in generators]
    z = [torch.randn(batch, g.z_dim, generator=torch.Generator().manual_seed(seed)).to(device) for g in models]

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

    @torch.no_grad()
    def run(i: int, n: int) -> None:
        with autocast():
            for _ in range(n):
                models[i](z[i])

    peaks = [0] * len(models)
    for i in range(len(models)):  # warm-up, which also measures memory (the same work as a timed batch)
        _sync(device)
        if device.type == "cuda":
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run(i, warmup)
            _sync(device)
            growth = torch.cuda.max_memory_allocated(device) - base
        else:
            with _RSSPeak() as rss:
                run(i, warmup)
            growth = rss.peak - rss.start
        peaks[i] = _param_bytes(models[i]) + max(growth, 0)

    speeds: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i in range(len(models)):
            _sync(device)
            t0 = time.perf_counter()
            run(i, iters)
            _sync(device)
            speeds[i].append(batch * iters / (time.perf_counter() - t0))

    name = device_name(device)
    return [
        {
            "row": row,
            "resolution": resolution,
            "batch": batch,
            "device": name,
            "dtype": dtype,
            "img_per_s": statistics.median(speeds[i]),
            "peak_mem_mb": peaks[i] / 2**20,
            "params_mb": _param_bytes(models[i]) / 2**20,
            "img_per_s_runs": speeds[i],
        }
        for i, row in enumerate(names)
    ]
