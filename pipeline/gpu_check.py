"""GPU readiness in one command: CUDA generator benchmarks of the paper profile's Table 2 rows, into one JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.io import write_json

PAPER_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml"


class NoCuda(RuntimeError):
    """The machine has no usable CUDA device; the message says what torch reports."""


def cuda_device_name() -> str:
    """The name of CUDA device 0, or NoCuda saying why there is none."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        raise NoCuda(
            f"gpu-check needs CUDA, but torch.cuda.is_available() is False on this machine (torch {torch.__version__}, "
            f"CUDA build {built}); run it on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    return torch.cuda.get_device_name(0)


def run_gpu_check(out: Path, params: Path = PAPER_PROFILE) -> dict:
    """`pipeline bench` of the paper profile's bench rows at its size and batch in fp32 and bf16 on CUDA,
    each as a subprocess (one failing dtype does not hide the other), written to `out` with the device name."""
    report: dict = {"device": cuda_device_name(), "bench": {}}
    for dtype in ("fp32", "bf16"):
        cmd = [sys.executable, "-m", "pipeline", "bench", "--device", "cuda", "--dtype", dtype, "--json"]
        res = subprocess.run([*cmd, "--params", str(params)], capture_output=True, text=True)
        report["bench"][dtype] = (
            json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr.strip()[-2000:]}
        )
    write_json(out, report)
    return report
