"""StyleGAN2's residual discriminator, the config-e size used by INR-GAN for every generator.

Per resolution r (from the image size down to 8) a residual block: 3x3 conv, 3x3 conv with
[1,3,3,1] blur + stride 2, and a blurred 1x1 stride-2 skip, summed with weight sqrt(1/2). At 4x4
the epilogue appends the minibatch standard deviation, then a 3x3 conv, a dense layer and the
output logit. Equalised learning rate everywhere. Channels at r: min(channel_base // r,
channel_max); config-e (channel multiplier 1) is channel_base 16384, channel_max 512: 512 up to
32x32, then 256/128/64/32/16 at 64/128/256/512/1024.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pipeline.models.specs import DiscriminatorSpec
from pipeline.models.stylegan2 import EqualizedConv2d, EqualizedLinear


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1, eps: float = 1e-8) -> Tensor:
    """Append `num_features` channels holding the standard deviation of each feature across a
    group of samples, averaged over channels (split into `num_features` parts) and pixels.

    Groups as in StyleGAN2: G = min(group_size, N), M = N // G groups, sample i in group i % M
    (identical to StyleGAN2's reshape(G, M, ...) when G divides N). When G does not divide N the
    leftover samples join the first groups, so some groups hold G + 1 samples; N = 1 gives a
    single group of one sample, whose deviation is 0 (sqrt(eps) after the epsilon).
    The variance is the population one (mean of squared deviations), as in StyleGAN2."""
    n, c, h, w = x.shape
    if c % num_features:
        raise ValueError(f"minibatch_stddev: {c} channels cannot be split into {num_features} features")
    g = min(group_size, n)
    m = n // g
    group = torch.arange(n, device=x.device) % m  # (N,)
    y = x.reshape(n, num_features, c // num_features, h, w).float()
    counts = torch.bincount(group, minlength=m).to(y.dtype).reshape(m, 1, 1, 1, 1)
    mean = torch.zeros(m, *y.shape[1:], device=x.device, dtype=y.dtype).index_add(0, group, y) / counts
    sq = (y - mean[group]).square()
    var = torch.zeros_like(mean).index_add(0, group, sq) / counts
    std = (var + eps).sqrt().mean(dim=[2, 3, 4])  # (M, F)
    feat = std[group].to(x.dtype).reshape(n, num_features, 1, 1).expand(n, num_features, h, w)
    return torch.cat([x, feat], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block at resolution r: in -> in (3x3) -> out (3x3, down x2), skip 1x1 down x2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """Images (N, 3, S, S) in [-1, 1] -> real/fake logits (N,)."""

    def __init__(self, spec: DiscriminatorSpec | None = None):
        super().__init__()
        self.spec = spec = spec if spec is not None else DiscriminatorSpec()
        self.resolution = spec.resolution
        self.from_rgb = EqualizedConv2d(3, spec.channels(spec.resolution), 1, activation="lrelu")
        log2 = int(math.log2(spec.resolution))
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(spec.channels(2**k), spec.channels(2 ** (k - 1))) for k in range(log2, 2, -1)
        )
        c4 = spec.channels(4)
        self.conv = EqualizedConv2d(c4 + spec.mbstd_num_features, c4, 3, activation="lrelu")
        self.fc = EqualizedLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualizedLinear(c4, 1)

    def forward(self, img: Tensor, segments: int = 1) -> Tensor:
        """Logits of `img`; with `segments` > 1 the batch is that many equal parts (e.g. fakes then
        reals) that the minibatch standard deviation never mixes, so one call equals one call per part."""
        s = self.resolution
        if img.ndim != 4 or img.shape[1:] != (3, s, s):
            raise ValueError(
                f"Discriminator at resolution {s} expects images of shape (N, 3, {s}, {s}), got {tuple(img.shape)}"
            )
        if segments < 1 or img.shape[0] % segments:
            raise ValueError(
                f"Discriminator: a batch of {img.shape[0]} images cannot be split into {segments} equal segments"
            )
        # Channels-last: oneDNN's convolutions take it without reordering their inputs, which makes
        # the small convolutions of the toy profiles ~1.4x faster on a CPU (same values).
        x = self.from_rgb(img.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        parts = x.chunk(segments) if segments > 1 else (x,)
        x = torch.cat([minibatch_stddev(p, self.spec.mbstd_group_size, self.spec.mbstd_num_features) for p in parts])
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1)
