"""Stage `train`: one ablation row, from its prepared dataset to a trained G/D pair under runs/<row>/.

Runs as one process (`pipeline train --row ROW`) or as each of N torchrun processes
(`torchrun --standalone --nproc_per_node N -m stages.train --row ROW`); only rank 0 writes files,
opens the MLflow run and shows progress. Running the same command again after a crash resumes from
runs/<row>/training-state.pt.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.config import ConfigError, Params, load_params
from pipeline.data.dataset import PreparedDataset
from pipeline.io import NoSpaceLeft
from pipeline.tracking import resolve_tracking_uri, stage_run, table_tag
from pipeline.train.benchmark import benchmark_training
from pipeline.train.checkpoint import TRAINING_STATE, CheckpointError, verify_checkpoint
from pipeline.train.distributed import init_from_env, shutdown
from pipeline.train.loop import OPTIONS_FILE, TrainingInputError, TrainSummary, train
from pipeline.train.options import TrainConfig, row_spec
from pipeline.train.trainer import TrainingDiverged
from stages import paths


def model_factories(generator: BaseModel, options: TrainConfig, resolution: int) -> tuple[Callable, Callable]:
    """Constructors of the row's generator and of the discriminator at the dataset's resolution."""
    from pipeline.models.registry import build_discriminator, build_generator

    return (lambda: build_generator(generator)), (
        lambda: build_discriminator({**options.discriminator, "resolution": resolution})
    )


def _open_dataset(root: Path, dataset: str) -> PreparedDataset:
    # Flips are drawn by the loop (seeded per step), so the dataset itself never flips.
    where = root / paths.prepared_dir(dataset)
    if not where.exists():
        raise TrainingInputError(
            f"prepared dataset '{where}' does not exist; run `pipeline prepare --dataset {dataset}` first"
        )
    try:
        return PreparedDataset(where, hflip=False)
    except (FileNotFoundError, ValueError) as err:
        raise TrainingInputError(str(err)) from None


def run(
    params: Params,
    row: str,
    root: Path = Path("."),
    resume: bool = True,
    options: TrainConfig | None = None,
    environ: Mapping[str, str] | None = None,
    progress: bool = True,
    restart_on_change: bool = False,
) -> TrainSummary:
    """Train `row` of `params` under `root`; `options` replaces the ones resolved from params.

    resume: continue from runs/<row>/training-state.pt if it exists (a corrupt one stops the stage).
    restart_on_change: a state written under other settings of the row is replaced instead of
    stopping the stage (dvc.yaml passes it, so that a changed setting re-trains the row)."""
    cfg = params.row(row)
    if cfg.released is not None:
        # Training would overwrite the authors' weights with a fresh run under the released row's name.
        raise ConfigError(
            f"row {row!r} is one of the authors' released checkpoints ({cfg.released.pickle}): it is imported, not "
            f"trained; run `pipeline import --row {row}` (`pipeline train` and `dvc repro train@{row}` do that for it)"
        )
    options = options or params.train_options(row)
    environ = os.environ if environ is None else environ
    options.per_process(int(environ.get("WORLD_SIZE", "1")))  # before any work: a batch that does not split stops here
    dataset = _open_dataset(root, cfg.dataset)
    out_dir = root / paths.run_dir(row)
    if resume and (out_dir / TRAINING_STATE).exists():
        verify_checkpoint(out_dir / TRAINING_STATE)  # a damaged one stops us before any file or MLflow run is written
    ctx = init_from_env(environ, options.device)
    try:
        info = row_spec(params, row, options)
        tags = {
            "stage": "train",
            "row": row,
            "dataset": cfg.dataset,
            "profile": params.profile,
            "table": table_tag(params, row),
        }
        tracking = (
            stage_run(
                resolve_tracking_uri(params.tracking.uri),
                params.tracking.experiment,
                f"train/{row}",
                tags,
                {**info, "world_size": ctx.world_size},
                lazy=True,  # a row found finished (dvc repro after make repro's training) leaves no empty run
                system_metrics=True,
            )
            if ctx.is_main
            else nullcontext(None)
        )
        with tracking as tracker:
            if tracker is not None:
                tracker.log_dataset(dataset.root, cfg.dataset)
            make_g, make_d = model_factories(cfg.generator, options, dataset.resolution)
            summary = train(
                options,
                make_g,
                make_d,
                dataset,
                out_dir,
                ctx=ctx,
                resume=resume,
                plots_path=root / paths.train_plots(row),
                tracker=tracker,
                snapshot_info=info,
                identity={"dataset": cfg.dataset, "generator": cfg.generator.model_dump(mode="json")},
                restart_on_change=restart_on_change,
                dataset_name=f"{cfg.dataset} ({dataset.root})",
                progress=progress,
                options_record={**info, "world_size": ctx.world_size, "device": str(ctx.device)},
            )
            if tracker is not None:
                tracker.log_artifact(out_dir / OPTIONS_FILE)
        return summary
    finally:
        shutdown(ctx)


def benchmark(
    params: Params,
    row: str,
    batch: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    mixed_precision: str | None = None,
) -> dict[str, Any]:
    """Training images/s of `row` on random images (no data loading): G and D steps with R1 and EMA.

    batch defaults to what one process computes at once under the row's options; mixed_precision
    (off, bf16, fp16) replaces the row's `train.mixed_precision`."""
    from pipeline.devices import resolve_device_flag

    cfg = params.row(row)
    options = params.train_options(row)
    if mixed_precision is not None:
        options = TrainConfig.model_validate({**options.model_dump(), "mixed_precision": mixed_precision})
    per_rank, rounds = options.per_process(1)
    bad = {
        name: value
        for name, value, least in (("batch", batch, 1), ("steps", steps, 1), ("warmup", warmup, 0))
        if value is not None and value < least
    }
    if bad:
        raise ConfigError(
            "pipeline bench-train: "
            + "; ".join(f"--{k} must be at least {1 if k != 'warmup' else 0}, got {v}" for k, v in bad.items())
        )
    device = resolve_device_flag(device if device != "auto" else options.device, "pipeline bench-train")
    if options.mixed_precision != "off" and str(device).split(":")[0] != "cuda":
        raise ConfigError(
            f"pipeline bench-train: mixed precision {options.mixed_precision!r} needs a CUDA device (running on "
            f"{device}); use --mixed-precision off on the CPU"
        )
    make_g, make_d = model_factories(cfg.generator, options, cfg.generator.resolution)
    generator, discriminator = make_g(), make_d()
    result = benchmark_training(
        generator, discriminator, options, batch if batch is not None else per_rank // rounds, steps, warmup, device
    )
    return {"row": row, **result}


def train_many(
    params_path: Path,
    rows: list[str],
    jobs: int,
    log_dir: Path,
    echo: Callable[[str], None] = print,
    threads: int = 1,
    then: Sequence[str] = (),
) -> dict[str, int]:
    """Train `rows` as separate processes, `jobs` at a time, each with `threads` CPU threads; return each
    row's exit code (0: trained or already trained).

    Why: on a CPU the toy rows are bound by small kernels, so two one-thread trainings side by side get
    ~1.3x the images per second of one two-thread training, but `dvc repro` runs one stage at a time.
    `make repro` trains the rows this way first; `dvc repro` then finds each row finished (the same
    command resumes at its last step) and only records the outputs. The longest rows start first.
    Each process writes its output to log_dir/<row>.log.

    `then`: shell commands that join the same pool once every row has started (their logs:
    log_dir/then-<k>.log, their exit codes under the key `then-<k>`). With more rows than jobs the last
    row trains alone while the other lanes idle; work that does not need the trained rows (DVC's
    reference, keypoints and macs stages in `make repro`) fills them."""
    import subprocess
    import time

    if jobs < 1 or threads < 1:
        raise ConfigError(f"--jobs and --threads must be at least 1, got {jobs} and {threads}")
    params = load_params(params_path)
    for row in rows:
        params.row(row)  # an unknown row stops here, before any process starts
    # Longest first (fewest images per second x more images): a good order for a few workers.
    cost = {
        row: params.train_options(row).total_steps
        * params.train_options(row).total_batch
        * (1.4 if params.row(row).generator.kind == "stylegan2" else 1.0)
        for row in rows
    }  # StyleGAN2's toy G is the slowest
    pending = sorted(rows, key=lambda r: -cost[r])
    extra = {f"then-{k}": command for k, command in enumerate(then, 1)}
    pending += list(extra)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    codes: dict[str, int] = {}
    started = 0
    while pending or running:
        while pending and len(running) < jobs:
            row = pending.pop(0)
            log = open(log_dir / f"{row}.log", "w")  # noqa: SIM115 (closed when the process ends)
            if row in extra:
                proc = subprocess.Popen(extra[row], shell=True, stdout=log, stderr=subprocess.STDOUT, env=env)
                echo(f"{row}: started `{extra[row]}` (log {log_dir / f'{row}.log'})")
            else:
                cmd = [
                    sys.executable,
                    "-m",
                    "stages.train",
                    "--params",
                    str(params_path),
                    "--row",
                    row,
                    "--restart-on-change",
                ]
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                started += 1
                echo(f"train {row}: started ({started}/{len(rows)}, log {log_dir / f'{row}.log'})")
            running[row] = (proc, log, time.perf_counter())
        time.sleep(0.5)
        for row, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            codes[row] = proc.returncode
            del running[row]
            last = (log_dir / f"{row}.log").read_text().strip().splitlines()[-1:] or [""]
            echo(
                f"{'' if row in extra else 'train '}{row}: {'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in "
                f"{time.perf_counter() - t0:.0f} s: {last[0][:160]}"
            )
    return codes


def torchrun_command(
    nproc: int, params_path: Path, row: str, resume: bool = True, restart_on_change: bool = False
) -> list[str]:
    """The command `pipeline train --nproc N` runs: torchrun on this machine, N processes."""
    flags = [*([] if resume else ["--no-resume"]), *(["--restart-on-change"] if restart_on_change else [])]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "stages.train",
        "--params",
        str(params_path),
        "--row",
        row,
        *flags,
    ]


def main(argv: list[str] | None = None) -> None:
    """Entry of each torchrun process: `python -m stages.train --params PATH --row ROW [--no-resume]`."""
    ap = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--row", required=True)
    ap.add_argument(
        "--no-resume", dest="resume", action="store_false", help="start over even if a training state exists"
    )
    ap.add_argument(
        "--restart-on-change", action="store_true", help="start over when the training state belongs to other settings"
    )
    args = ap.parse_args(argv)
    try:
        summary = run(load_params(args.params), args.row, resume=args.resume, restart_on_change=args.restart_on_change)
    except (ConfigError, TrainingInputError, CheckpointError, TrainingDiverged, NoSpaceLeft) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained {args.row}: step {summary.step}, {summary.images_seen / 1000:.1f} kimg in {summary.seconds:.0f} s"
        )


if __name__ == "__main__":
    main()
