"""INR decoders whose parameters come from the hypernetwork (paper section 2).

Features are (N, C, P): N images, C channels, P = S*S pixels in the grid's row-major order. Every
layer computes its weight once per image and applies it to all pixels with one batched matmul.

- `SingleScaleINR`: rows hyper_inr / hyper_fourier / hyper_fmm: an embedding of the coordinates
  (raw (x, y) or Fourier features e), then `n_layers` layers of `width` (generated dense or FMM),
  each after the first taking concat[h, e], a generated to-RGB layer and tanh.
- `MultiScaleINR`: INR-GAN's decoder: K blocks, each at its own resolution, joined by connectors;
  to-RGB outputs accumulate across blocks as img = to_rgb(h) + upsample(img_prev), then tanh.

Both consume a flat parameter vector (N, n_ext) in forward order and expose
`render(raw, grid)` and `macs_paper(resolution)` (paper.md, "How the paper counted MACs").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.coords import Grid
from pipeline.models.fmm import FMMActivation, FMMLinear
from pipeline.models.fourier import FourierFeatures
from pipeline.models.layers import GeneratedLinear
from pipeline.models.specs import UPSAMPLING_MODES, Upsampling


class ParamReader:
    """Hands out consecutive column slices of the raw parameter matrix (N, n_ext), in forward order."""

    def __init__(self, raw: Tensor, n_ext: int):
        if raw.dim() != 2 or raw.shape[1] != n_ext:
            raise ValueError(f"expected INR parameters of shape (N, {n_ext}), got {tuple(raw.shape)}")
        self.raw, self.offset = raw, 0

    def take(self, n: int) -> Tensor:
        part = self.raw[:, self.offset : self.offset + n]
        self.offset += n
        return part


def upsample(x: Tensor, src: int, dst: int, mode: Upsampling) -> Tensor:
    """(N, C, src*src) -> (N, C, dst*dst) by nearest or bilinear interpolation on the square grid."""
    if src == dst:
        return x
    n, c, _ = x.shape
    img = x.reshape(n, c, src, src)
    if mode == "nearest":
        img = F.interpolate(img, size=(dst, dst), mode="nearest")
    elif mode == "bilinear":
        img = F.interpolate(img, size=(dst, dst), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown upsampling {mode!r}; allowed: {', '.join(UPSAMPLING_MODES)}")
    return img.reshape(n, c, dst * dst)


def to_image(x: Tensor, resolution: int) -> Tensor:
    """(N, 3, S*S) -> (N, 3, S, S), squashed into [-1, 1] by tanh."""
    return torch.tanh(x).reshape(x.shape[0], x.shape[1], resolution, resolution)


def skip_layer(layer: nn.Module, h: Tensor, e: Tensor | None, raw: Tensor) -> Tensor:
    """ReLU(layer(concat[h, e])) without building the concatenation: W [h; e] + b = W_h h + (W_e e + b),
    two batched matmuls into one output (the same values; the (N, C_h + C_e, P) copy and its
    backward split were ~10% of an INR training step on a CPU). `layer` is a GeneratedLinear or
    FMMLinear; e None means the layer sees h alone."""
    w, b = layer.weight_and_bias(raw)
    if e is None:
        out = torch.baddbmm(b.unsqueeze(2), w, h)
    else:
        c = h.shape[1]
        out = torch.baddbmm(torch.baddbmm(b.unsqueeze(2), w[:, :, c:], e), w[:, :, :c], h)
    return torch.relu_(out)  # in place: baddbmm's backward does not need its output


def _make_layer(
    kind: Literal["dense", "fmm"], n_in: int, n_out: int, rank: int, activation: FMMActivation
) -> nn.Module:
    if kind == "dense":
        return GeneratedLinear(n_in, n_out)
    if kind == "fmm":
        return FMMLinear(n_in, n_out, rank=rank, activation=activation)
    raise ValueError(f"unknown INR layer type {kind!r}; allowed: dense, fmm")


class SingleScaleINR(nn.Module):
    """One-resolution INR: embedding e(p) -> n_layers x (layer + ReLU) -> to-RGB -> tanh."""

    def __init__(
        self,
        resolution: int,
        width: int,
        n_layers: int,
        embedding: Literal["coords", "fourier"] = "fourier",
        n_freqs: int = 256,
        fourier_scale: float = 10.0,
        layer: Literal["dense", "fmm"] = "fmm",
        rank: int = 10,
        fmm_activation: FMMActivation = "sigmoid2",
        skip_coords: bool = True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"an INR needs n_layers >= 1, got {n_layers}")
        if embedding not in ("coords", "fourier"):
            raise ValueError(f"unknown coordinate embedding {embedding!r}; allowed: coords, fourier")
        self.resolution, self.width, self.skip_coords = resolution, width, skip_coords
        self.fourier = FourierFeatures(n_freqs, fourier_scale) if embedding == "fourier" else None
        self.e_dim = self.fourier.out_dim if self.fourier is not None else 2
        in_dims = [self.e_dim] + [width + (self.e_dim if skip_coords else 0)] * (n_layers - 1)
        self.layers = nn.ModuleList(_make_layer(layer, d, width, rank, fmm_activation) for d in in_dims)
        self.to_rgb = GeneratedLinear(width, 3)
        self.n_ext = (
            (self.fourier.n_ext if self.fourier is not None else 0)
            + sum(m.n_ext for m in self.layers)
            + self.to_rgb.n_ext
        )

    def render(self, raw: Tensor, grid: Grid) -> Tensor:
        params = ParamReader(raw, self.n_ext)
        coords = grid.coords(raw.device, raw.dtype)  # (P, 2)
        if self.fourier is not None:
            e = self.fourier(coords, params.take(self.fourier.n_ext))
        else:
            e = coords.t().unsqueeze(0).expand(raw.shape[0], 2, coords.shape[0])
        h = e
        for i, layer in enumerate(self.layers):
            h = skip_layer(layer, h, e if i > 0 and self.skip_coords else None, params.take(layer.n_ext))
        return to_image(self.to_rgb(h, params.take(self.to_rgb.n_ext)), grid.resolution)

    def fourier_bases(self, raw: Tensor) -> list[Tensor]:
        """[B], (N, F, 2), the frequencies the hypernetwork chose (Fig. 17); [] for raw (x, y) inputs.
        The parameters start with the Fourier basis (see render)."""
        ParamReader(raw, self.n_ext)  # checks the shape
        return [] if self.fourier is None else [self.fourier.basis(raw[:, : self.fourier.n_ext])]

    def macs_paper(self, resolution: int | None = None) -> int:
        """Main-path in x out per pixel (skip columns, Fourier projection, to-RGB excluded) x pixels."""
        s = self.resolution if resolution is None else resolution
        per_pixel = self.e_dim * self.width + (len(self.layers) - 1) * self.width**2
        return per_pixel * s * s


@dataclass(frozen=True)
class BlockConfig:
    """One multi-scale block: its resolution, width, Fourier features F, layers, and to-RGB."""

    resolution: int
    width: int
    n_freqs: int
    n_layers: int
    to_rgb: bool = False


class Connector(nn.Module):
    """Joins block k-1 to block k: ReLU(upsample(FMM(h_prev)) + FMM(e_k)).

    The low-resolution embedder runs at block k-1's resolution, before upsampling.
    Weight and bias std: sqrt(1/d_prev) and sqrt(1/2F) for the two embedders.
    """

    def __init__(
        self, prev_width: int, e_dim: int, width: int, rank: int, activation: FMMActivation, upsampling: Upsampling
    ):
        super().__init__()
        s_lr, s_e = math.sqrt(1.0 / prev_width), math.sqrt(1.0 / e_dim)
        self.lowres_embed = FMMLinear(prev_width, width, rank, activation, weight_std=s_lr, bias_std=s_lr)
        self.coord_embed = FMMLinear(e_dim, width, rank, activation, weight_std=s_e, bias_std=s_e)
        self.upsampling = upsampling
        self.n_ext = self.lowres_embed.n_ext + self.coord_embed.n_ext

    def forward(self, h_prev: Tensor, prev_res: int, e: Tensor, res: int, params: ParamReader) -> Tensor:
        context = self.lowres_embed(h_prev, params.take(self.lowres_embed.n_ext))
        context = upsample(context, prev_res, res, self.upsampling)
        return torch.relu(context + self.coord_embed(e, params.take(self.coord_embed.n_ext)))


class MultiScaleBlock(nn.Module):
    """Fourier features of its own grid, [connector], n_layers FMM layers with coordinate skips, [to-RGB]."""

    def __init__(
        self,
        config: BlockConfig,
        prev_width: int | None,
        rank: int,
        activation: FMMActivation,
        upsampling: Upsampling,
        fourier_scale: float,
        to_rgb_std: float | None,
    ):
        super().__init__()
        self.config = config
        self.fourier = FourierFeatures(config.n_freqs, fourier_scale)
        e_dim, d = self.fourier.out_dim, config.width
        self.connector = None if prev_width is None else Connector(prev_width, e_dim, d, rank, activation, upsampling)
        # Block 0's first layer embeds e alone; every other layer sees concat[h, e].
        in_dims = [d + e_dim] * config.n_layers
        if prev_width is None:
            in_dims[0] = e_dim
        self.layers = nn.ModuleList(FMMLinear(n, d, rank, activation) for n in in_dims)
        self.to_rgb = (
            None if to_rgb_std is None else GeneratedLinear(d, 3, weight_std=to_rgb_std, bias_std=0.2 * to_rgb_std)
        )
        self.n_ext = (
            self.fourier.n_ext
            + (self.connector.n_ext if self.connector is not None else 0)
            + sum(m.n_ext for m in self.layers)
            + (self.to_rgb.n_ext if self.to_rgb is not None else 0)
        )

    def forward(
        self, h_prev: Tensor | None, prev_res: int | None, grid: Grid, params: ParamReader
    ) -> tuple[Tensor, Tensor | None]:
        """Features (N, width, P) at grid.resolution and this block's RGB contribution (or None)."""
        coords = grid.coords(params.raw.device, params.raw.dtype)
        e = self.fourier(coords, params.take(self.fourier.n_ext))
        if self.connector is None:
            h = e
        else:
            h = self.connector(h_prev, prev_res, e, grid.resolution, params)
        for i, layer in enumerate(self.layers):
            h = skip_layer(layer, h, None if (self.connector is None and i == 0) else e, params.take(layer.n_ext))
        rgb = None if self.to_rgb is None else self.to_rgb(h, params.take(self.to_rgb.n_ext))
        return h, rgb


class MultiScaleINR(nn.Module):
    """INR-GAN's decoder: blocks at increasing resolutions; the last one is at the output resolution."""

    def __init__(
        self,
        blocks: Sequence[BlockConfig],
        rank: int = 10,
        fmm_activation: FMMActivation = "sigmoid2",
        upsampling: Upsampling = "nearest",
        fourier_scale: float = 10.0,
    ):
        super().__init__()
        if not blocks:
            raise ValueError("a multi-scale INR needs at least one block")
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"unknown upsampling {upsampling!r}; allowed: {', '.join(UPSAMPLING_MODES)}")
        self.configs = tuple(blocks)
        self.upsampling = upsampling
        self.resolution = self.configs[-1].resolution
        has_rgb = [c.to_rgb or i == len(blocks) - 1 for i, c in enumerate(self.configs)]
        n_rgb = sum(has_rgb)
        self.blocks = nn.ModuleList()
        for i, c in enumerate(self.configs):
            rgb_std = math.sqrt(2.0 / c.width) / math.sqrt(n_rgb) if has_rgb[i] else None
            prev = self.configs[i - 1].width if i > 0 else None
            self.blocks.append(MultiScaleBlock(c, prev, rank, fmm_activation, upsampling, fourier_scale, rgb_std))
        self.n_ext = sum(b.n_ext for b in self.blocks)

    def block_resolutions(self, resolution: int, span: float = 1.0) -> list[int]:
        """Each block's grid side when the image is asked at `resolution` over a range `span` wide.

        Every block first keeps its trained density over the range: side r_k * span, which must be
        a whole number (span 1 is the trained [0, 1) frame; span 2 is [-0.5, 1.5), the extrapolation
        of Figs. 2/10). Relative to those sides, a denser image (x2^m) makes only the final block's
        grid denser (the paper's super-resolution); a sparser one (/2^m) shrinks every block's grid by
        the same factor (a preview).
        """
        trained = []
        for c in self.configs:
            side = c.resolution * span
            if span <= 0 or abs(side - round(side)) > 1e-6 * side:
                raise ValueError(
                    f"a range {span:g} wide does not keep the density of a block trained at {c.resolution} px "
                    f"({c.resolution} x {span:g} = {side:g} is not a whole number of pixels); widen or narrow it, "
                    f"e.g. a width that is a multiple of 1/{min(c.resolution for c in self.configs)}"
                )
            trained.append(int(round(side)))
        final = trained[-1]
        big, small = max(resolution, final), max(min(resolution, final), 1)
        ratio = big // small
        if resolution < 1 or big % small or ratio & (ratio - 1):
            raise ValueError(
                f"a multi-scale INR trained at {self.resolution} renders a range {span:g} wide at {final} "
                f"times or divided by a power of two, got {resolution}"
            )
        if resolution >= final:
            return trained[:-1] + [resolution]
        if any(r % ratio for r in trained):
            raise ValueError(
                f"resolution {resolution} is too small for blocks at {trained}: the smallest "
                f"allowed is {final // min(trained)}"
            )
        return [r // ratio for r in trained]

    def fourier_bases(self, raw: Tensor) -> list[Tensor]:
        """B of every block, (N, F_k, 2) each: the frequencies the hypernetwork chose (Fig. 17).
        Each block's parameters start with its Fourier basis (see MultiScaleBlock.forward)."""
        ParamReader(raw, self.n_ext)  # checks the shape
        bases, offset = [], 0
        for block in self.blocks:
            bases.append(block.fourier.basis(raw[:, offset : offset + block.fourier.n_ext]))
            offset += block.n_ext
        return bases

    def render(self, raw: Tensor, grid: Grid) -> Tensor:
        params = ParamReader(raw, self.n_ext)
        h = prev_res = img = img_res = None
        for block, res in zip(self.blocks, self.block_resolutions(grid.resolution, grid.end - grid.start)):
            h, rgb = block(h, prev_res, grid.with_resolution(res), params)
            prev_res = res
            if rgb is not None:
                img = rgb if img is None else rgb + upsample(img, img_res, res, self.upsampling)
                img_res = res
        return to_image(img, grid.resolution)

    def macs_paper(self, resolution: int | None = None) -> int:
        """Main path per pixel at each block's resolution; the connector's low-res embedder at the lower one."""
        res = self.block_resolutions(self.resolution if resolution is None else resolution)
        total = 0
        for i, (c, r) in enumerate(zip(self.configs, res)):
            e_dim, d = 2 * c.n_freqs, c.width
            if i == 0:
                total += (e_dim * d + (c.n_layers - 1) * d * d) * r * r
            else:
                d_prev, r_prev = self.configs[i - 1].width, res[i - 1]
                total += d_prev * d * r_prev * r_prev + (e_dim * d + c.n_layers * d * d) * r * r
        return total
