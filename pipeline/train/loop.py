"""The training loop: data, latents and flips for each step, checkpoints, sample grids, the plots
file, tracking and the progress bar around GANTrainer.step.

Determinism is designed so that two things hold exactly (up to float summation order):
- N processes train the same parameters as 1 process with the same total batch: global batch t is a
  fixed slice of the epoch's permutation, its latents and flip coins come from a generator seeded by
  (seed, t), and rank r takes the samples r, r + N, r + 2N, ... of all three;
- a run killed at any moment and started again continues as if never stopped: everything above is a
  function of the step, and the training state holds the models, optimisers, EMA, counters, the log
  so far and every rank's global RNG state (used by generators with internal noise).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.data.preview import save_grid
from pipeline.io import write_json, write_text
from pipeline.train.checkpoint import (
    KEPT_SNAPSHOTS_DIR,
    NETWORK_SNAPSHOT,
    TRAINING_STATE,
    capture_rng,
    kept_snapshot_file,
    kept_snapshot_files,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from pipeline.train.distributed import DistContext, barrier, broadcast_module, gather_objects
from pipeline.train.options import TrainConfig, changed_fields
from pipeline.train.trainer import D_STATS, G_STATS, GANTrainer, TrainingDiverged

PLOT_COLUMNS = ("step", "kimg", *G_STATS, *D_STATS, "images_per_s")
SAMPLES_DIR = "samples"
OPTIONS_FILE = "options.json"
# A run that starts over keeps the earlier run's outputs here until its own first checkpoint exists.
PREVIOUS_RUN_DIR = ".previous-run"
# The training state first: its absence at the top level is what says "the new run has no checkpoint yet".
RUN_OUTPUTS = (TRAINING_STATE, NETWORK_SNAPSHOT, KEPT_SNAPSHOTS_DIR, SAMPLES_DIR, OPTIONS_FILE)
_ASIDE_COMPLETE = ".complete"

STATE_KEYS = ("models", "step", "images_seen", "log", "rng", "sampler", "options")


class TrainingInputError(ValueError):
    """Bad input found before training starts; the message says what and where."""


@dataclass(frozen=True)
class TrainSummary:
    step: int
    images_seen: int
    resumed_from: int | None
    seconds: float
    last_stats: dict[str, float]


class GlobalBatchSampler(Sampler[list[int]]):
    """Endless per-rank batches: global batch t is positions [b*T, (b+1)*T) of epoch e's permutation
    (t = e * batches_per_epoch + b; the last partial batch of an epoch is dropped); this rank takes
    every world_size-th index of it, starting at its rank. Starting at `start_step` resumes exactly."""

    def __init__(self, size: int, total_batch: int, rank: int, world_size: int, seed: int, start_step: int = 0):
        self.size, self.total_batch, self.rank, self.world_size, self.seed = size, total_batch, rank, world_size, seed
        self.batches_per_epoch = size // total_batch
        self.start_step = start_step

    def position(self, step: int) -> dict[str, int]:
        epoch, batch = divmod(step, self.batches_per_epoch)
        return {"epoch": epoch, "batch": batch, "batches_per_epoch": self.batches_per_epoch, "dataset_size": self.size}

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, perm = self.start_step, -1, None
        while True:
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, perm = (
                    e,
                    torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + e)),
                )
            yield perm[b * self.total_batch : (b + 1) * self.total_batch][self.rank :: self.world_size].tolist()
            step += 1


def step_randomness(seed: int, step: int, total_batch: int, z_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(z for the D step, z for the G step, flip coins) of the whole global batch of `step`."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
    z_d = torch.randn(total_batch, z_dim, generator=g)
    z_g = torch.randn(total_batch, z_dim, generator=g)
    flips = torch.rand(total_batch, generator=g) < 0.5
    return z_d, z_g, flips


def sample_latents(seeds: range, z_dim: int) -> Tensor:
    """One latent per seed, independent of how many are drawn: the grid of a run never changes."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def render_samples(generator: nn.Module, z: Tensor, batch: int) -> np.ndarray:
    """uint8 (N, S, S, 3) images of generator(z), computed in batches."""
    device = next(generator.parameters()).device
    out = [generator(zb.to(device)).float().cpu() for zb in z.split(batch)]
    images = torch.cat(out).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()


def write_plots(path: Path, rows: list[dict[str, float]]) -> None:
    """The DVC plots file: one row per logging point, x axis kimg."""
    columns = [*PLOT_COLUMNS, *(k for k in (rows[0] if rows else {}) if k not in PLOT_COLUMNS)]  # + pl_* when enabled
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns})
    write_text(path, buffer.getvalue())


@contextmanager
def _progress(enabled: bool, total: int, start: int) -> Iterator[Callable[[int, str], None]]:
    if not enabled:
        yield lambda step, text: None
        return
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=total, completed=start, stats="")

        def update(step: int, text: str) -> None:
            bar.update(task, completed=step, **({"stats": text} if text else {}))
            if text and not bar.console.is_terminal:
                # Logs (dvc repro, cluster jobs) get no live bar: print a line per logging point instead.
                bar.console.print(f"train step {step}/{total}  {text}")

        yield update


def _check_dataset(dataset: Dataset, options: TrainConfig, resolution: int, where: str) -> None:
    size = len(dataset)
    if size < options.total_batch:
        raise TrainingInputError(
            f"dataset {where} has {size} images, fewer than one global batch (train.total_batch {options.total_batch})"
        )
    image = dataset[0][0]
    if tuple(image.shape) != (3, resolution, resolution):
        raise TrainingInputError(
            f"dataset {where} holds images of shape {tuple(image.shape)} but the generator makes (3, {resolution}, {resolution})"
        )


def _load_resume_state(
    path: Path, options: TrainConfig, identity: dict[str, Any], restart_on_change: bool, ctx: DistContext
) -> dict[str, Any] | None:
    """The training state to resume from; None when there is none, or when it belongs to another
    configuration and `restart_on_change` (what `dvc repro` wants after a setting changed)."""
    if not path.exists():
        return None
    state = load_checkpoint(
        path, required=STATE_KEYS
    )  # on the CPU: RNG states must stay there; a corrupt file raises here, always
    changed = changed_fields(state["options"], options)
    before = state.get("identity", {})
    changed.update({k: (before.get(k), v) for k, v in identity.items() if before.get(k) != v})
    if not changed:
        return state
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    if restart_on_change:
        if ctx.is_main:
            print(f"note: '{path}' belongs to another configuration ({shown}); training starts over and replaces it")
        return None
    raise TrainingInputError(
        f"cannot resume from '{path}': the configuration changed since it was written ({shown}); "
        f"restore it, or start over with --no-resume (the checkpoint is then replaced)"
    )


def _remove_stale_temporaries(run_dir: Path) -> None:
    # A SIGKILL during an atomic write leaves its temporary sibling behind; never a real output.
    for folder in (run_dir, run_dir / SAMPLES_DIR, run_dir / KEPT_SNAPSHOTS_DIR):
        for tmp in folder.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)


def _set_previous_run_aside(run_dir: Path) -> bool:
    """Move the outputs of an earlier run into run_dir/.previous-run; True when there were any.

    Starting over used to delete the earlier run's kept snapshots before the first step: a restart
    that then failed left a row that resumed as "already trained" with its curve gone."""
    present = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not present:
        return False
    aside = run_dir / PREVIOUS_RUN_DIR
    aside.mkdir()
    for name in present:
        os.replace(run_dir / name, aside / name)
    (aside / _ASIDE_COMPLETE).touch()  # from here on, anything at the top level is the new run's
    return True


def _restore_previous_run(run_dir: Path) -> None:
    """Put the earlier run's outputs back, dropping what a start-over wrote before its first checkpoint."""
    aside = run_dir / PREVIOUS_RUN_DIR
    complete = (aside / _ASIDE_COMPLETE).exists()
    for name in RUN_OUTPUTS:
        ours, theirs = run_dir / name, aside / name
        # Before the move finished, the top level still holds the earlier run's own files: keep them.
        if ours.exists() and (complete or theirs.exists()):
            shutil.rmtree(ours) if ours.is_dir() else ours.unlink()
        if theirs.exists():
            os.replace(theirs, ours)
    shutil.rmtree(aside)


def _recover_previous_run(run_dir: Path) -> bool:
    """Finish what a killed start-over left behind; True when the earlier run's outputs were put back.

    With a training state at the top level the start-over reached its first checkpoint and the
    earlier run is superseded; without one it never did, and the earlier run is still the row's."""
    aside = run_dir / PREVIOUS_RUN_DIR
    if not aside.exists():
        return False
    if (run_dir / TRAINING_STATE).exists() and (aside / _ASIDE_COMPLETE).exists():
        shutil.rmtree(aside)
        return False
    _restore_previous_run(run_dir)
    return True


def _remove_kept_snapshots_after(run_dir: Path, step: int) -> None:
    # On resuming, kept snapshots past the resumed step come from the killed attempt: the curve must
    # only see this trajectory's, and training writes them again when it gets there. (A start-over
    # moves all of the earlier run's aside instead: _set_previous_run_aside.)
    for at, path in kept_snapshot_files(run_dir).items():
        if at > step:
            path.unlink()


def train(
    options: TrainConfig,
    make_generator: Callable[[], nn.Module],
    make_discriminator: Callable[[], nn.Module],
    dataset: Dataset,
    run_dir: Path,
    *,
    ctx: DistContext = DistContext(),
    resume: bool = True,
    plots_path: Path | None = None,
    tracker: Any = None,
    snapshot_info: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    restart_on_change: bool = False,
    dataset_name: str = "",
    progress: bool = True,
    options_record: dict[str, Any] | None = None,
) -> TrainSummary:
    """Train to options.total_steps, resuming from run_dir/training-state.pt when `resume` and it exists.

    Rank 0 writes, every snapshot_every steps and at the end: network-snapshot.pt, samples/step-N.png,
    the plots file, then training-state.pt (last, so a state never outlives its snapshot); and every
    keep_snapshot_every steps and at the end (when set) a G_ema-only snapshots/snapshot-N.pt. `dataset`
    yields (image (3, S, S) in [-1, 1], label) without flips of its own. `tracker` is a
    pipeline.tracking.Tracker (rank 0 only) or None. `identity` (e.g. the generator's settings) must
    match the checkpoint's, like the options that change the result, for a resume to happen; on a
    mismatch `restart_on_change` starts over instead of stopping. `options_record` is written to
    run_dir/options.json (rank 0).

    A run that starts over where an earlier one left outputs moves them to run_dir/.previous-run and
    deletes them only once its own first checkpoint is written; if it fails (or is killed) before
    that, the earlier run's outputs are put back (at once, or when the next run starts)."""
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    where = f"'{dataset_name}'" if dataset_name else "(given)"
    per_rank, rounds = options.per_process(ctx.world_size)
    state_path, snapshot_path = run_dir / TRAINING_STATE, run_dir / NETWORK_SNAPSHOT
    identity = dict(identity or {})
    if ctx.is_main and _recover_previous_run(run_dir):
        print(
            f"note: an earlier start-over of '{run_dir}' stopped before its first checkpoint; the run before it was put back",
            file=sys.stderr,
        )
    barrier(ctx)  # no rank reads the training state before it is back in place
    state = _load_resume_state(state_path, options, identity, restart_on_change, ctx) if resume else None

    torch.manual_seed(options.seed)  # identical initial models on every rank (broadcast makes sure)
    generator = make_generator()
    _check_dataset(dataset, options, generator.resolution, where)
    discriminator = make_discriminator()
    trainer = GANTrainer(generator, discriminator, options, ctx, per_rank, rounds)
    broadcast_module(trainer.G, ctx)
    broadcast_module(trainer.D, ctx)
    broadcast_module(trainer.G_ema, ctx)

    step, images_seen, log_rows = 0, 0, []
    torch.manual_seed(options.seed * 1000 + ctx.rank + 1)  # ranks draw different internal noise
    if state is not None:
        trainer.load_state_dict(state["models"])
        step, images_seen, log_rows = state["step"], state["images_seen"], list(state["log"])
        if state["sampler"]["dataset_size"] != len(dataset):
            raise TrainingInputError(
                f"cannot resume from '{state_path}': the dataset {where} had {state['sampler']['dataset_size']} images then "
                f"and has {len(dataset)} now; start over with --no-resume"
            )
        if len(state["rng"]) == ctx.world_size:
            restore_rng(state["rng"][ctx.rank])
        elif ctx.is_main:
            print(
                f"note: '{state_path}' was written by {len(state['rng'])} processes, now {ctx.world_size}; "
                "data, latents and flips continue exactly, generator-internal noise is reseeded"
            )
    resumed_from = step if state is not None else None
    del state

    total_steps = options.total_steps
    sampler = GlobalBatchSampler(
        len(dataset), options.total_batch, ctx.rank, ctx.world_size, options.seed, start_step=step
    )
    # The loader gets its own generator: drawing worker seeds from the global one would shift the
    # stream that generator-internal noise uses between a resumed run and an uninterrupted one.
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=options.num_workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=options.num_workers > 0,
        generator=torch.Generator().manual_seed(options.seed + step),
    )
    grid_z = sample_latents(range(options.sample_seed, options.sample_seed + options.sample_grid**2), generator.z_dim)
    last_saved = resumed_from

    def keep_snapshot(at_step: int) -> None:
        # G_ema only (a few hundred MB at paper size instead of G + G_ema + D + optimisers): enough to
        # score, never used to resume, so it needs no RNG states or collective.
        if ctx.is_main:
            save_checkpoint(
                kept_snapshot_file(run_dir, at_step),
                {
                    "G_ema": trainer.G_ema.state_dict(),
                    "options": options.model_dump(mode="json"),
                    "info": snapshot_info or {},
                    "step": at_step,
                    "kimg": images_seen / 1000,
                },
            )

    def save(at_step: int) -> None:
        rng = gather_objects(capture_rng(), ctx)  # collective: every rank takes part
        if ctx.is_main:
            kimg = images_seen / 1000
            save_checkpoint(
                snapshot_path,
                {
                    "G": trainer.G.state_dict(),
                    "G_ema": trainer.G_ema.state_dict(),
                    "D": trainer.D.state_dict(),
                    "options": options.model_dump(mode="json"),
                    "info": snapshot_info or {},
                    "step": at_step,
                    "kimg": kimg,
                },
            )
            grid = run_dir / SAMPLES_DIR / f"step-{at_step:07d}.png"
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                # Rendering must not consume the training stream, or resumed runs would drift.
                images = render_samples(trainer.G_ema, grid_z, trainer.chunk)
            save_grid(grid, images, options.sample_grid)
            if plots_path is not None:
                write_plots(plots_path, log_rows)
            save_checkpoint(
                state_path,
                {
                    "models": trainer.state_dict(),
                    "step": at_step,
                    "images_seen": images_seen,
                    "log": log_rows,
                    "rng": rng,
                    "sampler": sampler.position(at_step),
                    "options": options.model_dump(mode="json"),
                    "identity": identity,
                },
            )
            if aside[0]:
                shutil.rmtree(
                    run_dir / PREVIOUS_RUN_DIR
                )  # this run now has a checkpoint: the earlier one is superseded
                aside[0] = False
            if tracker is not None:
                # Named by kimg in MLflow (the file counts steps, which differ between batch sizes).
                tracker.log_artifact(grid, SAMPLES_DIR, name=f"kimg-{kimg:08.1f}.png")
        barrier(ctx)

    # One-element list: save() below clears it once the new run's first checkpoint supersedes the earlier run.
    aside = [False]
    if ctx.is_main:
        _remove_stale_temporaries(run_dir)
        if resumed_from is not None:
            _remove_kept_snapshots_after(run_dir, step)
        else:
            aside[0] = _set_previous_run_aside(run_dir)
        if options_record is not None:
            write_json(run_dir / OPTIONS_FILE, options_record)
    try:
        window = {"t": time.perf_counter(), "images": 0, "sums": {}, "n": 0}
        stats: dict[str, float] = {}
        with _progress(progress and ctx.is_main, total_steps, step) as update_bar:
            data = iter(loader)
            while step < total_steps:
                reals, _ = next(data)
                z_d, z_g, flips = step_randomness(options.seed, step, options.total_batch, generator.z_dim)
                share = slice(ctx.rank, None, ctx.world_size)
                reals = reals.to(ctx.device, non_blocking=True)
                if options.hflip:
                    reals = torch.where(flips[share].to(ctx.device).view(-1, 1, 1, 1), reals.flip(-1), reals)
                try:
                    stats = trainer.step(
                        reals, z_d[share].to(ctx.device), z_g[share].to(ctx.device), step, images_seen=images_seen
                    )
                except TrainingDiverged as err:
                    kept = (
                        f"the last good checkpoint '{state_path}' (step {last_saved}) is kept"
                        if last_saved is not None
                        else "no checkpoint was written yet"
                        + (", and the earlier run's outputs were put back" if aside[0] else "")
                    )
                    raise TrainingDiverged(
                        f"{err}; training stopped, {kept}. Lower the learning rates, raise r1_gamma or turn mixed precision off"
                    ) from None
                step += 1
                images_seen += options.total_batch
                window["images"] += options.total_batch
                window["n"] += 1
                for k, v in stats.items():
                    window["sums"][k] = window["sums"].get(k, 0.0) + v
                text = ""
                if step % options.log_every == 0 or step == total_steps:
                    seconds = time.perf_counter() - window["t"]
                    row = {
                        "step": step,
                        "kimg": images_seen / 1000,
                        **{k: v / window["n"] for k, v in window["sums"].items()},
                        "images_per_s": window["images"] / max(seconds, 1e-9),
                    }
                    log_rows.append(row)
                    if tracker is not None:
                        tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=images_seen)
                    text = (
                        f"kimg {row['kimg']:.2f}  {row['images_per_s']:.1f} img/s  G {row['loss_g']:.3f}  "
                        f"D {row['loss_d_fake'] + row['loss_d_real']:.3f}  R1 {row['r1_penalty']:.3f}"
                    )
                    window = {"t": time.perf_counter(), "images": 0, "sums": {}, "n": 0}
                keep = options.keep_snapshot_every is not None and (
                    step % options.keep_snapshot_every == 0 or step == total_steps
                )
                if keep:
                    # Before the training state of the same step: a state never outlives the kept snapshots up to it.
                    keep_snapshot(step)
                checkpoint = step % options.snapshot_every == 0 or step == total_steps
                if checkpoint:
                    save(step)
                    last_saved = step
                if keep or checkpoint:
                    window["t"] = time.perf_counter()  # images/s measures training, not checkpoint writing
                update_bar(step, text)
    except BaseException:
        if aside[0]:
            _restore_previous_run(run_dir)
            print(
                f"note: training stopped before its first checkpoint; the earlier run's outputs in '{run_dir}' were put back",
                file=sys.stderr,
            )
        raise
    if ctx.is_main and plots_path is not None and last_saved == resumed_from:
        # Nothing was trained (resumed at the end): `dvc repro -f` deletes the plots file before the
        # stage runs, so write it again from the log the training state keeps.
        write_plots(plots_path, log_rows)
    return TrainSummary(step, images_seen, resumed_from, time.perf_counter() - t_start, stats)
