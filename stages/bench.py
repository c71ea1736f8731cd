"""`pipeline bench`: generator throughput and peak memory of several rows, measured alternately in one process."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from pipeline.config import ConfigError, Params
from pipeline.devices import resolve_device_flag
from pipeline.metrics.throughput import benchmark_generators
from pipeline.models.registry import build_generator


def spec_for(params: Params, row: str, resolution: int):
    """The paper-size spec from `macs.rows` when it has one at `resolution`, else the profile's row."""
    if resolution in params.macs.rows.get(row, {}):
        return params.macs.rows[row][resolution]
    if row in params.rows and params.rows[row].generator.resolution == resolution:
        return params.rows[row].generator
    raise ConfigError(
        f"bench: row {row!r} has no generator at {resolution} px; paper-size rows at "
        f"{sorted({r for by_res in params.macs.rows.values() for r in by_res})} come from `macs.rows`, "
        f"toy rows from `rows` at their own resolution"
    )


def run(params: Params, **overrides: Any) -> list[dict[str, Any]]:
    """Benchmark `bench.rows` with `overrides` (the CLI flags) on top, validated like params.yaml."""
    cfg = checked_overrides(params.bench, overrides, "pipeline bench")
    device = resolve_device_flag(cfg.device, "pipeline bench")
    torch.manual_seed(0)
    generators = [(row, build_generator(spec_for(params, row, cfg.resolution))) for row in cfg.rows]
    return benchmark_generators(
        generators,
        cfg.resolution,
        cfg.batch,
        device=device,
        dtype=cfg.dtype,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        iters=cfg.iters,
    )


def checked_overrides(section: BaseModel, overrides: dict[str, Any], command: str) -> Any:
    """`section` with command-line values on top, checked by the section's own rules (a bad flag is a
    one-line error naming the flag and what is allowed, as a bad params.yaml value is)."""
    try:
        return type(section).model_validate({**section.model_dump(), **overrides})
    except ValidationError as err:
        problems = "; ".join(
            f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"{command}: {problems}") from None
