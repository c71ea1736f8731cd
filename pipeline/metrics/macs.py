"""Generator cost: #params and MACs per image, under the paper's convention and as executed.

Each spec's generator is built on the `meta` device, so even the 2-billion-parameter rows cost no
memory. Two MAC counts, per image:

- paper convention (`gmacs_paper`): the model's own `macs_paper(resolution)`, the rule paper.md
  reverse-engineers for Table 1: in x out x pixels of each main-path linear layer (for StyleGAN2,
  in x out x 9 x pixels of each 3x3 conv), skip columns, Fourier projection, to-RGB, biases,
  activations and FMM's A x B products excluded; hypernetwork / mapping network once per image.
- true (`gmacs_true`): every multiply-accumulate of a matrix product or convolution executed by
  one forward pass of batch 1, counted by `torch.utils.flop_counter.FlopCounterMode` (flops / 2)
  on meta tensors: mm, addmm, bmm, baddbmm, matmul, convolutions (transposed ones at their input
  size). Elementwise work (activations, FMM's W_s * act(AB), sin/cos, interpolation, noise,
  demodulation) is not counted.

Fig. 9: the cost of an image at each resolution from 64 to the trained one. Coordinate-based rows
evaluate a sparser grid (`synthesize(w, Grid(r))`); StyleGAN2 must generate at full size, so its
cost is the full-size one at every resolution (the downsampling filter is not counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models.coords import Grid
from pipeline.models.registry import build_generator, parse_generator_spec

# The paper's Table 1 cost columns: (GMACs per image, #params of G in millions); rows without a
# number in the paper are absent. The 1024 cells (INR-GAN and StyleGAN2 only) are the paper's FFHQ 1024 costs.
PAPER_TABLE1_COST: dict[str, dict[int, tuple[float, float]]] = {
    "latent_inr": {128: (30.09, 7.1), 256: (120.33, 7.1)},
    "hyper_inr": {128: (23.54, 2055.5), 256: (88.01, 2055.5)},
    "hyper_fourier": {128: (28.02, 2312.02), 256: (105.34, 2312.02)},
    "hyper_fmm": {128: (25.87, 108.2), 256: (103.19, 108.2)},
    "inr_gan": {128: (21.58, 107.03), 256: (38.76, 107.03), 1024: (47.35, 117.3)},
    "stylegan2": {256: (84.36, 30.03), 1024: (143.18, 30.37)},
}


def build_on_meta(spec: Mapping[str, Any] | BaseModel) -> nn.Module:
    """The spec's generator with every tensor on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        return build_generator(spec).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_true_macs(generator: nn.Module, resolution: int | None = None) -> int:
    """MACs of matrix products and convolutions executed for one image (batch 1) by one forward pass.

    Autograd stays enabled: FlopCounterMode's module tracker fails on some models under no_grad,
    and on meta tensors recording the graph costs nothing.
    """
    z = torch.randn(1, generator.z_dim, device="meta")
    with FlopCounterMode(display=False) as counter:
        if resolution is None or resolution == generator.resolution or not hasattr(generator, "render"):
            generator(z)
        else:
            generator.synthesize(generator.mapping(z), Grid(resolution))
    return counter.get_total_flops() // 2


def cost_row(spec: Mapping[str, Any] | BaseModel, row: str | None = None) -> dict[str, Any]:
    """{row, resolution, params, gmacs_paper, gmacs_true} of one generator at its trained resolution."""
    spec = parse_generator_spec(spec)
    generator = build_on_meta(spec)
    return {
        "row": row or spec.kind,
        "resolution": generator.resolution,
        "params": count_params(generator),
        "gmacs_paper": generator.macs_paper() / 1e9,
        "gmacs_true": count_true_macs(generator) / 1e9,
    }


def fig9_curve(
    spec: Mapping[str, Any] | BaseModel, resolutions: list[int] | None = None, row: str | None = None
) -> list[dict[str, Any]]:
    """GMACs to produce an image at each resolution (default 64, 128, ..., trained) from one generator."""
    spec = parse_generator_spec(spec)
    generator = build_on_meta(spec)
    trained = generator.resolution
    if resolutions is None:
        resolutions = [r for r in (2**k for k in range(6, 14)) if r <= trained]
    for r in resolutions:
        if r > trained or r < 1 or r & (r - 1):
            raise ValueError(
                f"Fig. 9 resolution {r} is not available from a generator trained at {trained}: "
                f"expected a power of two no larger than {trained}"
            )
    row = row or spec.kind
    full_true = None
    points = []
    for r in resolutions:
        if hasattr(generator, "render"):
            true = count_true_macs(generator, r)
        else:  # generates at full size, then downsamples
            full_true = count_true_macs(generator) if full_true is None else full_true
            true = full_true
        points.append(
            {
                "row": row,
                "trained_resolution": trained,
                "resolution": r,
                "gmacs_paper": generator.macs_paper(r) / 1e9,
                "gmacs_true": true / 1e9,
            }
        )
    return points


def with_paper_numbers(cost: Mapping[str, Any]) -> dict[str, Any]:
    """A cost_row result plus the paper's Table 1 numbers and relative differences (None where absent)."""
    out = dict(cost)
    paper = PAPER_TABLE1_COST.get(out["row"], {}).get(out["resolution"])
    out["paper_gmacs"] = paper[0] if paper else None
    out["paper_params_m"] = paper[1] if paper else None
    out["gmacs_rel_diff"] = (out["gmacs_paper"] / paper[0] - 1.0) if paper else None
    out["params_rel_diff"] = (out["params"] / 1e6 / paper[1] - 1.0) if paper else None
    return out


def table1_costs(rows: Mapping[str, Mapping[int, Mapping[str, Any] | BaseModel]]) -> list[dict[str, Any]]:
    """Cost of every row at every resolution (e.g. the `macs.rows` section of params.yaml), with the
    paper's numbers beside ours."""
    return [
        with_paper_numbers(cost_row(spec, row)) for row, by_res in rows.items() for _, spec in sorted(by_res.items())
    ]
