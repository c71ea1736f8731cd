"""GPU readiness in one command: CUDA-only tests, paper-size throughput in fp32/bf16/fp16 and NCCL, as one JSON.

The CUDA paths (autocast, GradScaler, pinned loading, NCCL) cannot run on the CPU machines this project is
developed on, so `pipeline gpu-check` gathers every check that needs a GPU into one bounded run (8 minutes
on one GPU) whose JSON, named by device, goes into docs/benchmarks.md. Each check is a separate process
with its own time limit, so one hang or crash is recorded and the rest still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import write_text

# The bound for the whole run on one GPU; a check that would start after it is recorded as skipped.
TOTAL_BUDGET_S = 480.0
# Table 2's generators as the authors' release measured them: batch 50 at 256 px.
BENCH_BATCH = 50
BENCH_RESOLUTION = 256
# Paper-size training rows of the paper profile (256 px, LSUN Church): INR-GAN and its StyleGAN2 baseline.
TRAIN_ROWS = ("inr_gan_church256", "stylegan2_church256")
TRAIN_PRECISIONS = ("off", "bf16", "fp16")


class NeedsCuda(RuntimeError):
    """Raised when gpu-check is started where torch sees no CUDA device."""


@dataclass(frozen=True)
class Check:
    """One check: a command line, its time limit, and how to read its result from stdout."""

    name: str
    argv: tuple[str, ...]
    timeout_s: float
    parse_json: bool = True
    env: dict[str, str] = field(default_factory=dict)


def plan(params_path: Path, device_count: int, python: str = sys.executable) -> list[Check]:
    """The checks in the order they run; NCCL only with 2 or more GPUs."""
    cli = (python, "-m", "pipeline")
    params = ("--params", str(params_path))
    checks = [
        Check("cuda_tests", (python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:xdist", "tests"), 120, False),
    ]
    for dtype in ("fp32", "bf16"):
        checks.append(
            Check(
                f"bench_{dtype}",
                (
                    *cli,
                    "bench",
                    "--resolution",
                    str(BENCH_RESOLUTION),
                    "--batch",
                    str(BENCH_BATCH),
                    "--device",
                    "cuda",
                    "--dtype",
                    dtype,
                    "--json",
                    *params,
                ),
                90,
            )
        )
    for row in TRAIN_ROWS:
        for precision in TRAIN_PRECISIONS:
            checks.append(
                Check(
                    f"train_{row}_{precision}",
                    (
                        *cli,
                        "bench-train",
                        "--row",
                        row,
                        "--mixed-precision",
                        precision,
                        "--steps",
                        "10",
                        "--warmup",
                        "3",
                        "--device",
                        "cuda",
                        *params,
                    ),
                    45,
                )
            )
    if device_count >= 2:
        checks.append(
            Check(
                "nccl_2proc",
                (python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
                + ("-m", "pipeline.gpu_check", "nccl-probe"),
                60,
            )
        )
    return checks


Runner = Callable[[Check], tuple[int, str, str]]


def run_subprocess(check: Check) -> tuple[int, str, str]:
    """Run one check; a time-out is exit status 124, as coreutils' timeout reports it."""
    try:
        proc = subprocess.run(
            check.argv,
            capture_output=True,
            text=True,
            timeout=check.timeout_s,
            env={**os.environ, **check.env},
        )
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return 124, out, f"timed out after {check.timeout_s:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr


def _parse(check: Check, stdout: str) -> Any:
    if not check.parse_json:
        lines = [line for line in stdout.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        # torchrun's probe prints one JSON line among launcher output
        for line in reversed(stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return None


def run_checks(
    checks: Sequence[Check],
    runner: Runner = run_subprocess,
    budget_s: float = TOTAL_BUDGET_S,
    clock: Callable[[], float] = time.monotonic,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run `checks` in order within `budget_s`; each record says ok/failed/skipped, its time and its result."""
    start = clock()
    records = []
    for check in checks:
        elapsed = clock() - start
        if elapsed + check.timeout_s > budget_s:
            records.append({"name": check.name, "status": "skipped", "reason": f"time budget ({budget_s:.0f} s)"})
            echo(f"gpu-check: {check.name}: skipped (would pass the {budget_s:.0f} s budget)")
            continue
        echo(f"gpu-check: {check.name} ...")
        t0 = clock()
        rc, out, err = runner(check)
        record: dict[str, Any] = {
            "name": check.name,
            "command": " ".join(check.argv[2:] if check.argv[1:2] == ("-m",) else check.argv),
            "status": "ok" if rc == 0 else "failed",
            "returncode": rc,
            "seconds": round(clock() - t0, 2),
        }
        if rc == 0:
            record["result"] = _parse(check, out)
        else:
            record["stderr_tail"] = err.strip().splitlines()[-15:]
        records.append(record)
        echo(f"gpu-check: {check.name}: {record['status']} in {record['seconds']} s")
    return records


def device_info() -> dict[str, Any]:
    """Name and count of the CUDA devices and the software versions; NeedsCuda where there is none."""
    import torch

    if not torch.cuda.is_available():
        raise NeedsCuda(
            f"gpu-check needs a CUDA device, but torch {torch.__version__} sees none "
            f"(torch.cuda.is_available() is False, CUDA build: {torch.version.cuda}). "
            "Run it on a GPU machine, e.g. `make gpu-check` there."
        )
    return {
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported(),
    }


def gpu_check(
    params_path: Path, out: Path, echo: Callable[[str], None] = print, runner: Runner = run_subprocess
) -> dict:
    """Run every GPU check and write one JSON (written whole or not at all) to `out`."""
    info = device_info()
    records = run_checks(plan(params_path, info["device_count"]), runner=runner, echo=echo)
    report = {**info, "params": str(params_path), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    report["checks"] = records
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(report, indent=2) + "\n")
    return report


def nccl_probe() -> dict[str, Any]:
    """Under torchrun: an all-reduce over NCCL checked against its closed form, and its bus bandwidth."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl")
    try:
        x = torch.full((1024,), float(rank + 1), device="cuda")
        dist.all_reduce(x)
        expected = world * (world + 1) / 2  # 1 + 2 + ... + world
        correct = bool(torch.all(x == expected).item())
        big = torch.ones(64 * 2**20, device="cuda")  # 256 MiB of fp32
        for _ in range(2):
            dist.all_reduce(big)
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            dist.all_reduce(big)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds = sorted(times)[len(times) // 2]
        # ring all-reduce moves 2 (n - 1) / n of the buffer per rank (NCCL's "bus bandwidth")
        busbw = big.numel() * 4 * 2 * (world - 1) / world / seconds / 1e9
        return {"world_size": world, "allreduce_correct": correct, "busbw_gb_s": round(busbw, 1)}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # `python -m pipeline.gpu_check nccl-probe`, started by torchrun
    if sys.argv[1:] != ["nccl-probe"]:
        sys.exit("usage: torchrun --nproc_per_node N -m pipeline.gpu_check nccl-probe")
    result = nccl_probe()
    if int(os.environ["RANK"]) == 0:
        print(json.dumps(result))
