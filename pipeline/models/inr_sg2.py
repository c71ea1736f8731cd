"""INR-GAN inside the StyleGAN2 generator: Table 2's "+ StyleGAN2 architecture" row (and, with
bilinear upsampling, the "+ bilinear upsampling" row). paper.md section 3.

What changes with respect to StyleGAN2 (pipeline.models.stylegan2):
- mapping network of 2 layers (pixel norm, equalised lr, lr multiplier 0.01), style mixing,
  truncation towards the tracked w_avg, as StyleGAN2;
- every layer is a 1x1 "FMM" layer instead of a modulated 3x3 conv: the style w predicts
  A (out x r) and B (r x in), the weight is W = W_s * (1 + A B / sqrt(r)) and every output row of
  W is normalised to unit L2 norm (the role of demodulation), no sigmoid;
- each block concatenates a coordinate embedding to its input, computed on its own grid:
  a fixed log-spaced sin/cos basis (4 directions up to `diagonal_max_resolution`, horizontal and
  vertical above), random Fourier features at `random_fourier_resolutions`, and a learned
  per-pixel constant;
- the first block starts from the embedding at `input_resolution` (32 by default) instead of a 4x4
  constant; blocks double the resolution with nearest (default) or bilinear upsampling; one
  extra layer at `extra_layer_resolutions` (128 and 256); no noise inputs.

Choices the paper leaves open, made here:
- Input resolution: min(32, resolution // 2), so a 16x16 model starts at 8x8 and a 32x32 one at
  16x16 (two blocks at least); `input_resolution` overrides it.
- Blocks: the first has two layers (embedding -> C, C -> C); every later one upsamples, concatenates
  its embedding, then two layers (+1 at the extra resolutions). Channels min(channel_base // r,
  channel_max), config-f by default. The embedding is concatenated once per block, at its input.
- Fixed basis at block resolution r: frequencies 2^k, k = 0..log2(r)-1 cycles per unit length
  (up to the block's Nyquist rate), directions (1,0), (0,1) and, up to 64x64, (1,1), (1,-1);
  sin and cos of 2 pi f (d . p).
- Random Fourier features: `random_fourier_features` channels = half as many random frequency
  vectors, sin and cos; direction uniform, magnitude log-uniform in [1, r/2] cycles per unit,
  drawn once from `fourier_seed` (buffers: the EMA copy and snapshots keep them).
- Learned constant: `const_channels` channels below `const_high_from`, `const_channels_high` from
  there on (128 / 64 by default).
- To-RGB: StyleGAN2's modulated 1x1 conv without demodulation; the image accumulates across
  blocks with the same upsampling mode as the features.
- FMM affine biases start at 0, so at initialisation A B / sqrt(r) has unit variance, as
  StyleGAN2's styles (1 + N(0, 1)).

Because every layer is 1x1 and nearest upsampling copies features, pixels are independent given
the low-resolution context, and the image can be evaluated on any grid (see `synthesize`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.coords import Grid
from pipeline.models.specs import INRStyleGAN2Spec
from pipeline.models.stylegan2 import EqualizedLinear, MappingNetwork, StyleBasedGenerator, ToRGB, bias_act


class CoordinateEmbedding(nn.Module):
    """Per-block coordinate embedding: fixed sin/cos basis, random Fourier features and a learned
    per-pixel constant, all evaluated on a Grid. Output (C_emb, S, S), shared by the batch."""

    def __init__(self, resolution: int, diagonal: bool, num_random: int, const_channels: int, seed: int):
        super().__init__()
        self.resolution = resolution
        dirs = [(1.0, 0.0), (0.0, 1.0)] + ([(1.0, 1.0), (1.0, -1.0)] if diagonal else [])
        freqs = [2.0**k for k in range(int(math.log2(resolution)))]
        fixed = torch.tensor([[f * dx, f * dy] for dx, dy in dirs for f in freqs], device="cpu")  # (D*K, 2) cycles/unit
        if num_random:
            g = torch.Generator().manual_seed(seed)
            angle = torch.rand(num_random // 2, generator=g, device="cpu") * 2 * math.pi
            magnitude = torch.exp(torch.rand(num_random // 2, generator=g, device="cpu") * math.log(resolution / 2))
            rand = torch.stack([angle.cos(), angle.sin()], dim=1) * magnitude[:, None]
            fixed = torch.cat([fixed, rand])
        device = torch.empty(0).device  # honour torch.device("meta") and similar contexts
        self.register_buffer("frequencies", fixed.to(device))
        self.const = nn.Parameter(torch.randn(const_channels, resolution, resolution)) if const_channels else None
        self.num_channels = 2 * fixed.shape[0] + const_channels

    def forward(self, grid: Grid) -> Tensor:
        s = grid.resolution
        p = grid.coords(device=self.frequencies.device, dtype=self.frequencies.dtype)  # (S*S, 2)
        phase = 2 * math.pi * (self.frequencies @ p.t())  # (F, S*S)
        parts = [phase.sin().reshape(-1, s, s), phase.cos().reshape(-1, s, s)]
        if self.const is not None:
            parts.append(self.sample_const(grid))
        return torch.cat(parts, dim=0)

    def sample_const(self, grid: Grid) -> Tensor:
        """The learned constant on `grid`: exact on the native grid, bilinear in between, border
        values outside [0, 1) (extrapolation)."""
        if grid == Grid(self.resolution):
            return self.const
        a = grid.axis(device=self.const.device, dtype=self.const.dtype)
        a = 2 * a + 1.0 / self.resolution - 1  # pixel j of the native grid sits at p = j / r
        gy, gx = torch.meshgrid(a, a, indexing="ij")
        where = torch.stack([gx, gy], dim=-1)[None]
        return F.grid_sample(self.const[None], where, mode="bilinear", padding_mode="border", align_corners=False)[0]


class RowNormFMM(nn.Module):
    """1x1 layer with FMM weights: W = W_s * (1 + A B / sqrt(r)), rows normalised to unit norm,
    then bias and lrelu. A (out x r) and B (r x in) come from w through one affine layer."""

    def __init__(self, in_features: int, out_features: int, w_dim: int, rank: int):
        super().__init__()
        if rank > min(in_features, out_features):
            raise ValueError(
                f"FMM rank {rank} is larger than the layer {in_features} -> {out_features}; use a rank of at most {min(in_features, out_features)}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight = nn.Parameter(torch.randn(out_features, in_features))  # W_s; scale removed by the row norm
        self.affine = EqualizedLinear(w_dim, rank * (out_features + in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def modulated_weight(self, w: Tensor, eps: float = 1e-8) -> Tensor:
        """w (N, w_dim) -> per-sample weights (N, out, in) with unit-norm rows."""
        n, r = w.shape[0], self.rank
        ab = self.affine(w)
        a = ab[:, : self.out_features * r].reshape(n, self.out_features, r)
        b = ab[:, self.out_features * r :].reshape(n, r, self.in_features)
        wn = self.weight[None] * (1 + torch.bmm(a, b) / math.sqrt(r))
        return wn * torch.rsqrt(wn.square().sum(dim=2, keepdim=True) + eps)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        n, c, h, w_ = x.shape
        y = torch.bmm(self.modulated_weight(w), x.reshape(n, c, h * w_))  # one matmul per image over all pixels
        return bias_act(y.reshape(n, self.out_features, h, w_), self.bias, "lrelu")


class INRBlock(nn.Module):
    """One resolution: [upsample previous features] ++ embedding -> FMM layers -> to-RGB."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        num_layers: int,
        embedding: CoordinateEmbedding,
        rank: int,
    ):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.embedding = embedding
        dims = [in_channels + embedding.num_channels] + [out_channels] * num_layers
        self.layers = nn.ModuleList(RowNormFMM(a, b, w_dim, rank) for a, b in zip(dims[:-1], dims[1:]))
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_layers = num_layers

    def forward(self, x: Tensor | None, ws: Tensor, grid: Grid) -> tuple[Tensor, Tensor]:
        e = self.embedding(grid).to(ws.dtype)
        e = e[None].expand(ws.shape[0], -1, -1, -1)
        x = e if x is None else torch.cat([x, e], dim=1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i])
        return x, self.torgb(x, ws[:, self.num_layers])

    def macs_paper(self, pixels: int) -> int:
        """Main-path 1x1 layers, not counting the embedding columns (except in the first block,
        where the embedding is the whole input)."""
        first_in = self.in_channels if self.in_channels else self.embedding.num_channels
        return (first_in + (self.num_layers - 1) * self.out_channels) * self.out_channels * pixels


class INRStyleGAN2Generator(StyleBasedGenerator):
    """INR-GAN decoder in StyleGAN2's generator (Table 2). Same interface as StyleGAN2Generator.

    Output range: raw in training mode, clamped to [-1, 1] in eval mode (`clamp` overrides), as
    StyleGAN2Generator. Style mixing in `forward`, training mode only.

    `synthesize(w, grid)` evaluates the image on any Grid from pipeline.models.coords: the final
    block runs on `grid` and block k on the same range at resolution r_k * S / R (R the trained
    resolution), so a grid of side 2R doubles every block (super-resolution), R/2 halves them (a
    cheaper preview) and a wider range extrapolates. S * r_0 / R must be a whole number.
    """

    def __init__(self, spec: INRStyleGAN2Spec | None = None):
        super().__init__()
        self.spec = spec = spec if spec is not None else INRStyleGAN2Spec()
        self.z_dim, self.w_dim, self.resolution = spec.z_dim, spec.w_dim, spec.resolution
        self.mapping_network = MappingNetwork(
            spec.z_dim, spec.w_dim, spec.mapping_layers, spec.mapping_lr_multiplier, spec.w_avg_beta
        )
        blocks, in_ch = [], 0
        for r in spec.block_resolutions():
            emb = CoordinateEmbedding(
                r,
                diagonal=r <= spec.diagonal_max_resolution,
                num_random=spec.random_fourier_features if r in spec.random_fourier_resolutions else 0,
                const_channels=spec.const_channels_high if r >= spec.const_high_from else spec.const_channels,
                seed=spec.fourier_seed + r,
            )
            layers = 3 if r in spec.extra_layer_resolutions else 2
            blocks.append(INRBlock(in_ch, spec.channels(r), spec.w_dim, r, layers, emb, spec.fmm_rank))
            in_ch = spec.channels(r)
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_layers for b in self.blocks) + 1

    def block_grids(self, grid: Grid | None) -> list[Grid]:
        """The grid of every block for an output grid (None = the training grid)."""
        grid = grid if grid is not None else Grid(self.resolution)
        out = []
        for b in self.blocks:
            s = grid.resolution * b.resolution / self.resolution
            if s < 1 or s != int(s):
                raise ValueError(
                    f"grid resolution {grid.resolution} cannot be evaluated: block {b.resolution} of a "
                    f"{self.resolution} model would need {s:g} pixels per side; use a multiple of "
                    f"{self.resolution // self.blocks[0].resolution}"
                )
            out.append(grid.with_resolution(int(s)))
        return out

    def upsample(self, x: Tensor) -> Tensor:
        if self.spec.upsampling == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def synthesize(self, w: Tensor, grid: Grid | None = None, clamp: bool | None = None) -> Tensor:
        """w (N, w_dim) or (N, num_ws, w_dim) -> images (N, 3, S, S), S = grid.resolution."""
        ws = self.broadcast_ws(w)
        x = img = None
        w_idx = 0
        for block, g in zip(self.blocks, self.block_grids(grid)):
            if x is not None:
                x = self.upsample(x)
            x, y = block(x, ws[:, w_idx : w_idx + block.num_layers + 1], g)
            img = y if img is None else self.upsample(img) + y
            w_idx += block.num_layers
        return self.finish_output(img, clamp)

    def macs_paper(self, resolution: int | None = None) -> int:
        """Per-image MACs under the paper's INR convention: in * out * pixels of every main-path
        1x1 layer (embedding columns, to-RGB, biases, activations and the A B products not
        counted), plus the mapping network and the FMM affines once per image (the analogue of
        the hypernetwork). A resolution below the trained one evaluates a sparser grid."""
        grids = self.block_grids(None if resolution is None else Grid(resolution))
        total = self.mapping_network.macs()
        for b, g in zip(self.blocks, grids):
            total += b.macs_paper(g.resolution**2)
            total += sum(layer.affine.weight.numel() for layer in b.layers)
        return total
