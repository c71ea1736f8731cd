"""Training options: the typed `train:` section of params.yaml and the per-row overrides on top of it.

Pure pydantic (no torch import) so the configuration layer can validate it cheaply. Defaults are
the paper's recipe (paper.md section 3); where the paper text and the authors' released config
disagree the paper text is the default and the other value is named in the field's description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline.config import ConfigError

# Multiplier of gamma * mean ||grad_x D(x)||^2 in the R1 term, by convention:
# the INR-GAN authors' code adds gamma times the mean squared norm; StyleGAN2 adds gamma / 2 times it.
R1_FACTORS = {"inr_gan": 1.0, "stylegan2": 0.5}

DEFAULT_LR = {
    "d": 0.003,  # discriminator (paper, Appendix A)
    "inr": 0.0005,  # shared INR parameters (FMM base matrices, ...)
    "hyper": 0.00001,  # hypernetwork: paper text; the released config uses 0.00005
    "mapping": 0.002,  # StyleGAN2-based generators: StyleGAN2's own G learning rate (config-e/f)
    "synthesis": 0.002,
}

# Options that may change between a run and its resumption without changing what is being trained.
RESUMABLE_CHANGES = frozenset(
    {
        "iterations",
        "kimg",
        "snapshot_every",
        "keep_snapshot_every",
        "log_every",
        "num_workers",
        "device",
        "batch_per_gpu",
    }
)


class TrainConfig(BaseModel):
    """Everything the training loop needs besides the models and the data."""

    # allow_inf_nan: `eps: .inf` or an infinite learning rate would train nothing, silently.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    total_batch: int = Field(
        default=64,
        gt=0,
        description="images per step over all processes (paper: 32/16/8 per GPU x 4 GPUs at 128/256/1024)",
    )
    batch_per_gpu: int | None = Field(
        default=None,
        gt=0,
        description="images per forward pass on one process; smaller than total_batch / processes accumulates gradients (None: no accumulation)",
    )
    iterations: int = Field(
        default=800_000, gt=0, description="training steps (one D step + one G step each); paper: 800k"
    )
    kimg: float | None = Field(
        default=None,
        gt=0,
        description="training length in thousands of real images shown; when given it sets the length instead of iterations",
    )
    lr: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_LR),
        description="learning rate per parameter group: 'd' for the discriminator, the generator's param_groups() names for the rest; given entries replace the defaults one by one",
    )
    betas: tuple[float, float] = Field(
        default=(0.0, 0.98), description="Adam betas (0.99 for beta2 in StyleGAN2-ADA variants)"
    )
    eps: float = Field(default=1e-8, gt=0)
    r1_gamma: float = Field(default=10.0, ge=0.0, description="R1 weight gamma on real images; 0 disables R1")
    r1_interval: int = Field(
        default=1,
        ge=1,
        description="apply R1 every this many steps (paper: every step); > 1 is the lazy variant, its term scaled by the interval",
    )
    r1_convention: Literal["inr_gan", "stylegan2"] = Field(
        default="inr_gan",
        description="inr_gan: + gamma * mean ||grad||^2 (the authors' code); stylegan2: + gamma/2 * mean ||grad||^2",
    )
    pl_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="StyleGAN2's path-length regularisation weight (2 in StyleGAN2; 0, off, in "
        "the INR-GAN recipe); StyleGAN2-style generators only",
    )
    pl_interval: int = Field(
        default=4,
        ge=1,
        description="path-length term every this many G steps (lazy, scaled by the interval; StyleGAN2: 4)",
    )
    pl_decay: float = Field(default=0.01, gt=0.0, lt=1.0, description="decay of the running mean of path lengths")
    pl_batch_shrink: int = Field(default=2, ge=1, description="the path-length pass uses the G batch divided by this")
    ema: float = Field(
        default=0.999, ge=0.0, lt=1.0, description="G_ema <- ema * G_ema + (1 - ema) * G after each G step"
    )
    ema_rampup: float | None = Field(
        default=None,
        description="StyleGAN2-ADA's EMA ramp-up (0.05 in the authors' `cfg: auto`); None: `ema` at every step "
        "(the paper text). When set, with h = total_batch * ln 0.5 / ln ema images (the half-life `ema` "
        "means), the step after n images uses ema_t = 0.5 ** (total_batch / max(min(h, n * ema_rampup), 1e-8))",
    )
    hflip: bool = Field(default=True, strict=True, description="random horizontal flips of real images")
    mixed_precision: Literal["off", "bf16", "fp16"] = Field(
        default="off", description="autocast of G and D forward passes; CUDA only"
    )
    snapshot_every: int = Field(
        default=5000,
        gt=0,
        description="steps between network snapshot + training state + sample grid (also written at the end)",
    )
    keep_snapshot_every: int | None = Field(
        default=None,
        gt=0,
        description="steps between kept G_ema-only snapshots (snapshots/snapshot-<step>.pt, also written at the end) that score.curve "
        "scores for FID vs kimg; independent of snapshot_every; None keeps none",
    )
    log_every: int = Field(default=100, gt=0, description="steps between rows of the plots file and MLflow metrics")
    sample_grid: int = Field(default=8, gt=0, le=32, description="side of the fixed-seed sample grid")
    sample_seed: int = Field(default=0, ge=0, description="the grid's image i uses the latent of seed sample_seed + i")
    seed: int = Field(default=0, ge=0, description="seeds model initialisation, latents, flips and data order")
    num_workers: int = Field(default=0, ge=0, description="data loader worker processes per training process")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available, else CPU")
    discriminator: dict[str, Any] = Field(
        default_factory=dict,
        description="discriminator settings (DiscriminatorSpec minus resolution, which follows the generator); empty: StyleGAN2 config-e",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1 and 1.0: `iterations: true` would train one step.
        if info.field_name in ("hflip", "mixed_precision", "discriminator"):
            return v
        items = v.items() if isinstance(v, Mapping) else enumerate(v) if isinstance(v, (list, tuple)) else [(None, v)]
        bad = {k: x for k, x in items if isinstance(x, bool)}
        if bad:
            shown = bad[None] if None in bad else bad if isinstance(v, Mapping) else list(v)
            raise ValueError(
                f"expected a number, got the boolean {shown!r} (YAML reads an unquoted true/false/yes/no/on/off as a "
                "boolean); write the number"
            )
        return v

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads an unquoted `off` as false

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_defaults(cls, lr: Any) -> Any:
        return {**DEFAULT_LR, **lr} if isinstance(lr, Mapping) else lr

    @field_validator("lr")
    @classmethod
    def _lr(cls, lr: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in lr.items() if not (v > 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"learning rates must be positive and finite, got {bad}")
        return lr

    @field_validator("kimg")
    @classmethod
    def _kimg(cls, kimg: float | None) -> float | None:
        if kimg is not None and not math.isfinite(kimg * 1000):
            raise ValueError(f"{kimg} is too large to count steps of; give a length in thousands of images, e.g. 25000")
        return kimg

    @field_validator("ema_rampup")
    @classmethod
    def _ema_rampup(cls, rampup: float | None) -> float | None:
        if rampup is not None and not rampup > 0:
            raise ValueError(
                f"must be positive (or null for no ramp-up), got {rampup}; the authors' StyleGAN2-ADA config uses 0.05"
            )
        return rampup

    @field_validator("betas")
    @classmethod
    def _betas(cls, b: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= x < 1.0 for x in b):
            raise ValueError(f"Adam betas must lie in [0, 1), got {b}")
        return b

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.kimg is not None and "iterations" in self.model_fields_set:
            raise ValueError(f"give one of iterations ({self.iterations}) and kimg ({self.kimg}), not both")
        if self.batch_per_gpu is not None and self.batch_per_gpu > self.total_batch:
            raise ValueError(f"batch_per_gpu {self.batch_per_gpu} exceeds total_batch {self.total_batch}")
        return self

    @property
    def r1_factor(self) -> float:
        return R1_FACTORS[self.r1_convention]

    @property
    def total_steps(self) -> int:
        if self.kimg is None:
            return self.iterations
        return max(1, round(self.kimg * 1000 / self.total_batch))

    def per_process(self, world_size: int) -> tuple[int, int]:
        """(images per process per step, gradient-accumulation rounds); raises when they do not divide."""
        if self.total_batch % world_size:
            raise ConfigError(
                f"total_batch {self.total_batch} is not divisible by the number of processes {world_size}; "
                f"set train.total_batch to a multiple of {world_size} or change --nproc"
            )
        per_rank = self.total_batch // world_size
        chunk = min(self.batch_per_gpu or per_rank, per_rank)
        if per_rank % chunk:
            raise ConfigError(
                f"train.batch_per_gpu {chunk} does not divide the {per_rank} images each of {world_size} processes gets per step "
                f"(total_batch {self.total_batch}); pick a divisor of {per_rank}"
            )
        return per_rank, per_rank // chunk


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    # Nested mappings (lr, discriminator) merge key by key so a row can change one learning rate.
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def resolve_train_config(
    defaults: TrainConfig | Mapping[str, Any],
    override: Mapping[str, Any] | None = None,
    where: str = "train",
    defaults_where: str | None = None,
) -> TrainConfig:
    """The defaults section with one row's overrides on top, validated; errors name the key and `where`.

    With `defaults_where` (the defaults' own section, e.g. "train" beside where="rows.x.train") each error's
    key is given with the section it was written in, so a misspelt default is not blamed on the row."""
    base = defaults.model_dump(exclude_unset=True) if isinstance(defaults, TrainConfig) else dict(defaults)
    override = dict(override or {})
    merged = _merge(base, override)
    if ("iterations" in override) != ("kimg" in override):
        # A row that sets one length key replaces the other instead of conflicting with it.
        for key in ("iterations", "kimg"):
            if key not in override and ("iterations" in override or "kimg" in override):
                merged.pop(key, None)
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as err:
        lines = [f"invalid training options in {where if defaults_where is None else f'{defaults_where} + {where}'}:"]
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if defaults_where is not None and e["loc"]:
                key = f"{where if e['loc'][0] in override else defaults_where}.{key}"
            msg = (
                "unknown key (check its spelling)"
                if e["type"] == "extra_forbidden"
                else e["msg"].removeprefix("Value error, ")
            )
            if e["type"] in (
                "finite_number",
                "int_type",
                "bool_type",
                "int_from_float",
                "float_parsing",
                "int_parsing",
            ):
                msg += f", got {e['input']!r}"
            lines.append(f"  {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def settings_fingerprint(dataset: str, generator: Mapping[str, Any], options: TrainConfig) -> str:
    """sha256 of what a trained row is, apart from its training seed: dataset, generator settings and
    the training options that change the result. Two rows with the same fingerprint differ only in
    train.seed, so their scores are repeats of one experiment."""
    import hashlib
    import json

    # ema_rampup at None (added after the committed records) stays out, so their rows keep their hash.
    train = {
        k: v
        for k, v in options.model_dump(mode="json").items()
        if k not in RESUMABLE_CHANGES and k != "seed" and not (k == "ema_rampup" and v is None)
    }
    text = json.dumps({"dataset": dataset, "generator": dict(generator), "train": train}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def changed_fields(old: Mapping[str, Any], new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields that differ between a checkpoint's options and the current ones and would change the result."""
    current = new.model_dump(mode="json")
    return {k: (old.get(k), v) for k, v in current.items() if k not in RESUMABLE_CHANGES and old.get(k) != v}


def recorded_changes(info: Mapping[str, Any], dataset: str, options: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """What the row a snapshot was trained as (`info`, as the train stage records it: dataset and train
    options) has other than `dataset` and `options`, among what changes the result (train.seed
    included, unlike settings_fingerprint: a repeat's snapshot is not its row's). Unrecorded items
    count as changed: a snapshot that does not say what it is cannot be vouched for."""
    changes: dict[str, tuple[Any, Any]] = {}
    if info.get("dataset") != dataset:
        changes["dataset"] = (info.get("dataset"), dataset)
    trained = info.get("train")
    if not isinstance(trained, Mapping):
        changes["train"] = ("(not recorded)", "the row's train options")
    else:
        changes.update({f"train.{k}": change for k, change in changed_fields(trained, options).items()})
    return changes


def row_spec(params: Any, row: str, options: TrainConfig | None = None) -> dict[str, Any]:
    """Row `row` of `params` (pipeline.config.Params) as trained: what the train stage writes to
    options.json and to its snapshots' `info`, prints for `--dry-run` and logs as its MLflow run's
    params, and what `pipeline track --from-reports` logs for the row. `options` replaces the options
    resolved from params (`train:` with rows.<row>.train on top).

    One function for all of them, so that a run filled from the reports carries the params of a run
    trained here (the library cannot import the stage's copy). Keep the keys (options.json and the
    snapshots hold them) and their order (`--dry-run` prints it)."""
    cfg = params.row(row)
    options = options or params.train_options(row)
    return {
        "row": row,
        "dataset": cfg.dataset,
        "profile": params.profile,
        "generator": cfg.generator.model_dump(mode="json"),
        "train": options.model_dump(mode="json"),
        "total_steps": options.total_steps,
        "kimg": options.total_steps * options.total_batch / 1000,
    }
