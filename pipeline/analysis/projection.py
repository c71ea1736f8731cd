"""Latent projection: embed real images into a generator's Z or W space by gradient descent.

StyleGAN2's projector as the paper uses it for KPL (Algorithm 1), without optimising noise maps:
- start at the mean latent: mean W of `num_mean_samples` mapped z (W space) or the mean z = 0 of
  N(0, I) (Z space); the latent's spread `sigma` = sqrt(E ||latent - mean||^2) over the same samples;
- Adam (betas 0.9, 0.999); learning rate lr * ramp, ramp = cosine ramp-down over the last
  `lr_rampdown` fraction of the steps times a linear ramp-up over the first `lr_rampup` fraction;
- Gaussian noise of std sigma * noise_factor * max(0, 1 - t / noise_ramp)^2 added to the latent
  before synthesis (t = step / steps), so the search explores early and settles late;
- a StyleGAN2 generator synthesises with constant noise inputs (noise_mode="const") and unclamped
  output (clamp=False), images above 256 px are area-downsampled to 256 before the loss.
The images of a batch are independent: the loss is a sum of per-image losses and Adam acts per
coordinate, so batching changes speed, not results.

Reconstruction losses (`make_loss`):
- `lpips_vgg`: LPIPS v0.1 on torchvision VGG16 features: channel-normalised features of 5 layers
  (relu1_2 .. relu5_3), squared differences weighted per channel by LPIPS's learned linear layers,
  averaged over space and summed over layers. Needs two files: torchvision's VGG16 weights and the
  LPIPS linear weights (`lpips-vgg-v0.1.pth`, LPIPS's `weights/v0.1/vgg.pth`).
- `vgg_features`: the same distance with every linear weight 1 (plain sum over channels), for when the
  LPIPS linear weights are not available. It is not LPIPS and is never reported as such.
- `pixel_domain`: mean squared pixel error plus `feature_weight` times the mean squared difference of
  a domain feature network's features (any callable images -> features, e.g. the trained keypoint
  regressor's trunk); the offline default. Without a feature network it is plain pixel MSE.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.analysis import locate_weights
from pipeline.analysis.options import LPIPS_FILE, LPIPS_URL, VGG16_FILE, VGG16_URL, ProjectionOptions
from pipeline.data.preview import save_grid

LOSSES = ("lpips_vgg", "vgg_features", "pixel_domain")
SPACES = ("z", "w")
# torchvision VGG16 `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS's taps)
VGG_TAPS = (3, 8, 15, 22, 29)
# LPIPS's input scaling layer for images in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
MAX_LOSS_RESOLUTION = 256


@dataclass
class Projection:
    """What `project` returns for N images."""

    space: str
    latents: Tensor  # (N, D): z or w
    reconstructions: Tensor  # (N, 3, S, S) in [-1, 1] (clamped for display and keypoints)
    loss: np.ndarray  # (N,) final reconstruction loss per image, without latent noise
    history: list[float] = field(default_factory=list)  # mean loss every ~1% of the steps


# --- losses -----------------------------------------------------------------------------------------


class PixelDomainLoss(nn.Module):
    """Per-image mean squared pixel error + feature_weight * mean squared feature difference."""

    def __init__(self, feature_net: Callable[[Tensor], Tensor] | None = None, feature_weight: float = 1.0):
        super().__init__()
        self.feature_net, self.feature_weight = feature_net, feature_weight
        self.name = "pixel_domain" if feature_net is not None and feature_weight > 0 else "pixel"

    def target_state(self, target: Tensor) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            feats = self.feature_net(target).flatten(1) if self.name == "pixel_domain" else None
        return target, feats

    def forward(self, synth: Tensor, state: tuple[Tensor, Tensor | None]) -> Tensor:
        target, feats = state
        loss = (synth - target).square().flatten(1).mean(1)
        if feats is not None:
            loss = loss + self.feature_weight * (self.feature_net(synth).flatten(1) - feats).square().mean(1)
        return loss


VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 `features` up to relu5_3 (same layer indices, so its weights load), randomly
    initialised; built here so the unused classifier (120M parameters) is never allocated."""
    layers: list[nn.Module] = []
    ch = 3
    for v in VGG16_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU(inplace=False)]
            ch = v
    return nn.Sequential(*layers)


def load_vgg16_features(path: Path) -> nn.Sequential:
    """VGG16 features with weights from a full torchvision VGG16 state dict or a features-only one."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' is not a VGG16 state dict; download {VGG16_URL} again")
    net = vgg16_features()
    feats = {
        k.removeprefix("features."): v
        for k, v in state.items()
        if k.startswith("features.") and int(k.split(".")[1]) < len(net)
    }
    try:
        net.load_state_dict(feats)
    except RuntimeError as err:
        raise ValueError(
            f"'{path}' does not hold torchvision VGG16 feature weights ({err}); download {VGG16_URL} again"
        ) from None
    return net


class VGGFeatureDistance(nn.Module):
    """LPIPS-VGG when `lin` (5 per-channel weight vectors) is given, else the unweighted variant
    `vgg_features`; per-image distance, images in [-1, 1]."""

    def __init__(self, vgg: nn.Sequential, lin: list[Tensor] | None = None):
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.name = "lpips_vgg" if lin is not None else "vgg_features"
        widths = [vgg[i - 1].out_channels for i in VGG_TAPS]
        if lin is None:
            lin = [torch.ones(c) for c in widths]
        if [len(w) for w in lin] != widths:
            raise ValueError(f"LPIPS linear weights have {[len(w) for w in lin]} channels, VGG16 taps have {widths}")
        for i, w in enumerate(lin):
            self.register_buffer(f"lin{i}", w.float().clone())
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def _features(self, x: Tensor) -> list[Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in VGG_TAPS:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def target_state(self, target: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return self._features(target)

    def forward(self, synth: Tensor, state: list[Tensor]) -> Tensor:
        total = 0.0
        for i, (a, b) in enumerate(zip(self._features(synth), state)):
            w = getattr(self, f"lin{i}").view(1, -1, 1, 1)
            total = total + ((a - b).square() * w).sum(1).mean((1, 2))
        return total


def load_lpips_lin(path: Path) -> list[Tensor]:
    """The 5 per-channel weight vectors of LPIPS v0.1 (keys lin{i}.model.1.weight, shape (1, C, 1, 1))."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return [state[f"lin{i}.model.1.weight"].flatten() for i in range(len(VGG_TAPS))]
    except (KeyError, TypeError):
        raise ValueError(
            f"'{path}' is not LPIPS v0.1 VGG linear weights (keys lin0.model.1.weight ...); download {LPIPS_URL} again"
        ) from None


def make_loss(options: ProjectionOptions, feature_net: Callable[[Tensor], Tensor] | None = None) -> nn.Module:
    """The reconstruction loss `options.loss` names; weights are located before any work."""
    if options.loss == "pixel_domain":
        return PixelDomainLoss(feature_net, options.feature_weight)
    vgg = load_vgg16_features(
        locate_weights("torchvision VGG16", VGG16_FILE, VGG16_URL, options.vgg_weights, options.download)
    )
    if options.loss == "vgg_features":
        return VGGFeatureDistance(vgg)
    lin = load_lpips_lin(
        locate_weights("LPIPS v0.1 VGG linear layers", LPIPS_FILE, LPIPS_URL, options.lpips_weights, options.download)
    )
    return VGGFeatureDistance(vgg, lin)


# --- projector --------------------------------------------------------------------------------------


def synthesize(G: nn.Module, w: Tensor) -> Tensor:
    """G.synthesize(w) unclamped and with constant noise inputs where G has these options."""
    params = inspect.signature(G.synthesize).parameters
    kwargs = {}
    if "clamp" in params:
        kwargs["clamp"] = False
    if "noise_mode" in params:
        kwargs["noise_mode"] = "const"
    return G.synthesize(w, **kwargs)


def generate(G: nn.Module, latents: Tensor, space: str) -> Tensor:
    """Images from z (through G.mapping) or from w."""
    return synthesize(G, G.mapping(latents) if space == "z" else latents)


@torch.no_grad()
def latent_statistics(
    G: nn.Module,
    space: str,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, float]:
    """Mean latent (D,) and spread sqrt(E ||latent - mean||^2) of `num_samples` z ~ N(0, I) or their w."""
    if space not in SPACES:
        raise ValueError(f"unknown latent space {space!r}; allowed: {', '.join(SPACES)}")
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, num_samples, batch_size):
        z = torch.randn(min(batch_size, num_samples - start), G.z_dim, generator=gen).to(device)
        chunks.append((G.mapping(z) if space == "w" else z).float())
    samples = torch.cat(chunks)
    mean = torch.zeros(G.z_dim, device=device) if space == "z" else samples.mean(0)
    spread = float(((samples - mean).square().sum(1).mean()).sqrt())
    return mean, spread


def learning_rate(step: int, options: ProjectionOptions) -> float:
    t = step / options.steps
    ramp = min(1.0, (1.0 - t) / options.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if options.lr_rampup > 0:
        ramp *= min(1.0, t / options.lr_rampup)
    return options.lr * ramp


def noise_scale(step: int, options: ProjectionOptions, spread: float) -> float:
    t = step / options.steps
    return spread * options.noise_factor * max(0.0, 1.0 - t / options.noise_ramp) ** 2


def _loss_input(images: Tensor) -> Tensor:
    if images.shape[-1] > MAX_LOSS_RESOLUTION:
        images = F.interpolate(images, size=(MAX_LOSS_RESOLUTION, MAX_LOSS_RESOLUTION), mode="area")
    return images


class _Frozen:
    """G in eval mode without parameter gradients for the duration; restored afterwards."""

    def __init__(self, G: nn.Module):
        self.G = G

    def __enter__(self):
        self.training = self.G.training
        self.flags = [p.requires_grad for p in self.G.parameters()]
        self.G.eval().requires_grad_(False)

    def __exit__(self, *exc):
        self.G.train(self.training)
        for p, flag in zip(self.G.parameters(), self.flags):
            p.requires_grad_(flag)


def project(
    G: nn.Module,
    targets: Tensor,
    space: Literal["z", "w"],
    loss_fn: nn.Module,
    options: ProjectionOptions,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Projection:
    """Project target images (N, 3, S, S) in [-1, 1] into G's `space`; see the module docstring."""
    if space not in SPACES:
        raise ValueError(f"unknown latent space {space!r}; allowed: {', '.join(SPACES)}")
    if (
        targets.ndim != 4
        or targets.shape[1] != 3
        or targets.shape[-1] != G.resolution
        or targets.shape[-2] != G.resolution
    ):
        raise ValueError(
            f"targets must be (N, 3, {G.resolution}, {G.resolution}) in [-1, 1] to match the generator, got {tuple(targets.shape)}"
        )
    device = next(iter(G.parameters()), torch.empty(0)).device
    with _Frozen(G):
        mean, spread = latent_statistics(G, space, options.num_mean_samples, seed, device=device)
        latents, recons, losses, history = [], [], [], np.zeros(0)
        for start in range(0, len(targets), options.batch_size):
            chunk = targets[start : start + options.batch_size].to(device).float()
            lat, rec, loss, hist = _project_batch(
                G, chunk, space, loss_fn, options, mean, spread, seed + start, progress
            )
            latents.append(lat), recons.append(rec), losses.append(loss)
            history = hist * len(chunk) if not len(history) else history + hist * len(chunk)
    return Projection(
        space, torch.cat(latents), torch.cat(recons), np.concatenate(losses), (history / len(targets)).tolist()
    )


def _project_batch(G, target, space, loss_fn, options, mean, spread, seed, progress):
    gen = torch.Generator(device=target.device).manual_seed(seed)
    state = loss_fn.target_state(_loss_input(target))
    opt_latent = mean.detach().clone().expand(len(target), -1).contiguous().requires_grad_(True)
    opt = torch.optim.Adam([opt_latent], betas=(0.9, 0.999), lr=options.lr)
    every = max(1, options.steps // 100)
    history = []
    for step in range(options.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, options)
        noisy = opt_latent + torch.randn(opt_latent.shape, generator=gen, device=target.device) * noise_scale(
            step, options, spread
        )
        per_image = loss_fn(_loss_input(generate(G, noisy, space)), state)
        opt.zero_grad(set_to_none=True)
        per_image.sum().backward()
        opt.step()
        if step % every == 0:
            history.append(float(per_image.detach().mean()))
        if progress is not None:
            progress(len(target))
    with torch.no_grad():
        final = opt_latent.detach()
        images = generate(G, final, space)
        loss = loss_fn(_loss_input(images), state)
    return final.cpu(), images.clamp(-1, 1).cpu(), loss.cpu().numpy().astype(np.float64), np.asarray(history)


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] (N, 3, S, S) -> uint8 (N, S, S, 3)."""
    return ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_projection_figure(
    path: str | Path,
    targets: Tensor,
    reconstructions: list[Tensor],
    columns: int = 8,
    labels: list[str] | None = None,
    title: str | None = None,
) -> None:
    """Rows of `columns` images: the targets, then each reconstruction set (e.g. Z then W) below them, each
    row labelled (`labels`: one per reconstruction set, e.g. ["Z", "W"])."""
    n = min(columns, len(targets))
    rows = [to_uint8(targets[:n])] + [to_uint8(r[:n]) for r in reconstructions]
    row_labels = None if labels is None else ["targets", *labels]
    save_grid(path, np.concatenate(rows), n, title=title, row_labels=row_labels)


__all__ = [
    "LOSSES",
    "SPACES",
    "Projection",
    "ProjectionOptions",
    "PixelDomainLoss",
    "VGGFeatureDistance",
    "generate",
    "latent_statistics",
    "learning_rate",
    "make_loss",
    "noise_scale",
    "project",
    "save_projection_figure",
    "synthesize",
    "to_uint8",
]


class ProjectionsError(ValueError):
    """Projections that cannot be used (unreadable, or made from another snapshot than the one there now);
    the message says what to re-run."""


# The projections file records the snapshot it was made from, so that KPL, which pairs the projected
# latents with fresh samples of the snapshot's generator, never pairs latents of an older one.
SNAPSHOT_SHA256, SNAPSHOT_STEP = "snapshot_sha256", "snapshot_step"


def snapshot_record(sha256: str, step: int) -> dict[str, np.ndarray]:
    """The arrays that identify a projections file's snapshot (stored beside the latents)."""
    return {SNAPSHOT_SHA256: np.array(sha256), SNAPSHOT_STEP: np.array(step, dtype=np.int64)}


def check_projections_source(
    projections: dict[str, np.ndarray], path: Path, sha256: str, step: int, snapshot: Path, model: str
) -> None:
    """Raise ProjectionsError unless the projections at `path` were made from the snapshot of hash `sha256`
    (at `step`, in file `snapshot`)."""
    redo = f"re-run `pipeline project --model {model}` (or `dvc repro project@{model}`)"
    if SNAPSHOT_SHA256 not in projections:
        raise ProjectionsError(
            f"projections '{path}' do not record which snapshot they were made from (written by an older "
            f"version), so they may be of an earlier '{snapshot}'; {redo}"
        )
    made_from = str(projections[SNAPSHOT_SHA256])
    if made_from != sha256:
        then = int(projections[SNAPSHOT_STEP]) if SNAPSHOT_STEP in projections else "?"
        raise ProjectionsError(
            f"projections '{path}' were made from another snapshot (step {then}, sha256 {made_from[:12]}) than '{snapshot}' "
            f"now holds (step {step}, sha256 {sha256[:12]}): the row was trained again since; {redo}"
        )
