"""StyleGAN2 generator (config-f) in pure PyTorch, and the StyleGAN2 building blocks that the
discriminator and the INR-in-StyleGAN2 generator reuse.

Follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020):
8-layer mapping network with pixel-norm of z and lr multiplier 0.01, learned 4x4 constant,
modulated/demodulated 3x3 convolutions, per-layer noise, skip to-RGB architecture, [1,3,3,1] blur
on every resampling, equalised learning rate everywhere, style mixing and truncation. No custom
CUDA ops: resampling is zero insertion + depthwise conv2d, modulation is a grouped conv2d.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.coords import Grid
from pipeline.models.specs import StyleGAN2Spec

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activation variance of lrelu(0.2) outputs near 1


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


def blur_kernel(taps: tuple[int, ...] = (1, 3, 3, 1)) -> Tensor:
    """The separable 2-D FIR filter outer(taps, taps), normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


class _FIRFilter(torch.autograd.Function):
    """Depthwise correlation of the zero-padded input with a fixed filter (C, 1, kh, kw).

    The same values as F.conv2d(F.pad(x, pad), weight, groups=C), but with a backward written as the
    transposed filter, whose own backward is this filter again: any order of derivative costs one
    depthwise filter, where autograd's generic double backward of a convolution also computes the
    filter's gradient (which never trains). R1's double backward through the discriminator's blurs
    spends most of its time there."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, pad: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.pad, ctx.size = pad, tuple(x.shape[-2:])
        return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), weight, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        return _FIRFilterTransposed.apply(grad, weight, ctx.pad, ctx.size), None, None


class _FIRFilterTransposed(torch.autograd.Function):
    """The adjoint of _FIRFilter: transposed depthwise convolution, then the padding cropped off."""

    @staticmethod
    def forward(ctx, grad: Tensor, weight: Tensor, pad: tuple[int, int], size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.pad = pad
        full = F.conv_transpose2d(grad, weight, groups=grad.shape[1])  # the padded input's size
        return full[:, :, pad[0] : pad[0] + size[0], pad[0] : pad[0] + size[1]]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (weight,) = ctx.saved_tensors
        return _FIRFilter.apply(grad, weight, ctx.pad), None, None, None


def fir_filter(x: Tensor, weight: Tensor, pad: tuple[int, int]) -> Tensor:
    """F.conv2d(F.pad(x, [p0, p1, p0, p1]), weight, groups=C) for a fixed (non-trained) depthwise filter;
    twice (and more) differentiable in x through _FIRFilter when the padding does not crop."""
    if weight.requires_grad or min(pad) < 0:
        return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), weight, groups=x.shape[1])
    return _FIRFilter.apply(x, weight, tuple(pad))


def upfirdn2d(
    x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1.0
) -> Tensor:
    """Upsample by zero insertion, pad (negative = crop), filter each channel with `kernel`
    (2-D, applied as a true convolution), then keep every `down`-th pixel.

    x: (N, C, H, W). The same padding is used on both axes: pad = (before, after)."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    weight = (kernel * gain).flip([0, 1]).to(x.dtype)
    weight = weight[None, None].expand(c, 1, *kernel.shape)
    x = fir_filter(x, weight, pad)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """2x upsampling: zero insertion + blur with gain 4, (N, C, H, W) -> (N, C, 2H, 2W)."""
    kw = kernel.shape[-1]
    return upfirdn2d(x, kernel, up=2, pad=((kw + 1) // 2, (kw - 2) // 2), gain=4.0)


def downsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """2x downsampling: blur then decimate, (N, C, H, W) -> (N, C, H/2, W/2)."""
    kw = kernel.shape[-1]
    return upfirdn2d(x, kernel, down=2, pad=((kw - 1) // 2, kw // 2))


# ---------------------------------------------------------------------------------------------
# Equalised learning rate
# ---------------------------------------------------------------------------------------------


def bias_act(x: Tensor, bias: Tensor | None, activation: Literal["linear", "lrelu"], dim: int = 1) -> Tensor:
    """Add a per-channel bias along `dim`, then the activation (lrelu is scaled by sqrt(2))."""
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    return x


class EqualizedLinear(nn.Module):
    """Dense layer with equalised learning rate: weights are stored as N(0, 1/lr_mul^2) and
    scaled at run time by lr_mul / sqrt(in_features), so that Adam's per-parameter step acts the
    same on every layer; `lr_multiplier` slows the layer down (0.01 in the mapping network).
    The bias is stored divided by lr_mul as well, so its effective initial value is `bias_init`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: Literal["linear", "lrelu"] = "linear",
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(F.linear(x, w), b, self.activation, dim=x.ndim - 1)


class EqualizedConv2d(nn.Module):
    """Conv layer with equalised learning rate; `down=2` blurs with [1,3,3,1] then convolves with
    stride 2 (StyleGAN2's downsampling conv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Literal["linear", "lrelu"] = "linear",
        down: int = 1,
    ):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.activation, self.down, self.kernel_size = activation, down, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_kernel", blur_kernel(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        if self.down == 2:
            # blur so that the stride-2 conv sees a low-passed input; output is exactly H/2
            p = (4 - 2) + (self.kernel_size - 1)
            x = upfirdn2d(x, self.resample_kernel, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        return bias_act(x, self.bias, self.activation)


def pixel_norm(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean(x^2)) along `dim` (StyleGAN's normalisation of z)."""
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + eps)


# ---------------------------------------------------------------------------------------------
# Mapping network
# ---------------------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, `num_layers` equalised-lr dense layers with lrelu; tracks the running
    mean of w (w_avg) in training mode so that truncation can pull w towards it."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float, w_avg_beta: float):
        super().__init__()
        self.z_dim, self.w_dim, self.w_avg_beta = z_dim, w_dim, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualizedLinear(a, b, lr_multiplier=lr_multiplier, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, update_w_avg: bool = True) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        x = pixel_norm(z)
        for layer in self.layers:
            x = layer(x)
        if self.training and update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x

    def macs(self) -> int:
        return sum(layer.weight.numel() for layer in self.layers)


# ---------------------------------------------------------------------------------------------
# Modulated convolution
# ---------------------------------------------------------------------------------------------


def modulate_weight(weight: Tensor, styles: Tensor, demodulate: bool, eps: float = 1e-8) -> Tensor:
    """Per-sample weights: weight (O, I, k, k) scaled along I by styles (N, I); with demodulation
    every output filter is rescaled to unit L2 norm. Returns (N, O, I, k, k)."""
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=[2, 3, 4], keepdim=True) + eps)
    return w


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    up: bool = False,
    kernel: Tensor | None = None,
    fused: bool | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """A convolution with a different (modulated, optionally demodulated) weight per sample.

    Without `up`: 'same' convolution (cross-correlation, as nn.Conv2d). With `up`: equals zero
    insertion x2, 'full' 3x3 cross-correlation, then the [1,3,3,1] blur with gain 4, computed as a
    stride-2 transposed conv + blur; output (N, O, 2H, 2W).

    fused=True builds the N per-sample weights and runs one grouped conv; fused=False scales the
    input channels by the styles, runs the shared weight as one ordinary conv and rescales the output
    channels by the demodulation coefficients. Both compute the same function (the scalings commute
    with the convolution); the unfused form is several times faster for batches on a CPU and is what
    StyleGAN2-ADA trains with. None: fused only for a single sample."""
    n, in_ch, h, w_ = x.shape
    out_ch, _, kh, kw = weight.shape
    if up and kernel is None:
        raise ValueError("modulated_conv2d(up=True) needs the blur kernel")
    fused = n == 1 if fused is None else fused
    if fused:
        wn = modulate_weight(weight, styles, demodulate, eps)
        x = x.reshape(1, n * in_ch, h, w_)
        groups, wconv = n, wn.reshape(n * out_ch, in_ch, kh, kw)
    else:
        # Channels-last: oneDNN runs these convolutions (and the transposed one) 1.5-4x faster on a
        # CPU than on NCHW tensors; the values are the same, and later layers keep the layout.
        x = x.contiguous(memory_format=torch.channels_last) * styles[:, :, None, None].to(x.dtype)
        groups, wconv = 1, weight.to(x.dtype).contiguous(memory_format=torch.channels_last)
    if up:
        # conv_transpose2d is a true convolution of the zero-inserted input; flip to correlate
        o = wconv.shape[0] // groups
        wt = wconv.reshape(groups, o, in_ch, kh, kw).flip([3, 4]).transpose(1, 2).reshape(groups * in_ch, o, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # side 2H + k - 2
        total = 2 * h - x.shape[-1] + kernel.shape[-1] - 1  # blur padding that gives side 2H
        x = upfirdn2d(x, kernel, pad=(total // 2, total - total // 2), gain=4.0)
    else:
        x = F.conv2d(x, wconv, padding=kh // 2, groups=groups)
    x = x.reshape(n, out_ch, x.shape[-2], x.shape[-1])
    if demodulate and not fused:
        # ||w_o * s||^2 = sum_i s_i^2 * sum_k w_oik^2: one (N, I) x (I, O) product instead of N weights
        dcoefs = torch.rsqrt(styles.square() @ weight.square().sum(dim=[2, 3]).t() + eps)
        x = x * dcoefs[:, :, None, None].to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated/demodulated conv (optionally upsampling x2) + noise + bias + lrelu."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3, up: bool = False
    ):
        super().__init__()
        self.up, self.resolution = up, resolution
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_kernel", blur_kernel(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise_mode: Literal["random", "const", "none"]) -> Tensor:
        styles = self.affine(w)
        if x.shape[0] == 1:  # one image: the fused (grouped) convolution, then the steps one by one
            x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up, kernel=self.resample_kernel)
            noise = self._noise(x, noise_mode)
            return bias_act(x if noise is None else x + noise, self.bias, "lrelu")
        # A batch: lrelu(conv * d + noise + b) * g = lrelu(conv * (d g) + noise g + b g) for g > 0, so the
        # demodulation, noise, bias and gain take two passes over the activations instead of five.
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=False, up=self.up, kernel=self.resample_kernel, fused=False
        )
        dcoefs = torch.rsqrt(styles.square() @ self.weight.square().sum(dim=[2, 3]).t() + 1e-8)
        x = torch.addcmul(
            (self.bias * LRELU_GAIN).to(x.dtype)[None, :, None, None],
            x,
            (dcoefs * LRELU_GAIN).to(x.dtype)[:, :, None, None],
        )
        noise = self._noise(x, noise_mode)
        if noise is not None:
            x = x.add_(noise * LRELU_GAIN)  # in place: addcmul's backward does not need its output
        return F.leaky_relu(x, LRELU_SLOPE, inplace=True)

    def _noise(self, x: Tensor, noise_mode: Literal["random", "const", "none"]) -> Tensor | None:
        if noise_mode == "random":
            return (
                torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype) * self.noise_strength
            )
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        return None


class ToRGB(nn.Module):
    """Modulated 1x1 conv to 3 channels, without demodulation and without activation."""

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3):
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        return bias_act(modulated_conv2d(x, self.weight, styles, demodulate=False), self.bias, "linear")


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv) -> conv -> to-RGB; the image so far
    is upsampled with the blur filter and the block's to-RGB output is added to it."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_conv = 1 if self.is_first else 2
        self.register_buffer("resample_kernel", blur_kernel(), persistent=False)

    def forward(
        self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: Literal["random", "const", "none"]
    ) -> tuple[Tensor, Tensor]:
        # ws: (N, num_conv + 1, w_dim); the last one drives to-RGB (and the next block's conv0)
        if self.is_first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_kernel) + y
        return x, img

    def conv_macs(self) -> int:
        """3x3 conv multiply-accumulates of this block at its output resolution."""
        pixels = self.resolution**2
        first = 0 if self.is_first else self.in_channels * self.out_channels * 9 * pixels
        return first + self.out_channels * self.out_channels * 9 * pixels


class StyleBasedGenerator(nn.Module):
    """What StyleGAN2 and the INR-in-StyleGAN2 generator share: the W space (mapping, truncation,
    per-layer ws, style mixing), the raw-vs-clamped output rule and the optimiser groups.
    Subclasses set `mapping_network`, `blocks`, `num_ws`, `spec` and implement `synthesize`."""

    mapping_network: MappingNetwork
    blocks: nn.ModuleList
    num_ws: int
    z_dim: int
    w_dim: int
    resolution: int

    def mapping(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """z (N, z_dim) -> w (N, w_dim); in training mode also updates w_avg."""
        return self.mapping_network(z, truncation_psi)

    def broadcast_ws(self, w: Tensor) -> Tensor:
        """(N, w_dim) -> (N, num_ws, w_dim); a (N, num_ws, w_dim) input is checked and returned."""
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            return w[:, None].expand(-1, self.num_ws, -1)
        if w.ndim == 3 and w.shape[1:] == (self.num_ws, self.w_dim):
            return w
        raise ValueError(
            f"w must have shape (N, {self.w_dim}) or (N, {self.num_ws}, {self.w_dim}), got {tuple(w.shape)}"
        )

    def mix_styles(self, z: Tensor, ws: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """With probability style_mixing_prob, replace ws[:, cutoff:] (cutoff uniform in
        1..num_ws-1, one per batch) by the w of fresh noise, as StyleGAN2's training does."""
        # drawn on the CPU: no device sync, and it works for models on the meta device
        if torch.rand([], device="cpu").item() >= self.spec.style_mixing_prob:
            return ws
        cutoff = int(torch.randint(1, self.num_ws, (), device="cpu").item())
        w2 = self.mapping_network(torch.randn_like(z), truncation_psi, update_w_avg=False)
        ws = ws.clone()
        ws[:, cutoff:] = w2[:, None]
        return ws

    def synthesize(self, w: Tensor, grid=None, clamp: bool | None = None, **kwargs) -> Tensor:
        raise NotImplementedError

    def forward(self, z: Tensor, truncation_psi: float = 1.0, clamp: bool | None = None, **synthesis_kwargs) -> Tensor:
        """z -> images; style mixing in training mode only; see the class docstring for clamp."""
        ws = self.broadcast_ws(self.mapping(z, truncation_psi))
        if self.training and self.spec.style_mixing_prob > 0:
            ws = self.mix_styles(z, ws, truncation_psi)
        return self.synthesize(ws, clamp=clamp, **synthesis_kwargs)

    def finish_output(self, img: Tensor, clamp: bool | None) -> Tensor:
        """clamp=None clamps to [-1, 1] in eval mode only (samples, metrics) and keeps the raw
        output in training mode (clamping would cut the gradient of saturated pixels)."""
        if clamp is None:
            clamp = not self.training
        return img.clamp(-1.0, 1.0) if clamp else img

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"mapping": list(self.mapping_network.parameters()), "synthesis": list(self.blocks.parameters())}


class StyleGAN2Generator(StyleBasedGenerator):
    """StyleGAN2 config-f generator.

    Output range: the synthesis network does not squash its output. Training uses the raw output
    (clamping would cut the gradient of saturated pixels); `synthesize`/`forward` clamp to [-1, 1]
    when `clamp=True`, and `clamp=None` (default) means "clamp in eval mode only", so the EMA
    generator used for samples and metrics returns images in [-1, 1] while the trained G does not.
    A projector that optimises through an eval-mode G should pass clamp=False.

    Style mixing (probability `spec.style_mixing_prob`) is applied by `forward` in training mode
    only, with one random crossover point per batch, as in StyleGAN2.

    Cost under the paper's convention: see `macs_paper`.
    """

    def __init__(self, spec: StyleGAN2Spec | None = None):
        super().__init__()
        self.spec = spec = spec if spec is not None else StyleGAN2Spec()
        self.z_dim, self.w_dim, self.resolution = spec.z_dim, spec.w_dim, spec.resolution
        self.mapping_network = MappingNetwork(
            spec.z_dim, spec.w_dim, spec.mapping_layers, spec.mapping_lr_multiplier, spec.w_avg_beta
        )
        log2 = int(math.log2(spec.resolution))
        blocks, in_ch = [], 0
        for res in (2**k for k in range(2, log2 + 1)):
            out_ch = spec.channels(res)
            blocks.append(SynthesisBlock(in_ch, out_ch, spec.w_dim, res))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    # --- images ----------------------------------------------------------------------------------

    def synthesize(
        self,
        w: Tensor,
        grid: Grid | None = None,
        clamp: bool | None = None,
        noise_mode: Literal["random", "const", "none"] | None = None,
    ) -> Tensor:
        """w (N, w_dim) or (N, num_ws, w_dim) -> images (N, 3, S, S). A convolutional generator
        has one pixel grid: `grid` must be None or that grid (Grid(resolution) over [0, 1))."""
        if grid is not None and grid != Grid(self.resolution):
            raise ValueError(
                f"StyleGAN2Generator has a fixed {self.resolution}x{self.resolution} pixel grid over [0, 1), got {grid}; "
                "pass grid=None and resample the output for other resolutions"
            )
        ws = self.broadcast_ws(w)
        noise_mode = noise_mode or self.spec.noise_mode
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode)
            w_idx += block.num_conv
        return self.finish_output(img, clamp)

    # --- cost and optimiser groups -----------------------------------------------------------------

    def macs_breakdown(self) -> dict[str, int]:
        """Per-image multiply-accumulates of each part, at the trained resolution.

        conv: the modulated 3x3 convs, in*out*9*pixels at the layer's output resolution; to_rgb:
        the 1x1 to-RGB convs; mapping: the mapping MLP (once per image); affine: the style
        affines (once per image); modulation: computing and demodulating the per-sample weights;
        blur: the [1,3,3,1] filters (4x4 depthwise) after each upsampling conv and on the skip
        image; noise_bias_act: noise, bias and activation adds/multiplies. The upsampling conv is
        counted as a conv on the 2x grid (zero insertion + 3x3); executed as a stride-2 transposed
        conv it needs a quarter of that."""
        conv = to_rgb = affine = modulation = blur = other = 0
        for b in self.blocks:
            pix = b.resolution**2
            conv += b.conv_macs()
            to_rgb += b.out_channels * 3 * pix
            layers = [b.conv1] if b.is_first else [b.conv0, b.conv1]
            for layer in layers:
                affine += layer.affine.weight.numel()
                modulation += 2 * layer.weight.numel()  # scale by styles, then the demodulation norm
                other += 3 * layer.weight.shape[0] * pix
            affine += b.torgb.affine.weight.numel()
            modulation += b.torgb.weight.numel()
            if not b.is_first:
                blur += 16 * (b.out_channels + 3) * pix
        return {
            "conv": conv,
            "to_rgb": to_rgb,
            "mapping": self.mapping_network.macs(),
            "affine": affine,
            "modulation": modulation,
            "blur": blur,
            "noise_bias_act": other,
        }

    def macs_paper(self, resolution: int | None = None) -> int:
        """Per-image MACs under the paper's convention: the synthesis network's 3x3 convs
        (in * out * 3 * 3 * pixels at each layer's output resolution) plus the mapping network
        once per image; to-RGB, affines, blur, noise, bias and activations are not counted,
        as for the INR rows (paper.md, Table 1 notes).

        At 256 (config-f, 30.03M parameters as in Table 1) this gives 83.69 GMACs against the
        paper's 84.36 (-0.8%). No natural sum of parts gives 84.36 exactly: + to-RGB 83.74,
        + every part of `macs_breakdown` 84.13, upsampling convs counted on the (2H+1)^2 output of
        the transposed conv 84.72; so the rule shared with the INR rows is kept. A resolution below the trained
        one costs the full-size image (StyleGAN2 must generate it, then downsample; the
        downsampling filter is not counted)."""
        res = self.resolution if resolution is None else resolution
        if res > self.resolution or res < 1 or res & (res - 1):
            raise ValueError(
                f"resolution {res} is not available from a StyleGAN2 trained at {self.resolution}: "
                f"expected a power of two no larger than {self.resolution}"
            )
        parts = self.macs_breakdown()
        return parts["conv"] + parts["mapping"]
