"""Properties of continuous images (paper section 1; Figs. 2/10, 3/15, 5 and 17): an INR generator's
image is a function of the coordinates, so it can be evaluated outside the frame (extrapolation), on
a denser grid (super-resolution), interpolated in parameter space, and its Fourier bases read off.

Generators with an INR decoder (`render(params, grid)`, `decoder`: the Table 1 INR rows) show all four.
INR-GAN in StyleGAN2's layout (inr_gan_sg2, the authors' released architecture) draws any grid through
`synthesize(w, grid)`, so it shows the first two; it generates no INR parameters (w modulates shared
1x1 layers) and its Fourier frequencies are fixed, so the other two do not apply and are named with a
reason (`not_applicable`). StyleGAN2 draws one fixed pixel grid from a learned constant and is refused.

What inr_gan_sg2 does off its training grid is ours, not the authors': their code
(universome/inr-gan, src/training/layers.py) always builds coordinates over [-1, 1) from the
feature map's size and concatenates the learned constant at its trained size, so it can draw
nothing but the training grid. Here every block evaluates its sin/cos embedding at the new points,
and the learned constant is sampled bilinearly between its trained points and takes its edge values
outside [0, 1) (pipeline.models.inr_sg2.CoordinateEmbedding.sample_const): the wide images' borders
are partly a continuation of the constant's edge, not a learned extension. Its fixed sin/cos basis
repeats every frame but at its lowest frequencies (the axis ones' lowest, the diagonals' two lowest),
and random Fourier features exist only at 128 px and above, so a point one frame outside sees mostly
the features of the opposite side: margins near 1 draw ghost copies of the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.analysis.projection import to_uint8
from pipeline.models.coords import Grid
from pipeline.models.inr_sg2 import INRStyleGAN2Generator
from pipeline.reporting import pyplot, save_figure

SUPERRES_BASELINES = ("nearest", "bilinear", "bicubic")
PROPERTIES = ("extrapolation", "superresolution", "interpolation", "frequencies")
SG2_NOT_APPLICABLE = {
    "interpolation": "no INR parameters: inr_gan_sg2 modulates shared 1x1 layers with w (FMM) instead of generating "
    "an INR's weights, so Fig. 5's parameter-space interpolation has nothing to interpolate",
    "frequencies": "no generated Fourier bases: inr_gan_sg2's coordinate embedding has fixed log-spaced and random "
    "frequencies shared by every image, so Fig. 17's per-image |B_f| does not exist",
}


def has_inr_decoder(G: nn.Module) -> bool:
    return hasattr(G, "render") and hasattr(G, "decoder")


def pixels_are_independent(G: nn.Module) -> bool:
    """Whether a pixel depends only on its own coordinates (at every block), so that a wider grid leaves
    the pixels inside [0, 1) as they were. Not so for the authors' "-bil" layout: its align_corners=True
    bilinear upsampling places samples by the grid's extent and instance norm divides by a std over all
    pixels."""
    if isinstance(G, INRStyleGAN2Generator):
        return G.spec.upsampling == "nearest" and not G.spec.instance_norm
    return has_inr_decoder(G)


def not_applicable(G: nn.Module) -> dict[str, str]:
    """The properties (of PROPERTIES) that G cannot show, each with a one-line reason; a ValueError when
    none applies (a fixed pixel grid)."""
    if has_inr_decoder(G):
        return {}
    if isinstance(G, INRStyleGAN2Generator):
        return dict(SG2_NOT_APPLICABLE)
    raise ValueError(
        f"this generator is a {type(G).__name__}, which has no INR decoder and draws a fixed pixel grid (nothing "
        f"to extrapolate, super-resolve, interpolate or read bases from); list INR rows (latent_inr, hyper_*, "
        f"inr_gan) or inr_gan_sg2 rows"
    )


def check_inr_generator(G: nn.Module, what: str) -> None:
    if not has_inr_decoder(G):
        raise ValueError(
            f"{what} is a {type(G).__name__}, which has no INR decoder (no INR parameters to interpolate, "
            f"no Fourier bases to read); list only INR rows (latent_inr, hyper_*, inr_gan)"
        )


def _renderer(G: nn.Module, w: Tensor) -> Callable[[Grid], Tensor]:
    """grid -> the images of w on it, in [-1, 1]: through the INR parameters when G has a decoder (they
    are generated once), else through G.synthesize (inr_gan_sg2); a fixed-grid generator is refused."""
    if has_inr_decoder(G):
        params = inr_params(G, w)
        return lambda grid: G.render(params, grid).clamp(-1, 1)
    not_applicable(G)
    return lambda grid: G.synthesize(w, grid).clamp(-1, 1)


def inr_params(G: nn.Module, w: Tensor) -> Tensor:
    """The INR parameters of images with W-space codes w: the hypernetwork's output, or w itself for
    the latent-conditioned INR (row 1), whose shared INR takes w as an input."""
    return G.inr_params(w) if hasattr(G, "inr_params") else w


def extrapolation_grid(resolution: int, margin: float) -> Grid:
    """[-margin, 1 + margin)^2 at the trained pixel spacing: resolution * (1 + 2 margin) pixels a side."""
    span = 1.0 + 2.0 * margin
    side = resolution * span
    if margin < 0 or abs(side - round(side)) > 1e-6 * side:
        raise ValueError(
            f"extrapolation margin {margin} gives {side:g} pixels a side at {resolution} px; choose a margin "
            f"that is a multiple of 1/{2 * resolution} (e.g. 0.25 or 0.5)"
        )
    return Grid(int(round(side)), -margin, 1.0 + margin)


def check_margin(G: nn.Module, margin: float) -> Grid:
    """The extrapolation grid of `margin` for G, or a ValueError when some block would leave its trained
    lattice: inr_gan_sg2 draws block k on r_k (1 + 2 margin) pixels, so margin r_k must be a whole
    number at every block (the lowest decides) for the points inside [0, 1) to be the trained ones."""
    grid = extrapolation_grid(G.resolution, margin)
    if isinstance(G, INRStyleGAN2Generator):
        low = min(b.resolution for b in G.blocks)
        shift = margin * low
        if abs(shift - round(shift)) > 1e-6:
            raise ValueError(
                f"extrapolation margin {margin:g} is {shift:g} pixels of the {low} px blocks, which would move them "
                f"off their trained pixels; choose a margin that is a multiple of 1/{low} (e.g. 0.25 or 0.5)"
            )
    return grid


@torch.no_grad()
def extrapolate(G: nn.Module, w: Tensor, margins: Sequence[float]) -> list[Tensor]:
    """Images of w over [-m, 1 + m)^2 for each margin m, at the trained density; the central
    resolution^2 pixels are the ordinary image (multi-scale blocks keep their density too) when the
    pixels are independent (`pixels_are_independent`)."""
    draw = _renderer(G, w)
    return [draw(check_margin(G, m)) for m in margins]


@torch.no_grad()
def super_resolve(G: nn.Module, w: Tensor, factor: int = 2) -> dict[str, Tensor]:
    """Fig. 3: the image at its trained resolution, the INR on a `factor`x denser grid, and the
    trained-resolution image enlarged by nearest, bilinear and bicubic interpolation. inr_gan_sg2 runs
    every block on a `factor`x denser grid (as UpsampledFID does), so its even pixels are not the
    trained ones: the lower blocks' nearest-neighbour context moves with the denser lattice."""
    draw = _renderer(G, w)
    native = draw(Grid(G.resolution))
    out = {"native": native, "inr": draw(Grid(G.resolution * factor))}
    for mode in SUPERRES_BASELINES:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        out[mode] = F.interpolate(native, scale_factor=factor, mode=mode, **kwargs).clamp(-1, 1)
    return out


@torch.no_grad()
def interpolate(G: nn.Module, w_a: Tensor, w_b: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Fig. 5: (parameter-space, pixel-space) interpolations from image a to image b, each
    (N, steps, 3, S, S): the INR of (1 - t) theta_a + t theta_b against (1 - t) x_a + t x_b."""
    check_inr_generator(G, "this generator")
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps (its two ends), got {steps}")
    theta_a, theta_b = inr_params(G, w_a), inr_params(G, w_b)
    grid = Grid(G.resolution)
    ts = torch.linspace(0.0, 1.0, steps, device=theta_a.device)
    in_params = torch.stack([G.render(torch.lerp(theta_a, theta_b, t), grid) for t in ts], dim=1)
    x_a, x_b = in_params[:, 0], in_params[:, -1]
    in_pixels = torch.stack([torch.lerp(x_a, x_b, t) for t in ts], dim=1)
    return in_params.clamp(-1, 1), in_pixels.clamp(-1, 1)


@torch.no_grad()
def frequency_norms(G: nn.Module, w: Tensor) -> list[np.ndarray]:
    """Fig. 17: per block, the row norms |B_f| of every image's Fourier basis (N * F_k values):
    how fast the features the hypernetwork chose oscillate, in radians per unit of the [0, 1) frame."""
    check_inr_generator(G, "this generator")
    bases = G.decoder.fourier_bases(inr_params(G, w)) if hasattr(G.decoder, "fourier_bases") else []
    return [b.norm(dim=-1).flatten().double().cpu().numpy() for b in bases]


def save_extrapolation_figure(
    path: str | Path, native: Tensor, wides: Sequence[Tensor], margins: Sequence[float], title: str = ""
) -> None:
    """One row per image: the ordinary image, then each extrapolation with the [0, 1)^2 frame outlined."""
    from matplotlib.patches import Rectangle

    plt = pyplot()

    n, s = native.shape[0], native.shape[-1]
    fig, axes = plt.subplots(n, 1 + len(wides), figsize=(1.8 * (1 + len(wides)), 1.8 * n), squeeze=False)
    columns = [(native, 0.0)] + list(zip(wides, margins))
    for j, (images, margin) in enumerate(columns):
        pixels = to_uint8(images)
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(pixels[i], interpolation="nearest")
            if margin:
                inset = margin * s
                ax.add_patch(Rectangle((inset - 0.5, inset - 0.5), s, s, fill=False, edgecolor="red", linewidth=0.8))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("[0, 1]" if not margin else f"[{-margin:g}, {1 + margin:g}]", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def save_image_table(path: str | Path, columns: dict[str, Tensor], title: str = "") -> None:
    """A table of images: one column per entry (its key as the header), one row per image."""
    plt = pyplot()
    n = next(iter(columns.values())).shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n + 0.3), squeeze=False)
    for j, (name, images) in enumerate(columns.items()):
        pixels = to_uint8(images)
        for i in range(n):
            axes[i, j].imshow(pixels[i], interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def save_frequency_figure(path: str | Path, norms: Sequence[np.ndarray], labels: Sequence[str], title: str) -> None:
    """Fig. 17: a histogram of |B_f| per block."""
    plt = pyplot()
    fig, axes = plt.subplots(1, max(1, len(norms)), figsize=(3.2 * max(1, len(norms)), 2.6), squeeze=False)
    for ax, values, label in zip(axes[0], norms, labels):
        ax.hist(values, bins=40, color="tab:blue")
        ax.set_xlabel("|B_f| (radians per unit)")
        ax.set_title(label, fontsize=9)
    axes[0, 0].set_ylabel("count")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
