"""The generator benchmark: rows and their fields, alternation, ordering by cost, memory, bad input."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from pipeline.metrics.throughput import benchmark_generators


class Toy(nn.Module):
    """A generator stand-in that takes `delay` seconds per batch and holds `extra_mb` while it runs."""

    def __init__(self, delay: float = 0.0, extra_mb: int = 0, resolution: int = 8):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.z_dim, self.resolution, self.delay, self.extra_mb = 4, resolution, delay, extra_mb
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        held = torch.ones(self.extra_mb * 2**18) if self.extra_mb else None  # float32: 4 bytes each
        time.sleep(self.delay)
        out = self.lin(z)[:, :, None, None].expand(-1, -1, self.resolution, self.resolution)
        del held
        return out


def test_rows_fields_and_ordering():
    # The slow toy holds its 64 MB for 100 ms so the 1 ms RSS poller sees it even on a loaded machine.
    fast, slow = Toy(0.0), Toy(0.1, extra_mb=64)
    rows = benchmark_generators([("fast", fast), ("slow", slow)], resolution=8, batch=2, warmup=1, repeats=3, iters=2)
    assert [r["row"] for r in rows] == ["fast", "slow"]
    for r in rows:
        assert {"row", "resolution", "batch", "device", "dtype", "img_per_s", "peak_mem_mb"} <= set(r)
        assert r["resolution"] == 8 and r["batch"] == 2 and r["device"] == "cpu" and r["dtype"] == "fp32"
        assert len(r["img_per_s_runs"]) == 3 and r["img_per_s"] > 0
    assert rows[0]["img_per_s"] > 2 * rows[1]["img_per_s"]
    assert rows[1]["img_per_s"] < 2 / 0.1 * 1.01  # 2 images per 100 ms batch at best
    assert fast.calls == slow.calls == 1 + 3 * 2  # warm-up, then every round runs every row
    # Peak memory on the CPU is sampled resident-set growth: memory the allocator kept from earlier work
    # (other tests in this process) hides new allocations, so only a lower bound is checked here.
    assert all(r["peak_mem_mb"] >= r["params_mb"] * 0.99 for r in rows)


def test_bad_input():
    with pytest.raises(ValueError, match="built for 8 px, not 16"):
        benchmark_generators([("a", Toy())], resolution=16, batch=1)
    with pytest.raises(ValueError, match="bf16 autocast is measured on CUDA only"):
        benchmark_generators([("a", Toy())], resolution=8, batch=1, dtype="bf16")
    with pytest.raises(ValueError, match="unique"):
        benchmark_generators([("a", Toy()), ("a", Toy())], resolution=8, batch=1)
