"""INR-GAN inside the StyleGAN2 generator: Table 2's "+ StyleGAN2 architecture" row (and, with
bilinear upsampling, the "+ bilinear upsampling" row). paper.md section 3.

What changes with respect to StyleGAN2 (pipeline.models.stylegan2):
- mapping network of 2 layers (pixel norm, equalised lr, lr multiplier 0.01), style mixing,
  truncation towards the tracked w_avg, as StyleGAN2;
- every layer is a 1x1 "FMM" layer instead of a modulated 3x3 conv: the style w predicts
  A (out x r) and B (r x in), the weight is W = W_s * (1 + A B / sqrt(r)) and every output row of
  W is normalised to unit L2 norm (the role of demodulation), no sigmoid;
- blocks concatenate a coordinate embedding to their input, computed on their own grid: a fixed
  log-spaced sin/cos basis (4 directions up to `diagonal_max_resolution`, horizontal and vertical
  above), random Fourier features at `random_fourier_resolutions`, and a learned per-pixel constant;
- the generator starts from the embedding at `input_resolution` (32) instead of a 4x4 constant;
  blocks double the resolution with nearest (default) or bilinear upsampling; one extra layer at
  `extra_layer_resolutions` (128 and 256); no noise inputs.

Where the paper is silent this follows the authors' StyleGAN2-ADA code (universome/inr-gan, src/,
configs/inr-gan.yml and inr-gan-bil.yml), checked numerically in docs/conformance.md:
- Layout: StyleGAN2's blocks 4, 8, .., R; the ones up to the input resolution all run at it, without
  upsampling: the first (1 layer) takes the embedding, the others (2 layers) take only the previous
  features; every later block upsamples, concatenates its embedding, then 2 layers (+1 at the extra
  resolutions). Every block has a to-RGB (StyleGAN2's modulated 1x1 conv without demodulation) and
  the image accumulates across blocks, upsampled like the features where the resolution doubles.
  Channels min(channel_base // r, channel_max) with r the block's StyleGAN2 resolution (4, 8, ..).
- Coordinates: x' = 2x - 1 and y' = 2(start + end - step - y) - 1 for a Grid point (x, y), i.e.
  [-1, 1) on the default grid with y pointing up (row 0 at the top holds the largest y').
- Fixed basis at block resolution r: angular frequencies 2^k pi / 2 per unit of [-1, 1),
  k = 0 .. log2(r) - 1 (so 2^(k-1) cycles per image), directions in the order (0, 1), (1, 0) and,
  up to 64x64, (-1, 1) / 2 and (1, 1) / 2 (the diagonal ones scaled so that their wavefronts are
  as far apart as the axis ones); channels: sin of every frequency, then cos of every frequency.
- Random Fourier features: `random_fourier_features` channels = half as many frequency vectors
  drawn from N(0, fourier_scale^2) (sqrt(10)) radians per unit of [-1, 1), once, from
  `fourier_seed` + r (buffers: the EMA copy and snapshots keep them).
- Learned constant: `const_channels` channels below `const_high_from` (128), `const_channels_high`
  from there on (128 / 64).
- Bilinear upsampling with align_corners=True; the "-bil" models also divide the input of every
  layer but a block's first by its per-channel standard deviation over the pixels (`instance_norm`).
- FMM rows are divided by (their norm + 1e-8); FMM affine biases start at 0, so at initialisation
  A B / sqrt(r) has unit variance, as StyleGAN2's styles (1 + N(0, 1)).

Because every layer is 1x1 and nearest upsampling copies features, pixels are independent given
the low-resolution context (without instance_norm), and the image can be evaluated on any grid
(see `synthesize`).
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

    def __init__(
        self, resolution: int, diagonal: bool, num_random: int, const_channels: int, seed: int, fourier_scale: float
    ):
        super().__init__()
        self.resolution = resolution
        # a period of 4 units of [-1, 1) at k = 0; the diagonals' 4 sqrt(2) period along (-1, 1) / sqrt(2)
        dirs = [(0.0, 1.0), (1.0, 0.0)] + ([(-0.5, 0.5), (0.5, 0.5)] if diagonal else [])
        steps = [2.0**k * math.pi / 2 for k in range(int(math.log2(resolution)))]
        fixed = torch.tensor([[f * dx, f * dy] for dx, dy in dirs for f in steps], device="cpu")  # (D*K, 2) rad/unit
        if num_random:
            g = torch.Generator().manual_seed(seed)
            fixed = torch.cat([fixed, torch.randn(num_random // 2, 2, generator=g, device="cpu") * fourier_scale])
        device = torch.empty(0).device  # honour torch.device("meta") and similar contexts
        self.register_buffer("frequencies", fixed.to(device))
        self.const = nn.Parameter(torch.randn(const_channels, resolution, resolution)) if const_channels else None
        self.num_channels = 2 * fixed.shape[0] + const_channels

    def forward(self, grid: Grid) -> Tensor:
        s = grid.resolution
        p = grid.coords(device=self.frequencies.device, dtype=self.frequencies.dtype)  # (S*S, 2) in [start, end)
        x = 2 * p[:, 0] - 1
        y = 2 * (grid.start + grid.end - grid.step - p[:, 1]) - 1  # rows reversed: y points up
        phase = self.frequencies @ torch.stack([x, y])  # (F, S*S)
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
        return wn / (wn.norm(dim=2, keepdim=True) + eps)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        n, c, h, w_ = x.shape
        y = torch.bmm(self.modulated_weight(w), x.reshape(n, c, h * w_))  # one matmul per image over all pixels
        return bias_act(y.reshape(n, self.out_features, h, w_), self.bias, "lrelu")


class INRBlock(nn.Module):
    """One StyleGAN2 block: [upsampled previous features] ++ [embedding] -> FMM layers -> to-RGB.
    `embedding` None: the block takes the previous features alone (blocks at the input resolution)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        num_layers: int,
        embedding: CoordinateEmbedding | None,
        rank: int,
        instance_norm: bool = False,
    ):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.embedding = embedding
        self.instance_norm = instance_norm
        dims = [in_channels + (embedding.num_channels if embedding is not None else 0)] + [out_channels] * num_layers
        self.layers = nn.ModuleList(RowNormFMM(a, b, w_dim, rank) for a, b in zip(dims[:-1], dims[1:]))
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_layers = num_layers

    def forward(self, x: Tensor | None, ws: Tensor, grid: Grid) -> tuple[Tensor, Tensor]:
        if self.embedding is not None:
            e = self.embedding(grid).to(ws.dtype)
            e = e[None].expand(ws.shape[0], -1, -1, -1)
            x = e if x is None else torch.cat([x, e], dim=1)
        for i, layer in enumerate(self.layers):
            if self.instance_norm and i > 0:
                # the authors' form: no mean removed, unbiased std, eps added to the std
                x = x / (x.std(dim=[2, 3], keepdim=True) + 1e-8)
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
        blocks, in_ch, prev = [], 0, None
        for k, r in enumerate(spec.block_resolutions()):
            emb = None
            if k == 0 or r > prev:  # blocks repeating the input resolution take no embedding
                emb = CoordinateEmbedding(
                    r,
                    diagonal=r <= spec.diagonal_max_resolution,
                    num_random=spec.random_fourier_features if r in spec.random_fourier_resolutions else 0,
                    const_channels=spec.const_channels_high if r >= spec.const_high_from else spec.const_channels,
                    seed=spec.fourier_seed + r,
                    fourier_scale=spec.fourier_scale,
                )
            layers = (1 if k == 0 else 2) + (1 if r in spec.extra_layer_resolutions else 0)
            out_ch = spec.channels(2 ** (k + 2))  # StyleGAN2's channels of block 4 * 2^k
            blocks.append(INRBlock(in_ch, out_ch, spec.w_dim, r, layers, emb, spec.fmm_rank, spec.instance_norm))
            in_ch, prev = out_ch, r
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
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def synthesize(self, w: Tensor, grid: Grid | None = None, clamp: bool | None = None) -> Tensor:
        """w (N, w_dim) or (N, num_ws, w_dim) -> images (N, 3, S, S), S = grid.resolution."""
        ws = self.broadcast_ws(w)
        x = img = None
        w_idx, prev = 0, None
        for block, g in zip(self.blocks, self.block_grids(grid)):
            up = prev is not None and block.resolution > prev
            if up:
                x = self.upsample(x)
            x, y = block(x, ws[:, w_idx : w_idx + block.num_layers + 1], g)
            img = y if img is None else (self.upsample(img) if up else img) + y
            w_idx += block.num_layers
            prev = block.resolution
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
