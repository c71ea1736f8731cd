"""Typed options of the analysis stages (params.yaml `project:` and `kpl:`), without torch.

Reading params.yaml imports this module and never the projection or keypoint code, so that
`pipeline --help`, profile switches and dry runs do not pay for importing torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import torch

    from pipeline.analysis.keypoints import FANKeypoints

# Pretrained weights by file name in the torch hub cache, and where they are published.
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_FILE = "lpips-vgg-v0.1.pth"
LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"


class ProjectionOptions(BaseModel):
    """The projector's schedule (StyleGAN2's defaults) and loss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=1000, gt=0, description="optimisation steps per image")
    lr: float = Field(default=0.1, gt=0, description="peak Adam learning rate")
    lr_rampup: float = Field(default=0.05, ge=0, le=1, description="fraction of steps of linear learning-rate warm-up")
    lr_rampdown: float = Field(
        default=0.25, gt=0, le=1, description="fraction of steps of cosine learning-rate decay at the end"
    )
    noise_factor: float = Field(
        default=0.05, ge=0, description="initial latent noise, as a fraction of the latent's spread"
    )
    noise_ramp: float = Field(
        default=0.75, gt=0, le=1, description="fraction of steps over which the latent noise decays to 0"
    )
    num_mean_samples: int = Field(default=10000, gt=0, description="mapped z used for the mean latent and its spread")
    batch_size: int = Field(default=16, gt=0, description="images projected at once")
    loss: Literal["lpips_vgg", "vgg_features", "pixel_domain"] = Field(
        default="pixel_domain", description="reconstruction loss"
    )
    feature_weight: float = Field(default=1.0, ge=0, description="pixel_domain: weight of the domain-feature term")
    vgg_weights: Path | None = Field(
        default=None,
        description=f"lpips_vgg/vgg_features: torchvision VGG16 file (default: {VGG16_FILE} in the torch hub cache)",
    )
    lpips_weights: Path | None = Field(
        default=None, description=f"lpips_vgg: LPIPS linear weights (default: {LPIPS_FILE} in the torch hub cache)"
    )
    download: bool = Field(
        default=False, description="allow downloading missing VGG16/LPIPS weights into the torch hub cache"
    )


class ProjectConfig(BaseModel):
    """params.yaml `project:`: which trained rows are projected, on which real test images, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, str] = Field(
        default_factory=lambda: {"inr_gan": "inr_gan", "stylegan2": "stylegan2"},
        description="model name (as in `pipeline kpl --model`) -> ablation row whose snapshot is used",
    )
    dataset: str = Field(
        description="prepared dataset holding the real test images (not the training set where one is available)"
    )
    first: int = Field(default=0, ge=0, description="index of the first test image in that dataset")
    num_images: int = Field(default=256, gt=0, description="N_ts: real images projected")
    spaces: list[Literal["z", "w"]] = Field(default_factory=lambda: ["z", "w"], min_length=1)
    domain_features: Literal["keypoint_regressor", "none"] = Field(
        default="keypoint_regressor",
        description="pixel_domain: feature network of the domain term (the trained keypoint regressor's trunk) or none (pixel MSE only)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    figure_columns: int = Field(default=8, gt=0, le=32)
    projector: ProjectionOptions = ProjectionOptions()


class RegressorConfig(BaseModel):
    """params.yaml `kpl.regressor`: the synthetic-faces keypoint regressor and its training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="prepared dataset with ground-truth keypoints (keypoints.npy) to train on")
    num_images: int | None = Field(default=None, gt=0, description="use at most this many images (None = all)")
    heldout_fraction: float = Field(default=0.1, gt=0, lt=1)
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(default=16, gt=0)
    lr: float = Field(default=6e-3, gt=0)
    width: int = Field(default=24, ge=4)
    seed: int = 0


class FANConfig(BaseModel):
    """params.yaml `kpl.fan`: face-alignment's 2D-FAN for real faces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Path | None = Field(
        default=None, description=f"FAN-4 state dict (default: {FAN_FILE} in the torch hub cache)"
    )
    box: list[float] | Literal["detect"] = Field(
        default_factory=lambda: [0.0, 0.0, 1.0, 1.0],
        description="fixed crop (x0, y0, x1, y1) in image fractions, or 'detect' (S3FD detector)",
    )
    detector_weights: Path | None = Field(
        default=None, description=f"box: detect: S3FD weights (default: {S3FD_FILE} in the torch hub cache)"
    )
    flip_input: bool = False
    batch_size: int = Field(default=8, gt=0)
    download: bool = Field(default=False, description="allow downloading missing weights into the torch hub cache")

    def build(self, device: str | torch.device = "cpu") -> FANKeypoints:
        from pipeline.analysis.keypoints import FANKeypoints  # torch only when a FAN is built

        return FANKeypoints(
            self.weights, device, self.box, self.detector_weights, self.flip_input, self.batch_size, self.download
        )


class KPLOptions(BaseModel):
    """Algorithm 1's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train: int = Field(default=10000, gt=1, description="N_tr: generated images the regression is fitted on")
    batch_size: int = Field(default=64, gt=0, description="images generated and passed to K at once")
    ridge: float = Field(
        default=0.0,
        ge=0.0,
        description="0: ordinary least squares (the paper); > 0: ridge penalty, for N_tr not much above the latent size",
    )
    check_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="extra generated samples, as a fraction of N_tr, held out to report the fit on generated images (a diagnostic drawn on top: the fit always uses exactly N_tr)",
    )
    seed: int = Field(default=0, description="seed of the sampled latents and of the random permutation")

    @property
    def num_check(self) -> int:
        return int(round(self.num_train * self.check_fraction))

    @property
    def num_generated(self) -> int:
        """Images Algorithm 1 generates: N_tr for the fit plus the held-out diagnostic ones."""
        return self.num_train + self.num_check


class KPLConfig(BaseModel):
    """params.yaml `kpl:`: the keypoint extractor and Algorithm 1's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extractor: Literal["regressor", "fan"] = Field(
        default="regressor", description="regressor: synthetic faces; fan: real faces"
    )
    regressor: RegressorConfig | None = Field(
        default=None, description="needed when extractor is regressor, or for project.domain_features"
    )
    fan: FANConfig = FANConfig()
    fit: KPLOptions = KPLOptions()
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _regressor(self) -> KPLConfig:
        if self.extractor == "regressor" and self.regressor is None:
            raise ValueError(
                "kpl.extractor 'regressor' needs a kpl.regressor section (at least `dataset:` with ground-truth keypoints)"
            )
        return self


class PropertiesConfig(BaseModel):
    """params.yaml `properties:`: the figures of continuous images (Figs. 2/10, 3/15, 5, 17) per INR row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: list[str] = Field(
        default_factory=list, description="INR rows (latent_inr, hyper_*, inr_gan) whose G_ema is drawn; [] draws none"
    )
    num_images: int = Field(
        default=6, gt=0, le=32, description="images per figure (seeds seed_start, seed_start + 1, ...)"
    )
    seed_start: int = Field(default=0, ge=0)
    truncation_psi: float = Field(
        default=1.0, gt=0, le=1, description="W-space truncation towards the mean (the paper's figures: 0.9)"
    )
    margins: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        min_length=1,
        description="extrapolation to [-m, 1 + m)^2 (paper: 0.3 and 0.5); m * 2 * resolution of every block must be whole, "
        "so that each block keeps its trained pixel spacing",
    )
    superres_factor: int = Field(
        default=2,
        ge=2,
        description="the INR on a grid this many times denser vs upsampling the trained-resolution image",
    )
    interpolation_steps: int = Field(default=7, ge=2, description="images from one end to the other, both included")
    frequency_images: int = Field(
        default=128, gt=0, description="images whose Fourier bases make the Fig. 17 histograms (paper: 128)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("margins")
    @classmethod
    def _margins(cls, margins: list[float]) -> list[float]:
        # NaN, infinite or negative margins would otherwise fail deep inside rendering, as tracebacks.
        bad = [m for m in margins if not (math.isfinite(m) and m > 0)]
        if bad:
            raise ValueError(
                f"properties.margins must be positive finite numbers (e.g. [0.25, 0.5]), got {bad} in {margins}"
            )
        return margins
