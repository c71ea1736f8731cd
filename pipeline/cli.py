"""The `pipeline` command: one thin sub-command per DVC stage, plus profile switching and the MLflow UI.

This is the only module of the package that imports `stages`; the library never does."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipeline.config import PROFILES, ConfigError, Params, load_params, parse_params, with_seed_rows
from pipeline.data.prepare import PrepareError
from pipeline.data.sources import SourceError
from pipeline.io import NoSpaceLeft, write_text
from pipeline.tracking import STUDY_VIEW_KEY, project_root, resolve_tracking_uri

app = typer.Typer(
    name="pipeline",
    help="INR-GAN reproduction pipeline. Most commands run one DVC stage by hand (`dvc repro` runs them all); "
    "profile, train-all, sample, bench, bench-train, bench-prepare, gpu-check, track and ui are tools around them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PROFILES_DIR = Path("profiles")
ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file to read (the active profile)")]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="print the resolved configuration and exit without doing any work")
]


def _print_resolved(params: Params, section: object) -> None:
    typer.echo(json.dumps({"profile": params.profile, "config": section}, indent=2, default=str))


@app.command()
def prepare(
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset", "-d", help="dataset name from params.yaml `prepare.datasets` (repeatable; default: all)"
        ),
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
    dry_run: DryRun = False,
) -> None:
    """Prepare datasets: read the raw source, centre-crop, resize, write data/prepared/<dataset>/,
    a preview grid under reports/figures/prepare/ and statistics under reports/metrics/prepare/ (counts) and
    reports/details/prepare/ (the rest)."""
    params = load_params(params_path)
    names = dataset or sorted(params.prepare.datasets)
    configs = {n: params.dataset(n) for n in names}  # unknown names fail before any work
    if dry_run:
        from pipeline.data.prepare import describe_plan

        plans = {n: describe_plan(c) for n, c in configs.items()}
        _print_resolved(params, {n: {**c.model_dump(mode="json"), "plan": plans[n]} for n, c in configs.items()})
        for n, plan in plans.items():  # the plan is still printed; the real run would stop on missing paths
            keys = {str(p): f"categories.{c}" for c, p in (configs[n].categories or {}).items()}
            for path in plan["missing_paths"]:
                typer.secho(
                    f"warning: prepare.datasets.{n}.{keys.get(path, 'path')} '{path}' does not exist yet; put the raw data there before running",
                    fg=typer.colors.YELLOW,
                    err=True,
                )
            count = (
                "unknown (source missing, no num_images)" if plan["num_images"] is None else f"{plan['num_images']:,}"
            )
            size = "unknown" if plan["output_bytes"] is None else f"{plan['output_bytes'] / 2**30:.1f} GiB"
            approx = "" if plan["num_images_exact"] else " (expected from the published size: a source is missing)"
            estimate = "" if plan["output_bytes_exact"] else ", estimated"
            typer.echo(f"{n}: {count} images{approx}, {plan['format']} output {size}{estimate}", err=True)
            for short in plan.get("short_classes") or []:  # the other classes take the surplus of this one
                typer.secho(
                    f"warning: {n}: class {short}; the other classes take the rest", fg=typer.colors.YELLOW, err=True
                )
        return
    from stages import prepare as stage

    for name in names:
        stats = stage.run(params, name)
        typer.echo(
            f"prepared {name}: {stats['num_images']} images at {stats['resolution']} px ({stats['num_bad']} unreadable skipped) in {stats['seconds']} s"
        )


@app.command()
def profile(
    name: Annotated[
        str | None, typer.Argument(help=f"profile to activate: {', '.join(PROFILES)}; omit to show the active one")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
    seeds: Annotated[
        bool,
        typer.Option(
            "--seeds",
            help="add the repeats of the profile's `seeds:` section: every row of "
            "seeds.rows again as <row>_s<k> with train.seed k (tables then give mean +- std)",
        ),
    ] = False,
) -> None:
    """Switch profile: copy profiles/<name>.yaml over params.yaml (validated first). `dvc repro` then
    re-runs exactly the stages whose parameters changed."""
    if name is None:
        typer.echo(load_params(params_path).profile)
        return
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}")
    source = PROFILES_DIR / f"{name}.yaml"
    text = source.read_text()
    data = yaml.safe_load(text)
    parse_params(data, str(source))
    if seeds:
        if not data.get("seeds"):
            raise ConfigError(f"{source} has no `seeds:` section (rows and values to repeat); add one or drop --seeds")
        expanded = with_seed_rows(data)
        parse_params(expanded, f"{source} with --seeds")
        added = [r for r in expanded["rows"] if r not in data["rows"]]
        text = (
            f"# Generated by `pipeline profile {name} --seeds` from {source}: the profile plus {len(added)} repeated rows\n"
            f"# ({', '.join(added)}). `pipeline profile {name}` restores the plain profile.\n"
            + yaml.safe_dump(expanded, sort_keys=False, width=120)
        )
    write_text(params_path, text)
    from pipeline.plots import PLOTS_FILE, plots_yaml

    # The charts of `dvc plots show` name the profile's rows, so they change with it.
    write_text(params_path.parent / PLOTS_FILE, plots_yaml(parse_params(yaml.safe_load(text), str(params_path))))
    extra = " with its seed repeats" if seeds else ""
    typer.echo(
        f"{params_path} now holds the {name!r} profile{extra} (from {source}); run `dvc repro` to bring results up to date"
    )


RowOption = Annotated[
    str, typer.Option("--row", "-r", help="ablation row from params.yaml `rows` (e.g. inr_gan, stylegan2)")
]


@app.command()
def train(
    row: RowOption,
    nproc: Annotated[
        int, typer.Option(help="processes on this machine; > 1 launches torchrun (NCCL on GPUs, gloo on CPUs)")
    ] = 1,
    resume: Annotated[bool, typer.Option(help="continue from runs/<row>/training-state.pt when it exists")] = True,
    restart_on_change: Annotated[
        bool,
        typer.Option(
            help="start over when the saved state belongs to other settings (default: stop and say what changed)"
        ),
    ] = False,
    params_path: ParamsOption = Path("params.yaml"),
    dry_run: DryRun = False,
) -> None:
    """Train one ablation row: runs/<row>/ gets the network snapshot, the training state, options.json and
    sample grids; reports/plots/train/<row>.csv the losses over kimg. Re-running resumes."""
    params = load_params(params_path)
    from stages import train as stage

    if dry_run:
        from pipeline.train.options import row_spec

        _print_resolved(params, row_spec(params, row))
        return
    if params.row(row).released is not None:  # dvc.yaml's train stage covers every row; released ones are imported
        import_(row, params_path=params_path)
        return
    params.row(row)  # an unknown row fails here, before torchrun starts N processes
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (processes on this machine), got {nproc}")
    if nproc > 1:
        raise typer.Exit(subprocess.call(stage.torchrun_command(nproc, params_path, row, resume, restart_on_change)))
    summary = stage.run(params, row, resume=resume, restart_on_change=restart_on_change)
    if summary.resumed_from == summary.step:
        typer.echo(
            f"{row} is already trained: step {summary.step}, {summary.images_seen / 1000:g} kimg "
            f"(raise train.kimg to train longer, or --no-resume to start over)"
        )
    else:
        typer.echo(f"trained {row}: step {summary.step}, {summary.images_seen / 1000:g} kimg, {summary.seconds:.0f} s")


@app.command("train-all")
def train_all(
    jobs: Annotated[int, typer.Option(help="rows trained at once, each in its own process")] = 2,
    threads: Annotated[int, typer.Option(help="CPU threads per process")] = 1,
    rows: Annotated[str | None, typer.Option(help="comma-separated rows (default: every row of params.yaml)")] = None,
    then: Annotated[
        list[str] | None,
        typer.Option(
            help="a shell command that joins the pool once every row has started, "
            "filling the lanes the last rows leave idle (repeatable; log runs/logs/then-<k>.log)"
        ),
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Train several rows side by side (what `make repro` does before `dvc repro`): on a 2-core CPU two
    one-thread trainings get ~1.3x the throughput of one two-thread training. Finished rows return at
    once; logs go to runs/logs/<row>.log. `dvc commit train` (or `dvc repro`) afterwards records the trained rows."""
    params = load_params(params_path)
    from stages import train as stage

    # Released rows are imported (`pipeline import`), not trained.
    trained = [r for r, cfg in params.rows.items() if cfg.released is None]
    names = [r.strip() for r in rows.split(",") if r.strip()] if rows else trained
    codes = stage.train_many(
        params_path, names, jobs, Path("runs") / "logs", echo=typer.echo, threads=threads, then=then or ()
    )
    failed = [r for r, c in codes.items() if c != 0]
    if failed:
        typer.echo(f"failed: {', '.join(failed)}: see runs/logs/<name>.log", err=True)
        raise typer.Exit(1)


@app.command("bench-prepare")
def bench_prepare(
    images: Annotated[int, typer.Option(help="photograph crops per case")] = 48,
    repeats: Annotated[int, typer.Option(help="timed rounds (medians are reported)")] = 5,
) -> None:
    """Prepared formats (npy, zip) measured on crops of photographs: bytes per image, preparation ms per
    image (one process) and 256 px read throughput of one process (one thread), as JSON."""
    from pipeline.data.bench import bench_formats

    typer.echo(json.dumps(bench_formats(images, repeats), indent=2))


@app.command("bench-train")
def bench_train(
    row: RowOption,
    batch: Annotated[int | None, typer.Option(help="images per step (default: the row's per-process batch)")] = None,
    steps: Annotated[int, typer.Option(help="timed steps (median reported)")] = 10,
    warmup: Annotated[int, typer.Option(help="untimed steps first")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    mixed_precision: Annotated[
        str | None, typer.Option(help="off, bf16 or fp16 on CUDA (default: the row's train.mixed_precision)")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Training throughput of one row (images/s with a D step incl. R1 and a G step, on random images), as JSON."""
    params = load_params(params_path)
    from stages import train as stage

    result = stage.benchmark(
        params, row, batch=batch, steps=steps, warmup=warmup, device=device, mixed_precision=mixed_precision
    )
    typer.echo(json.dumps(result, indent=2))


@app.command("gpu-check")
def gpu_check(
    out: Annotated[Path, typer.Option(help="JSON to write")] = Path("reports/benchmarks/gpu_check.json"),
    params_path: Annotated[Path, typer.Option("--params", help="params file with the paper-size rows")] = Path(
        "profiles/paper.yaml"
    ),
) -> None:
    """GPU readiness in one run (<= 8 min on one GPU): the CUDA-only tests (pytest -m gpu), Table 2's generators
    at 256 px in fp32 and bf16 (batch 50), paper-size training steps of INR-GAN and StyleGAN2 in fp32, bf16 and
    fp16, and a 2-process NCCL all-reduce when 2 GPUs exist; one JSON with the device name. Exits 2 without CUDA."""
    from pipeline import gpu_check as check

    try:
        report = check.gpu_check(params_path, out, echo=typer.echo)
    except check.NeedsCuda as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    failed = [c["name"] for c in report["checks"] if c["status"] != "ok"]
    typer.echo(f"wrote {out} ({report['device']}); " + (f"not ok: {', '.join(failed)}" if failed else "all ok"))
    if failed:
        raise typer.Exit(1)


@app.command()
def macs(
    as_json: Annotated[bool, typer.Option("--json", help="print the records as a JSON list on stdout")] = False,
    params_path: ParamsOption = Path("params.yaml"),
    dry_run: DryRun = False,
) -> None:
    """Count #params and GMACs (paper convention and true) of every Table 1 row at paper size, on the
    meta device; write reports/tables/table1_cost.md, reports/metrics/macs.json and the Fig. 9 plot."""
    params = load_params(params_path)
    if dry_run:
        _print_resolved(params, params.macs.model_dump(mode="json"))
        return
    from stages import macs as stage

    records = stage.run(params)
    if as_json:
        keys = ("row", "resolution", "params", "gmacs_paper", "gmacs_true", "paper_params_m", "paper_gmacs")
        typer.echo(json.dumps([{k: r[k] for k in keys} for r in records], indent=2))
    else:
        typer.echo(Path("reports/tables/table1_cost.md").read_text())


DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="dataset name from params.yaml `prepare.datasets`")]


@app.command()
def reference(dataset: DatasetOption, params_path: ParamsOption = Path("params.yaml")) -> None:
    """Feature statistics of a dataset's real images for FID/IS (Inception) or fd_domain/is_domain (a CNN
    trained here on the dataset's classes, offline): data/reference/<dataset>/stats.npz (and domain.pt, the
    trained CNN)."""
    from stages import reference as stage

    typer.echo(json.dumps(stage.run(load_params(params_path), dataset), indent=2, default=str))


@app.command("import")
def import_(
    row: RowOption,
    pickle: Annotated[
        Path | None, typer.Option(help="the authors' .pkl to read instead of rows.<row>.released.pickle")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Import one of the authors' released INR-GAN network pickles (StyleGAN2-ADA) into runs/<row>/network-snapshot.pt
    for a row with a `released` section, reading the pickle without running any of its code."""
    from stages import released as stage

    info = stage.run(load_params(params_path), row, pickle=pickle)
    typer.echo(f"imported {row}: {info['pickle']} (sha256 {info['sha256']}) -> runs/{row}/network-snapshot.pt")


@app.command()
def score(row: RowOption, params_path: ParamsOption = Path("params.yaml")) -> None:
    """FID/IS (or fd_domain/is_domain offline) and UpsampledFID of a trained row's EMA generator, from a fixed
    seed range, plus the curve over its kept snapshots when score.curve lists it: reports/metrics/score/<row>.json
    (headline numbers) and reports/details/score/<row>.json (the rest, the curve included)."""
    from stages import score as stage

    typer.echo(json.dumps(stage.run(load_params(params_path), row), indent=2, default=str))


@app.command()
def properties(row: RowOption, params_path: ParamsOption = Path("params.yaml")) -> None:
    """Figures of continuous images for a trained INR row: extrapolation (Figs. 2/10), super-resolution
    (Fig. 3), parameter-space interpolation (Fig. 5), Fourier frequencies (Fig. 17), under
    reports/figures/properties/<row>/, with reports/metrics/properties/<row>.json. An inr_gan_sg2 row draws
    the first two (its details file says why the others are skipped); stylegan2 rows are refused."""
    from stages import properties as stage

    typer.echo(json.dumps(stage.run(load_params(params_path), row), indent=2, default=str))


@app.command()
def sample(
    row: RowOption,
    resolution: Annotated[int | None, typer.Option(help="pixels per side (default: the trained resolution)")] = None,
    range_: Annotated[
        tuple[float, float],
        typer.Option(
            "--range",
            help="coordinate range [LO, HI) on both axes; [0, 1) is the training frame, wider extrapolates (INR and inr_gan_sg2 rows)",
        ),
    ] = (0.0, 1.0),
    num: Annotated[int, typer.Option(help="images (seeds seed-start, seed-start + 1, ...)")] = 16,
    seed_start: Annotated[int, typer.Option(help="first seed")] = 0,
    truncation_psi: Annotated[float, typer.Option(help="W-space truncation towards the mean (1 = none)")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: samples/<row>_<S>px_<LO>_<HI>.png)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Draw a trained row's G_ema on any grid: denser (super-resolution), sparser (preview) or wider
    (extrapolation), e.g. `pipeline sample --row inr_gan --resolution 64 --range -0.5 1.5`."""
    from stages import properties as stage

    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}")
    path = stage.sample(
        load_params(params_path), row, resolution, range_[0], range_[1], num, seed_start, truncation_psi, out, device
    )
    typer.echo(f"wrote {path}")


@app.command()
def bench(
    rows: Annotated[str | None, typer.Option(help="comma-separated rows (default: params `bench.rows`)")] = None,
    resolution: Annotated[int | None, typer.Option(help="output side (default: `bench.resolution`)")] = None,
    batch: Annotated[int | None, typer.Option(help="images per forward pass (default: `bench.batch`)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: `bench.device`)")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 or bf16 (bf16 on CUDA only)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as a JSON list")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Generator throughput (images/s, median of alternating rounds after warm-up) and peak memory. A row
    is built at paper size from `macs.rows` when it has a spec at that resolution, else from `rows`."""
    params = load_params(params_path)
    from stages import bench as stage

    overrides = {
        "rows": tuple(rows.split(",")) if rows else None,
        "resolution": resolution,
        "batch": batch,
        "device": device,
        "dtype": dtype,
    }
    records = stage.run(params, **{k: v for k, v in overrides.items() if v is not None})
    if as_json:
        typer.echo(json.dumps(records, indent=2))
    else:
        for r in records:
            typer.echo(
                f"{r['row']:>24}  {r['resolution']} px  batch {r['batch']}  {r['device']} {r['dtype']}  "
                f"{r['img_per_s']:.2f} img/s  peak {r['peak_mem_mb']:.0f} MB"
            )


ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="model from params.yaml `project.models` (inr_gan, stylegan2); default: all"),
]


@app.command()
def keypoints(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Make KPL's keypoint extractor ready: train the synthetic-faces regressor (reporting its held-out
    error; data/keypoints/<dataset>/regressor.pt) or, for real faces, locate and load FAN's weights."""
    from stages import kpl as stage

    typer.echo(json.dumps(stage.prepare_extractor(load_params(params_path)), indent=2, default=str))


@app.command()
def project(
    model: ModelOption = None, params_path: ParamsOption = Path("params.yaml"), dry_run: DryRun = False
) -> None:
    """Embed real test images into a model's Z and W spaces by optimisation (StyleGAN2's projector without
    noise maps): data/projections/<model>.npz and a figure of targets vs reconstructions."""
    params = load_params(params_path)
    from stages import project as stage

    cfg = stage.project_config(params)
    models = [model] if model else list(cfg.models)
    if dry_run:
        _print_resolved(params, {"models": models, **cfg.model_dump(mode="json")})
        return
    for m in models:
        typer.echo(json.dumps({m: stage.run(params, m)}, indent=2, default=str))


@app.command()
def kpl(model: ModelOption = None, params_path: ParamsOption = Path("params.yaml"), dry_run: DryRun = False) -> None:
    """Keypoint prediction loss (Table 3, Algorithm 1): fit latent -> keypoints on generated faces, evaluate
    on projected real faces; KPL(Z), KPL(W), KPL(random). Writes reports/tables/table3_kpl.md."""
    params = load_params(params_path)
    from stages import kpl as stage

    if dry_run:
        _print_resolved(params, stage.kpl_config(params).model_dump(mode="json"))
        return
    results = {model: stage.run(params, model)} if model else stage.run_all(params)
    typer.echo(
        json.dumps(
            {m: {k: v for k, v in r.items() if k.startswith("kpl")} for m, r in results.items()}, indent=2, default=str
        )
    )


@app.command()
def tables(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Compile reports/tables/ (Tables 1, 2, 4 and Fig. 8, Markdown + CSV) and Fig. 8's curve plot from the
    stages' metrics, with the paper's numbers beside ours, and the reports/README.md index."""
    from stages import tables as stage

    for name, text in stage.run(load_params(params_path)).items():
        typer.echo(text)


def _free_port(host: str, preferred: int = 0) -> int:
    """`preferred` when it is free on `host` (a bookmark keeps working), else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free port on {host}")


def _experiment_id(uri: str, name: str) -> tuple[str | None, bool]:
    """The experiment's id in a SQLite store and whether it holds the study view (`pipeline track
    --from-reports` or the tables stage store it), read directly (importing MLflow costs seconds);
    (None, False) otherwise."""
    import sqlite3

    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is None or not path.is_file():
        return None, False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
            row = db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None, False
            view = db.execute(
                "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                (row[0], f"mlflow.sharedViewState.{STUDY_VIEW_KEY}"),
            ).fetchone()
    except sqlite3.Error:
        return None, False
    return str(row[0]), view is not None


@app.command()
def ui(
    host: Annotated[
        str, typer.Option(help="address to bind; loopback by default so the UI is not exposed")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="port (MLflow's usual 5000; another free one when it is taken); 0 picks any free one")
    ] = 5000,
    workers: Annotated[
        int,
        typer.Option(
            help="web server processes (MLflow's default of 4 takes ~30 s to answer on 2 cores, 1 about 8 s)", min=1
        ),
    ] = 1,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Start the MLflow UI on the study's tracking store; print its address, then the study's runs table
    once the server answers. From a subfolder it finds the repository root's params.yaml and store."""
    root = project_root()
    if not params_path.is_absolute() and not params_path.exists() and (root / params_path).exists():
        params_path = root / params_path
    params = load_params(params_path)
    uri = resolve_tracking_uri(params.tracking.uri, base=params_path.resolve().parent)
    port = _free_port(host, port)
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    typer.echo(f"MLflow UI for {uri} at http://{host}:{port}  (starting; Ctrl+C stops it)")
    sys.stdout.flush()  # the address must be visible before the server blocks
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        typer.echo(
            f"no tracking store at {uri.removeprefix('sqlite:///')} yet: `make repro` (or any stage) creates it, "
            f"`pipeline track --from-reports` fills it with the committed study; the UI starts empty"
        )
    # MLflow 3 also starts 8 job-runner processes (GenAI judges and evaluations, which a training study
    # does not use) that compete with the web server for 2 cores; a user's own setting still wins.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [mlflow_bin, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", str(workers)]
    experiment, has_view = _experiment_id(uri, params.tracking.experiment)
    # MLflow 3 opens an experiment in its GenAI view; the runs table of a training study is the
    # machine-learning one, and the study view shows the training runs with their scores as columns.
    page = f"#/experiments/{experiment}/runs?workflowType=machine_learning" if experiment else ""
    if experiment and has_view:
        page += f"&viewStateShareKey={STUDY_VIEW_KEY}"
    raise typer.Exit(_serve(cmd, env, ready=(f"http://{host}:{port}/health", f"http://{host}:{port}/{page}")))


def _announce_when_ready(proc: subprocess.Popen, health: str, address: str, timeout_s: float = 180.0) -> None:
    """Print `address` once `health` answers (the server prints its address long before it serves)."""
    import urllib.request

    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(health, timeout=2):
                typer.echo(f"ready after {time.monotonic() - start:.0f} s: {address}")
                sys.stdout.flush()
                return
        except OSError:
            time.sleep(0.5)


def _serve(cmd: list[str], env: dict[str, str], grace_s: float = 10.0, ready: tuple[str, str] | None = None) -> int:
    """Run the server `cmd` until it ends; SIGTERM, SIGINT or SIGHUP to this process stop it and its workers.

    `mlflow ui` starts its web server as a child process of its own, and neither subprocess.call nor
    the mlflow command passes a SIGTERM on: killing this command by PID left the server listening. So the
    server runs in a process group of its own, every such signal goes to the whole group, and whatever
    is left of the group `grace_s` after the server ends is killed."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in stop_signals}
    try:
        if ready is not None:
            _announce_when_ready(proc, *ready)
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _reap_group(proc.pid, grace_s)
    return 128 - code if code < 0 else code


def _reap_group(pgid: int, grace_s: float) -> None:
    """SIGTERM what is left of process group `pgid`, then SIGKILL it after `grace_s` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)


@app.command()
def track(
    pending: Annotated[
        bool,
        typer.Option(
            "--pending",
            help="log the runs that stages kept in mlruns.pending/ when MLflow "
            "was unreachable, then delete those records",
        ),
    ] = False,
    from_reports: Annotated[
        bool,
        typer.Option(
            "--from-reports",
            help="fill the store from the committed reports/ (a fresh clone's store is empty): a train/<row> "
            "run per scored row with its spec, headline scores, table tag and samples, and the study run",
        ),
    ] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Log to MLflow what stages could not: with --pending, the runs kept in mlruns.pending/ while the
    tracking store was unreachable, to the store params.yaml (or MLFLOW_TRACKING_URI) names now; with
    --from-reports, the committed study, so `pipeline ui` shows it without re-running anything."""
    from pipeline.tracking import PENDING_DIR, log_from_reports, log_pending

    if not pending and not from_reports:
        raise ConfigError(
            "`pipeline track` needs --pending (log the runs kept in mlruns.pending/) or --from-reports "
            "(fill the store from the committed reports/)"
        )
    uri = resolve_tracking_uri(load_params(params_path).tracking.uri)
    problems: list[str] = []
    if from_reports:
        from pipeline.config import with_seed_rows

        # The seed repeats' reports are committed beside the plain profile's: log them as rows too.
        params = parse_params(with_seed_rows(yaml.safe_load(params_path.read_text())), str(params_path))
        try:
            logged, missing = log_from_reports(params, Path("."), uri)
        except RuntimeError as err:
            logged, missing, problems = [], [], [str(err)]
        for name in logged:
            typer.echo(f"logged {name} from reports/ to {uri}")
        plain = [row for row in missing if params.row(row).seed_of is None]
        if plain:
            typer.echo(f"no score file in reports/metrics/score/ for {', '.join(plain)}: not logged")
    if pending:
        logged, more = log_pending(uri, PENDING_DIR)
        problems += more
        for name in logged:
            typer.echo(f"logged {name} to {uri}")
        if not logged and not more:
            typer.echo(f"no pending runs in {PENDING_DIR}/")
    for problem in problems:
        typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)
    if problems:
        raise typer.Exit(1)


def _known_errors() -> tuple[type[Exception], ...]:
    from pipeline.analysis.projection import ProjectionsError
    from pipeline.data.dataset import PreparedDataError
    from pipeline.metrics.scoring import MetricsInputError
    from pipeline.models.released import ReleasedPickleError
    from pipeline.train.checkpoint import CheckpointError
    from pipeline.train.loop import TrainingInputError
    from pipeline.train.trainer import TrainingDiverged

    # FileNotFoundError covers the missing-weights errors (Inception, FAN, VGG), which name file, URL and folder.
    return (
        ConfigError,
        PrepareError,
        SourceError,
        FileNotFoundError,
        TrainingInputError,
        CheckpointError,
        TrainingDiverged,
        MetricsInputError,
        NoSpaceLeft,
        PreparedDataError,
        ProjectionsError,
        ReleasedPickleError,
    )


def main() -> None:
    """Console-script entry: known errors print one clear message and exit non-zero, no traceback."""
    try:
        app()
    except (
        Exception
    ) as err:  # not `except _known_errors()`: typer's normal SystemExit would evaluate it and import torch
        if not isinstance(err, _known_errors()):
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
