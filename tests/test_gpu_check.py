"""`pipeline gpu-check` on a machine without CUDA: a clear message and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_says_it_needs_cuda_and_exits_2_on_a_cpu_machine(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "gpu-check", "--out", str(tmp_path / "g.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "gpu-check needs CUDA" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "g.json").exists()
