"""Typed parameters: params.yaml -> validated pydantic models, with errors that say what to fix."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.analysis.options import KPLConfig, ProjectConfig, PropertiesConfig
from pipeline.metrics.options import BenchConfig, ReferenceConfig, ScoreConfig
from pipeline.models.specs import GeneratorSpec

if TYPE_CHECKING:  # pipeline.train.options imports ConfigError from this module
    from pipeline.train.options import TrainConfig

PROFILES = ("micro", "default", "paper")
DATA_SOURCES = ("synthetic_faces", "folder", "zip", "lsun", "lsun10")
RESIZE_FILTERS = ("box", "lanczos", "bicubic", "bilinear")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
# Generator kinds that draw one fixed pixel grid from a learned constant: no properties figures. (inr_gan_sg2 has no
# INR decoder either, but draws any grid: extrapolation and super-resolution apply to it.)
FIXED_GRID_KINDS = frozenset({"stylegan2"})


class ConfigError(ValueError):
    """Invalid configuration; the message names the key, the bad value and what is allowed."""


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them instead of silently ignoring.
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_resolution(value: int) -> int:
    """A resolution must be a power of two in [MIN_RESOLUTION, MAX_RESOLUTION]."""
    if not (MIN_RESOLUTION <= value <= MAX_RESOLUTION) or value & (value - 1):
        allowed = ", ".join(
            str(2**k) for k in range(int(math.log2(MIN_RESOLUTION)), int(math.log2(MAX_RESOLUTION)) + 1)
        )
        raise ValueError(
            f"resolution {value} is not a power of two between {MIN_RESOLUTION} and {MAX_RESOLUTION} (allowed: {allowed})"
        )
    return value


class DatasetConfig(_Strict):
    """One dataset to prepare: where it comes from and how it is cropped and resized."""

    source: Literal["synthetic_faces", "folder", "zip", "lsun", "lsun10"]
    resolution: int
    num_images: int | None = Field(
        default=None,
        gt=0,
        description="synthetic: how many to render; others: at most this many (None = all), a balanced share of each class where the source has classes",
    )
    seed: int = 0
    path: Path | None = Field(default=None, description="folder, zip or LSUN lmdb directory")
    categories: dict[str, Path] | None = Field(default=None, description="lsun10: category name -> LSUN lmdb directory")
    per_category: int | None = Field(default=None, gt=0, description="lsun10: images taken from each category")
    labels: Literal["none", "subfolders"] = Field(
        default="none", description="folder/zip: class label from the first sub-folder (MiniImageNet)"
    )
    filter: Literal["box", "lanczos", "bicubic", "bilinear"] = Field(
        default="box", description="resize filter; it changes FID, so it is recorded"
    )
    max_bad_fraction: float = Field(
        default=0.01, ge=0.0, lt=1.0, description="stop if more than this fraction of images is unreadable"
    )
    format: Literal["npy", "zip"] = Field(
        default="npy",
        description="prepared format: npy = uint8 array (fast, 3 bytes per pixel; small sets), "
        "zip = StyleGAN2-ADA zip of PNGs with dataset.json (compact; LSUN, FFHQ)",
    )

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        return check_resolution(v)

    @model_validator(mode="after")
    def _source_fields(self) -> DatasetConfig:
        if self.source == "synthetic_faces":
            if self.num_images is None:
                raise ValueError("source 'synthetic_faces' needs num_images (a positive count of faces to render)")
            if self.resolution not in (32, 64, 128):
                raise ValueError(f"source 'synthetic_faces' renders at 32, 64 or 128 px, not {self.resolution}")
        elif self.source == "lsun10":
            if not self.categories or self.per_category is None:
                raise ValueError(
                    "source 'lsun10' needs categories (name -> lmdb directory) and per_category (images per category)"
                )
        elif self.path is None:
            raise ValueError(f"source '{self.source}' needs path (the {self.source} to read images from)")
        return self

    def source_paths(self) -> list[Path]:
        """Every file or folder this dataset reads from (empty for generated data)."""
        if self.source == "synthetic_faces":
            return []
        if self.source == "lsun10":
            return list((self.categories or {}).values())
        return [self.path] if self.path is not None else []

    def missing_sources(self) -> list[Path]:
        """The source paths that do not exist (every one, not just the first)."""
        return [p for p in self.source_paths() if not p.exists()]

    def check_sources_exist(self, name: str) -> None:
        """Fail before any work if a source path is missing (checked per stage, not at load time,
        so that a paper profile can be inspected on a machine without the data)."""
        missing = self.missing_sources()
        if len(missing) == 1:
            raise ConfigError(
                f"prepare.datasets.{name}: path '{missing[0]}' does not exist. Download the {self.source} data there "
                f"or change the path in params.yaml."
            )
        if missing:  # every one named, so one download round fixes them all
            listed = ", ".join(f"'{p}'" for p in missing)
            raise ConfigError(
                f"prepare.datasets.{name}: {len(missing)} paths do not exist: {listed}. Download the {self.source} "
                f"data there or change the paths in params.yaml."
            )


class PrepareConfig(_Strict):
    datasets: dict[str, DatasetConfig]
    preview_grid: int = Field(default=8, gt=0, le=32, description="side of the preview image grid")
    chunk_size: int = Field(default=512, gt=0, description="images decoded and written per step")
    workers: int = Field(default=1, gt=0, description="processes decoding images")


class TrackingConfig(_Strict):
    uri: str = Field(default="sqlite:///mlruns.db", description="MLflow tracking URI; MLFLOW_TRACKING_URI overrides it")
    experiment: str = Field(default="inr-gan", description="MLflow experiment (one per study)")


class ReleasedConfig(_Strict):
    """A row whose generator is one of the authors' released network pickles (imported, never trained)."""

    pickle: str = Field(description="path of the authors' .pkl (e.g. data/released/bedrooms.pkl)")
    url: str = Field(description="where the .pkl is downloaded from (named in the error when the file is absent)")
    sha256: str | None = Field(default=None, description="expected sha256 of the .pkl; None = not checked")
    published_fid: float = Field(description="the FID the authors published for this checkpoint (their README)")
    truncation_psi: float = Field(
        default=1.0, gt=0.0, description="psi of the published FID; score uses it for this row"
    )


class RowConfig(_Strict):
    """One ablation row: which generator is trained on which dataset (or, with `released`, imported)."""

    dataset: str
    table: str = Field(description="where the row appears in the paper, e.g. 'table1', 'table2', 'fig8'")
    generator: GeneratorSpec
    train: dict[str, Any] = Field(default_factory=dict, description="this row's overrides of the train: section")
    seed_of: str | None = Field(
        default=None,
        description="the row this one repeats with another train.seed "
        "(written by `pipeline profile NAME --seeds`); tables report the mean and spread over the repeats",
    )
    released: ReleasedConfig | None = Field(
        default=None, description="the authors' checkpoint this row imports (`pipeline import`) instead of training"
    )

    @model_validator(mode="after")
    def _released_kind(self) -> RowConfig:
        # Only the StyleGAN2-ADA INR-GAN generator has an import name table (pipeline/models/released.py).
        if self.released is not None and self.generator.kind != "inr_gan_sg2":
            raise ValueError(
                f"released: a released checkpoint imports into an inr_gan_sg2 generator, not {self.generator.kind}; "
                "set generator.kind: inr_gan_sg2"
            )
        return self


class SeedsConfig(_Strict):
    """Repeats of rows with other training seeds, added to params.yaml by `pipeline profile NAME --seeds`."""

    rows: list[str] = Field(description="rows to repeat")
    values: list[int] = Field(description="extra values of train.seed; each adds a row <row>_s<value>")

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds.values must be distinct non-negative integers, at least one, got {v}")
        return v


class Fig9Config(_Strict):
    rows: list[str] = Field(description="rows whose cost is plotted against the output resolution")
    resolution: int = Field(description="trained resolution of the plotted models (paper: FFHQ 1024)")


class MacsConfig(_Strict):
    """Table 1's cost columns: paper-size generators (built on the meta device, so any size is cheap)."""

    resolutions: list[int]
    fig9: Fig9Config
    rows: dict[str, dict[int, GeneratorSpec]] = Field(description="row -> resolution -> generator spec")

    @model_validator(mode="after")
    def _consistent(self) -> MacsConfig:
        for row, by_res in self.rows.items():
            for res, spec in by_res.items():
                if spec.resolution != res:
                    raise ValueError(
                        f"macs.rows.{row}.{res}: the spec says resolution {spec.resolution}, the key says {res}"
                    )
        for row in self.fig9.rows:
            if self.fig9.resolution not in self.rows.get(row, {}):
                raise ValueError(
                    f"macs.fig9: row {row!r} has no spec at resolution {self.fig9.resolution}; "
                    f"add macs.rows.{row}.{self.fig9.resolution} or change macs.fig9"
                )
        return self


class Params(_Strict):
    """Everything in params.yaml."""

    profile: Literal["micro", "default", "paper"]
    seed: int = 0
    tracking: TrackingConfig = TrackingConfig()
    prepare: PrepareConfig
    train: dict[str, Any] = Field(
        default_factory=dict, description="training defaults (pipeline.train.options.TrainConfig)"
    )
    rows: dict[str, RowConfig] = Field(default_factory=dict)
    macs: MacsConfig
    reference: ReferenceConfig = ReferenceConfig()
    score: ScoreConfig = ScoreConfig()
    bench: BenchConfig = BenchConfig()
    project: ProjectConfig | None = Field(
        default=None, description="latent projection of real faces (Table 3); face datasets only"
    )
    kpl: KPLConfig | None = Field(default=None, description="keypoint prediction loss (Table 3); face datasets only")
    properties: PropertiesConfig = PropertiesConfig()
    seeds: SeedsConfig | None = Field(
        default=None, description="rows that `pipeline profile NAME --seeds` repeats with other training seeds"
    )

    @model_validator(mode="after")
    def _references(self) -> Params:
        for name, row in self.rows.items():
            if row.dataset not in self.prepare.datasets:
                raise ValueError(
                    f"rows.{name}.dataset: unknown dataset {row.dataset!r}; defined datasets: {', '.join(sorted(self.prepare.datasets))}"
                )
            resolution = self.prepare.datasets[row.dataset].resolution
            if row.generator.resolution != resolution:
                raise ValueError(
                    f"rows.{name}.generator.resolution: {row.generator.resolution} does not match dataset "
                    f"{row.dataset!r} prepared at {resolution} px; use a dataset at {row.generator.resolution} px or change the row"
                )
            self.train_options(name)
            if row.seed_of is not None:
                base = self.rows.get(row.seed_of)
                if base is None or base.seed_of is not None:
                    raise ValueError(
                        f"rows.{name}.seed_of: {row.seed_of!r} is not a row of its own; name the row this one repeats"
                    )
                if (base.dataset, base.table, base.generator) != (row.dataset, row.table, row.generator) or {
                    k: v for k, v in base.train.items() if k != "seed"
                } != {k: v for k, v in row.train.items() if k != "seed"}:
                    raise ValueError(
                        f"rows.{name} repeats {row.seed_of!r} (seed_of) but differs from it in more than train.seed; "
                        f"a repeat must be the same row with another seed"
                    )
        if self.seeds is not None:
            for row in self.seeds.rows:
                if row not in self.rows:
                    raise ValueError(
                        f"seeds.rows: unknown row {row!r}; defined rows: {', '.join(sorted(self.rows)) or 'none'}"
                    )
        datasets = {f"score.upsampled.{k}": k for k in self.score.upsampled} | {
            f"score.upsampled.{k}": v for k, v in self.score.upsampled.items()
        }
        if self.project:
            datasets["project.dataset"] = self.project.dataset
            for model, row in self.project.models.items():
                if row not in self.rows:
                    raise ValueError(
                        f"project.models.{model}: unknown row {row!r}; defined rows: {', '.join(sorted(self.rows)) or 'none'}"
                    )
        if self.kpl and self.kpl.regressor:
            datasets["kpl.regressor.dataset"] = self.kpl.regressor.dataset
        for key, name in datasets.items():
            if name not in self.prepare.datasets:
                raise ValueError(
                    f"{key}: unknown dataset {name!r}; defined datasets: {', '.join(sorted(self.prepare.datasets))}"
                )
        if self.score.curve.rows != "all":
            for row in self.score.curve.rows:
                if row not in self.rows:
                    raise ValueError(
                        f"score.curve.rows: unknown row {row!r}; defined rows: {', '.join(sorted(self.rows)) or 'none'} (or 'all')"
                    )
        for row in self.bench.rows:
            if row not in self.rows and row not in self.macs.rows:
                raise ValueError(f"bench.rows: unknown row {row!r}; use a row of `rows` or of `macs.rows`")
        for row in self.properties.rows:
            if row not in self.rows:
                raise ValueError(
                    f"properties.rows: unknown row {row!r}; defined rows: {', '.join(sorted(self.rows)) or 'none'}"
                )
            if self.rows[row].generator.kind in FIXED_GRID_KINDS:
                raise ValueError(
                    f"properties.rows: row {row!r} is a {self.rows[row].generator.kind} generator, which has no INR decoder "
                    f"and draws a fixed pixel grid (nothing to extrapolate, super-resolve, interpolate or read bases from); "
                    f"list INR rows (latent_inr, hyper_*, inr_gan) or inr_gan_sg2 rows"
                )
        return self

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.prepare.datasets:
            raise ConfigError(
                f"unknown dataset {name!r}; params.yaml (profile {self.profile!r}) defines: {', '.join(sorted(self.prepare.datasets))}"
            )
        return self.prepare.datasets[name]

    def optional_section(self, name: str) -> Any:
        """An optional section (project, kpl) that a stage needs; its absence is a ConfigError."""
        value = getattr(self, name)
        if value is None:
            raise ConfigError(
                f"params.yaml (profile {self.profile!r}) has no `{name}:` section; copy it from profiles/{self.profile}.yaml"
            )
        return value

    def train_options(self, row: str) -> TrainConfig:
        """The row's training options: the `train:` defaults with rows.<row>.train on top; what neither sets
        is the paper's recipe (pipeline.train.options)."""
        # Imported here: pipeline.train.options imports ConfigError from this module.
        from pipeline.train.options import resolve_train_config

        return resolve_train_config(self.train, self.row(row).train, where=f"rows.{row}.train", defaults_where="train")

    def settings_fingerprint(self, row: str) -> str:
        """The row's settings apart from its training seed (pipeline.train.options.settings_fingerprint),
        and its training length: a run may be extended (kimg is a resumable setting), but a score after
        11.2 kimg is no repeat of one after 16."""
        import hashlib

        from pipeline.train.options import settings_fingerprint

        cfg = self.row(row)
        options = self.train_options(row)
        settings = settings_fingerprint(cfg.dataset, cfg.generator.model_dump(mode="json"), options)
        return hashlib.sha256(f"{settings} images {options.total_steps * options.total_batch}".encode()).hexdigest()

    def repeats_of(self, names: Mapping[str, str], metrics_file: Callable[[str], Path]) -> dict[str, list[str]]:
        """name -> [name, its seed repeats] for results keyed by `names` (result name -> row: rows
        themselves, or Table 3's models). A repeat is `<name>_s<k>` for k in seeds.values when its row
        is in this params file with seed_of (the --seeds profile), or, in the plain profile, when its
        `metrics_file` (the file of its record that holds `profile` and `settings_sha256`) exists, is of this
        profile and carries the settings fingerprint of the row now:
        repeats trained with other settings are left out. Names whose rows repeat another are not keys."""
        import json

        out: dict[str, list[str]] = {}
        for name, row in names.items():
            if row not in self.rows or self.rows[row].seed_of is not None:
                continue
            found = [name]
            if self.seeds is not None and row in self.seeds.rows:
                fingerprint = None
                for value in self.seeds.values:
                    repeat = seed_row(name, value)
                    if repeat in names and names[repeat] in self.rows and self.rows[names[repeat]].seed_of == row:
                        found.append(repeat)
                        continue
                    path = metrics_file(repeat)
                    if repeat not in names and path.is_file():
                        data = json.loads(path.read_text())
                        fingerprint = fingerprint or self.settings_fingerprint(row)
                        if data.get("profile") == self.profile and data.get("settings_sha256") == fingerprint:
                            found.append(repeat)
            out[name] = found
        return out

    def row(self, name: str) -> RowConfig:
        if name not in self.rows:
            raise ConfigError(
                f"unknown row {name!r}; params.yaml (profile {self.profile!r}) defines: {', '.join(sorted(self.rows)) or 'no rows'}"
            )
        return self.rows[name]


def seed_row(row: str, seed: int) -> str:
    """The name of `row` repeated with train.seed `seed`."""
    return f"{row}_s{seed}"


def with_seed_rows(data: dict[str, Any]) -> dict[str, Any]:
    """A params mapping with every row of `seeds.rows` repeated for each of `seeds.values` (train.seed
    set, `seed_of` naming the row), and the repeats added to project.models (Table 3's pair). Fig. 8's
    curve stays the seed-0 rows' (score.curve.rows unchanged, so no existing score re-runs). The input
    is not modified; without `seeds:` it is returned as it is."""
    import copy

    seeds = data.get("seeds")
    if not seeds:
        return data
    out = copy.deepcopy(data)
    rows = out.setdefault("rows", {})
    for row in seeds.get("rows", []):
        if row not in rows:
            raise ConfigError(f"seeds.rows: unknown row {row!r}; defined rows: {', '.join(sorted(rows)) or 'none'}")
    for row in seeds.get("rows", []):
        for value in seeds.get("values", []):
            repeat = copy.deepcopy(rows[row])
            repeat["train"] = {**(repeat.get("train") or {}), "seed": value}
            repeat["seed_of"] = row
            rows[seed_row(row, value)] = repeat
            project = out.get("project") or {}
            for model, model_row in list((project.get("models") or {}).items()):
                if model_row == row:
                    project["models"][seed_row(model, value)] = seed_row(row, value)
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see params.yaml for the allowed keys)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (got {value!r})"
        # A check across sections has no location of its own; its message names the keys.
        lines.append(f"  {key}: {msg}{shown}" if key else f"  {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: Any, source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file '{path}' does not exist; run from the repository root or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_params(data, str(path))
