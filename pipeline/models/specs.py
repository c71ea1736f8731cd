"""Typed settings of every generator kind, and the paper-size presets of Table 1.

One pydantic model per kind (extra keys are errors), joined in `GeneratorSpec`, a union
discriminated on `kind`. The INR rows' defaults are the paper's sizes; `paper_spec(kind, resolution)`
gives the configuration that reproduces Table 1's cost columns (docs/table1_cost_notes.md).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIN_RESOLUTION, MAX_RESOLUTION = 4, 4096  # INR rows: any power-of-two grid
STYLE_MIN_RESOLUTION, STYLE_MAX_RESOLUTION = 16, 1024  # StyleGAN2-based generators and the discriminator

FMMActivation = Literal["sigmoid2", "sigmoid", "identity", "centred"]
FMM_ACTIVATIONS: tuple[str, ...] = ("sigmoid2", "sigmoid", "identity", "centred")
Upsampling = Literal["nearest", "bilinear"]
UPSAMPLING_MODES: tuple[str, ...] = ("nearest", "bilinear")


def check_power_of_two(value: int, what: str = "resolution") -> int:
    if not (MIN_RESOLUTION <= value <= MAX_RESOLUTION) or value & (value - 1):
        raise ValueError(
            f"{what} {value} is not allowed: expected a power of two between "
            f"{MIN_RESOLUTION} and {MAX_RESOLUTION} (4, 8, ..., 1024, ...)"
        )
    return value


# StyleGAN2-based generators (Table 1's baseline, Table 2's INR-in-StyleGAN2) and the discriminator.


def check_resolution(value: int) -> int:
    """A model resolution must be a power of two in [16, 1024]."""
    if not (STYLE_MIN_RESOLUTION <= value <= STYLE_MAX_RESOLUTION) or value & (value - 1):
        raise ValueError(
            f"resolution {value} is not supported: expected a power of two between {STYLE_MIN_RESOLUTION} and "
            f"{STYLE_MAX_RESOLUTION} (16, 32, ..., 1024)"
        )
    return value


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's channel rule: min(channel_base / resolution, channel_max), at least 1."""
    c = min(channel_base // resolution, channel_max)
    if c < 1:
        raise ValueError(
            f"channel_base {channel_base} gives no channels at resolution {resolution}; raise channel_base to at least {resolution}"
        )
    return c


class _StyleChannels(BaseModel):
    """StyleGAN2's resolution range and channel rule, for the specs that define `resolution`,
    `channel_base` and `channel_max` (StyleGAN2, INR-in-StyleGAN2, the discriminator)."""

    @field_validator("resolution", check_fields=False)
    @classmethod
    def _resolution(cls, v: int) -> int:
        return check_resolution(v)

    def channels(self, resolution: int) -> int:
        return channels_at(resolution, self.channel_base, self.channel_max)


class StyleGAN2Spec(_StyleChannels):
    """StyleGAN2 generator settings; defaults are config-f (channel multiplier 2)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stylegan2"] = "stylegan2"
    resolution: int = Field(default=256, description="output side, a power of two in [16, 1024]")
    z_dim: int = Field(default=512, gt=0)
    w_dim: int = Field(default=512, gt=0)
    mapping_layers: int = Field(default=8, ge=1)
    mapping_lr_multiplier: float = Field(default=0.01, gt=0.0)
    channel_base: int = Field(
        default=32768, gt=0, description="channels at resolution r = min(channel_base // r, channel_max)"
    )
    channel_max: int = Field(default=512, gt=0)
    style_mixing_prob: float = Field(
        default=0.9, ge=0.0, le=1.0, description="probability of mixing two latents per batch in training mode"
    )
    w_avg_beta: float = Field(
        default=0.995, ge=0.0, lt=1.0, description="decay of the running mean of w used by truncation"
    )
    noise_mode: Literal["random", "const", "none"] = Field(
        default="random", description="noise inputs used when synthesize() is not told otherwise"
    )


class INRStyleGAN2Spec(_StyleChannels):
    """Settings of the INR decoder inside StyleGAN2's generator (Table 2). Where the paper is silent
    the defaults are the authors' StyleGAN2-ADA code (src/ of universome/inr-gan, configs/inr-gan.yml;
    docs/conformance.md): the paper's knobs stay (upsampling, rank, extra layers, embeddings)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["inr_gan_sg2"] = "inr_gan_sg2"
    resolution: int = Field(default=256, description="output side, a power of two in [16, 1024]")
    z_dim: int = Field(default=512, gt=0)
    w_dim: int = Field(default=512, gt=0)
    mapping_layers: int = Field(default=2, ge=1)
    mapping_lr_multiplier: float = Field(default=0.01, gt=0.0)
    style_mixing_prob: float = Field(
        default=0.0, ge=0.0, le=1.0, description="0 in the authors' config (loss_kwargs); StyleGAN2's own is 0.9"
    )
    w_avg_beta: float = Field(default=0.995, ge=0.0, lt=1.0)
    input_resolution: int | None = Field(
        default=None,
        description="side of StyleGAN2's blocks 4 .. input_resolution, which all run there; None = min(32, resolution // 2)",
    )
    channel_base: int = Field(
        default=32768, gt=0, description="channels at resolution r = min(channel_base // r, channel_max)"
    )
    channel_max: int = Field(default=512, gt=0)
    fmm_rank: int = Field(default=10, ge=1)
    upsampling: Literal["nearest", "bilinear"] = "nearest"
    instance_norm: bool = Field(
        default=False,
        description="divide the input of every layer but a block's first by its per-channel std over the "
        "pixels (the authors' '-bil' models); makes pixels depend on each other",
    )
    extra_layer_resolutions: tuple[int, ...] = (128, 256)
    diagonal_max_resolution: int = Field(default=64, description="fixed basis has 4 directions up to here, 2 above")
    random_fourier_features: int = Field(
        default=64, ge=0, description="channels (sin + cos) of random Fourier features; must be even"
    )
    fourier_scale: float = Field(
        default=math.sqrt(10.0),
        gt=0.0,
        description="std of the random Fourier frequencies (radians per unit of [-1, 1))",
    )
    random_fourier_resolutions: tuple[int, ...] = (128, 256)
    const_channels: int = Field(default=128, ge=0)
    const_channels_high: int = Field(default=64, ge=0)
    const_high_from: int = Field(default=128, description="blocks at this resolution and above use const_channels_high")
    fourier_seed: int = 0

    @field_validator("random_fourier_features")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"random_fourier_features {v} must be even (one sine and one cosine per frequency)")
        return v

    @model_validator(mode="after")
    def _input_resolution(self) -> INRStyleGAN2Spec:
        r0 = self.first_resolution
        if r0 < 4 or r0 > self.resolution or r0 & (r0 - 1):
            raise ValueError(
                f"input_resolution {r0} is not a power of two between 4 and the resolution {self.resolution}"
            )
        return self

    @property
    def first_resolution(self) -> int:
        return self.input_resolution if self.input_resolution is not None else min(32, self.resolution // 2)

    def block_resolutions(self) -> list[int]:
        """Where each of StyleGAN2's blocks 4, 8, .., resolution runs: blocks up to the input
        resolution all run at it (no upsampling between them), later ones at their own."""
        return [max(2**k, self.first_resolution) for k in range(2, self.resolution.bit_length())]


class DiscriminatorSpec(_StyleChannels):
    """Discriminator settings; defaults are StyleGAN2 config-e at 256."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(default=256, description="input side, a power of two in [16, 1024]")
    channel_base: int = Field(
        default=16384,
        gt=0,
        description="channels at resolution r = min(channel_base // r, channel_max); 16384 = channel multiplier 1",
    )
    channel_max: int = Field(default=512, gt=0)
    mbstd_group_size: int = Field(default=4, ge=1)
    mbstd_num_features: int = Field(default=1, ge=1)


# The INR rows of Table 1.


class _INRRowSpec(BaseModel):
    """Fields shared by the INR rows: output resolution and the hypernetwork (or mapping) sizes."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(default=256, description="trained output side, a power of two")
    z_dim: int = Field(default=512, gt=0)
    hyper_dim: int = Field(default=1024, gt=0, description="hypernetwork width = W-space dimension")
    hyper_residual: int = Field(default=2, ge=0, description="residual layers after Linear z_dim -> hyper_dim")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        return check_power_of_two(v)


class LatentINRSpec(_INRRowSpec):
    """Row 1: shared-weight INR on [x, y, w], w the hypernetwork trunk's output."""

    kind: Literal["latent_inr"] = "latent_inr"
    width: int = Field(default=512, gt=0)
    n_layers: int = Field(default=6, ge=1, description="hidden layers (the first takes [x, y, w])")
    skip_input: bool = Field(default=True, description="layers after the first also take [x, y, w]")


class HyperINRSpec(_INRRowSpec):
    """Row 2: every INR weight generated (full weight generation); input raw (x, y)."""

    kind: Literal["hyper_inr"] = "hyper_inr"
    width: int = Field(default=512, gt=0)
    n_layers: int = Field(default=6, ge=1, description="hidden layers (the first takes (x, y))")
    skip_coords: bool = Field(default=True, description="layers after the first also take (x, y)")


class HyperFourierSpec(HyperINRSpec):
    """Row 3: row 2 with Fourier features of a per-image basis as the coordinate embedding."""

    kind: Literal["hyper_fourier"] = "hyper_fourier"  # type: ignore[assignment]
    n_freqs: int = Field(default=256, ge=1, description="F: Fourier features are 2F wide")
    fourier_scale: float = Field(default=10.0, gt=0.0, description="B = scale * raw")


class HyperFMMSpec(HyperFourierSpec):
    """Row 4: row 3 with FMM layers (shared W_s modulated by a rank-r product per image)."""

    kind: Literal["hyper_fmm"] = "hyper_fmm"  # type: ignore[assignment]
    rank: int = Field(default=10, ge=1)
    fmm_activation: FMMActivation = "sigmoid2"

    @model_validator(mode="after")
    def _rank_fits(self) -> HyperFMMSpec:
        smallest = min(2 * self.n_freqs, self.width)
        if self.rank > smallest:
            raise ValueError(
                f"FMM rank {self.rank} is larger than the smallest FMM layer side {smallest} "
                f"(2F = {2 * self.n_freqs}, width = {self.width}); use rank <= {smallest}"
            )
        return self


class INRBlockSpec(BaseModel):
    """One block of the multi-scale INR."""

    model_config = ConfigDict(extra="forbid")

    resolution: int
    width: int = Field(gt=0)
    n_freqs: int = Field(ge=1, description="F of this block's Fourier features (2F wide)")
    n_layers: int = Field(ge=1, description="FMM layers after the connector (block 0: after nothing)")
    to_rgb: bool = Field(default=False, description="the last block always has one")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        return check_power_of_two(v, "block resolution")


# Table 1's multi-scale configurations (resolution: width / F / layers); see docs/table1_cost_notes.md.
# 128 and 256 are the released LSUN configs with F changed: at 128 in both blocks (released 256 at
# the 64 and the 128 block, ours 128 and 32), at 256 in the 256 block (released 128, ours 64); the
# changes bring GMACs within 0.1% of Table 1. 1024 is the released FFHQ config unchanged (F
# 256/128/32/8): the paper's 1024 cell (47.35 GMACs) is within 0.1% of it, our 256 block's F is not.
INR_GAN_PAPER_BLOCKS: dict[int, list[dict[str, Any]]] = {
    128: [
        dict(resolution=64, width=512, n_freqs=128, n_layers=3, to_rgb=False),
        dict(resolution=128, width=512, n_freqs=32, n_layers=4, to_rgb=True),
    ],
    256: [
        dict(resolution=128, width=512, n_freqs=256, n_layers=4, to_rgb=True),
        dict(resolution=256, width=256, n_freqs=64, n_layers=4, to_rgb=True),
    ],
    1024: [
        dict(resolution=128, width=512, n_freqs=256, n_layers=4, to_rgb=True),
        dict(resolution=256, width=256, n_freqs=128, n_layers=4, to_rgb=True),
        dict(resolution=512, width=64, n_freqs=32, n_layers=2, to_rgb=True),
        dict(resolution=1024, width=32, n_freqs=8, n_layers=1, to_rgb=True),
    ],
}


class INRGANSpec(_INRRowSpec):
    """Row 5 (INR-GAN): FMM hypernetwork decoder with the multi-scale INR."""

    kind: Literal["inr_gan"] = "inr_gan"
    blocks: list[INRBlockSpec] = Field(description="omit to use the paper's blocks for 128, 256 or 1024")
    rank: int = Field(default=10, ge=1)
    fmm_activation: FMMActivation = "sigmoid2"
    upsampling: Upsampling = "nearest"
    fourier_scale: float = Field(default=10.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _paper_blocks(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("blocks") is None:
            res = data.get("resolution", cls.model_fields["resolution"].default)
            if res not in INR_GAN_PAPER_BLOCKS:
                raise ValueError(
                    f"inr_gan has no block configuration for resolution {res}: give `blocks`, "
                    f"or use one of {sorted(INR_GAN_PAPER_BLOCKS)}"
                )
            data = {**data, "blocks": INR_GAN_PAPER_BLOCKS[res]}
        return data

    @model_validator(mode="after")
    def _blocks_fit(self) -> INRGANSpec:
        res = [b.resolution for b in self.blocks]
        if not res:
            raise ValueError("inr_gan needs at least one block")
        if res[-1] != self.resolution:
            raise ValueError(
                f"inr_gan resolution {self.resolution} has no block: the blocks are at {res} and "
                f"the last one must be at the output resolution"
            )
        for lo, hi in zip(res, res[1:]):
            if hi != 2 * lo:
                raise ValueError(f"inr_gan block resolutions must double from block to block, got {res}")
        sides = [s for b in self.blocks for s in (2 * b.n_freqs, b.width)]
        smallest = min(sides)
        if self.rank > smallest:
            raise ValueError(
                f"FMM rank {self.rank} is larger than the smallest FMM layer side {smallest} "
                f"(widths and 2F of the blocks); use rank <= {smallest}"
            )
        return self


INRSpec = LatentINRSpec | HyperINRSpec | HyperFourierSpec | HyperFMMSpec | INRGANSpec
GeneratorSpec = Annotated[
    LatentINRSpec | HyperINRSpec | HyperFourierSpec | HyperFMMSpec | INRGANSpec | INRStyleGAN2Spec | StyleGAN2Spec,
    Field(discriminator="kind"),
]
SPEC_BY_KIND: dict[str, type[BaseModel]] = {
    "latent_inr": LatentINRSpec,
    "hyper_inr": HyperINRSpec,
    "hyper_fourier": HyperFourierSpec,
    "hyper_fmm": HyperFMMSpec,
    "inr_gan": INRGANSpec,
    "inr_gan_sg2": INRStyleGAN2Spec,
    "stylegan2": StyleGAN2Spec,
}

TABLE1_ROWS: tuple[str, ...] = ("latent_inr", "hyper_inr", "hyper_fourier", "hyper_fmm", "inr_gan", "stylegan2")
TABLE1_RESOLUTIONS: tuple[int, ...] = (128, 256, 1024)


def paper_spec(kind: str, resolution: int) -> BaseModel:
    """The paper-size spec of a Table 1 row at 128, 256 or 1024 (the configuration in the notes)."""
    if kind not in TABLE1_ROWS:
        raise ValueError(f"unknown Table 1 row {kind!r}; allowed: {', '.join(TABLE1_ROWS)}")
    if resolution not in TABLE1_RESOLUTIONS:
        raise ValueError(
            f"Table 1 has no configuration at resolution {resolution}; "
            f"allowed: {', '.join(map(str, TABLE1_RESOLUTIONS))}"
        )
    return SPEC_BY_KIND[kind](resolution=resolution)
