"""Typed options of the metric stages (params.yaml `reference:`, `score:`, `bench:`), without torch.

Reading params.yaml imports this module and never the metric code, so that `pipeline --help`, profile
switches and dry runs do not pay for importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

UPSAMPLE_MODES = ("nearest", "bilinear", "bicubic")  # UpsampledFID's ways of enlarging real images
BENCH_DTYPES = ("fp32", "bf16")


class DomainNetConfig(BaseModel):
    """How the domain network is built and trained (params.yaml: reference.domain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=16, gt=0, description="channels of the first convolution (doubled twice)")
    epochs: int = Field(default=5, gt=0)
    batch: int = Field(default=64, gt=0)
    lr: float = Field(default=0.01, gt=0)
    holdout_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="images kept out of training to measure accuracy"
    )
    max_train_images: int | None = Field(
        default=20000, gt=0, description="cap on training images per epoch (None = all)"
    )
    seed: int = 0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceConfig(_Strict):
    """params.yaml `reference:`: which feature network scores images, and on how many real images."""

    features: Literal["domain", "inception"] = Field(
        default="domain", description="inception needs its weights; domain trains a CNN offline"
    )
    inception_weights: Path | None = Field(
        default=None, description="weights-inception-2015-12-05-6726825d.pth; None: torch hub cache, then download"
    )
    download: bool = Field(
        default=True, description="download the Inception weights into the torch hub cache when missing"
    )
    num_images: int | None = Field(
        default=None, gt=1, description="real images in the statistics (None = the whole dataset, as the paper)"
    )
    batch: int = Field(default=256, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    domain: DomainNetConfig = DomainNetConfig()


class CurveConfig(_Strict):
    """params.yaml `score.curve:`: the Frechet distance over training (Fig. 8) from the snapshots
    that training kept (train.keep_snapshot_every)."""

    rows: list[str] | Literal["all"] = Field(
        default_factory=list, description="rows whose kept snapshots are scored; 'all': every row; []: none"
    )
    num_images: int = Field(
        default=2000, gt=1, description="generated images per point of the curve; the first of the main score's seeds"
    )

    def includes(self, row: str) -> bool:
        return self.rows == "all" or row in self.rows


class ScoreConfig(_Strict):
    """params.yaml `score:`."""

    num_images: int = Field(default=2000, gt=1, description="generated images per metric (50000 in the paper)")
    batch: int = Field(default=64, gt=0)
    truncation_psi: float = Field(default=1.0, gt=0, le=1, description="W-space truncation towards the mean (1 = none)")
    seed_start: int = Field(default=0, ge=0, description="latent i comes from seed seed_start + i")
    w_avg_samples: int = Field(
        default=10000, gt=0, description="latents averaged for the W mean when the generator keeps none"
    )
    upsampled: dict[str, str] = Field(
        default_factory=dict, description="dataset at S -> the same data prepared at 2S; rows on a key get UpsampledFID"
    )
    upsample_modes: tuple[str, ...] = UPSAMPLE_MODES
    device: Literal["auto", "cpu", "cuda"] = "auto"
    curve: CurveConfig = CurveConfig()

    @field_validator("upsample_modes")
    @classmethod
    def _modes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in UPSAMPLE_MODES]
        if bad:
            raise ValueError(f"unknown upsampling mode(s) {', '.join(bad)}; allowed: {', '.join(UPSAMPLE_MODES)}")
        return v


class BenchConfig(BaseModel):
    """params.yaml `bench:` (the CLI flags override it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: tuple[str, ...] = ("inr_gan", "stylegan2")
    resolution: int = Field(default=256, gt=0)
    batch: int = Field(default=4, gt=0)
    warmup: int = Field(default=2, ge=1, description="untimed batches per generator before measuring")
    repeats: int = Field(default=5, ge=1, description="rounds over all generators; the median is reported")
    iters: int = Field(default=3, ge=1, description="batches per generator per round")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"
