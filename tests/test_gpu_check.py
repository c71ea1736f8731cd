"""`pipeline gpu-check` on a CPU machine: its plan, its time budget, its JSON, and the exit 2 without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import gpu_check as gc

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "profiles" / "paper.yaml"


def test_without_cuda_it_says_so_and_exits_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "gpu-check", "--out", str(out)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2, proc.stderr
    assert "needs a CUDA device" in proc.stderr and "torch.cuda.is_available() is False" in proc.stderr
    assert not out.exists()


def test_plan_covers_the_issue_and_names_rows_of_the_paper_profile():
    checks = gc.plan(PAPER, device_count=1, python="py")
    names = [c.name for c in checks]
    assert names[0] == "cuda_tests" and {"bench_fp32", "bench_bf16"} <= set(names)
    assert {f"train_{r}_{p}" for r in gc.TRAIN_ROWS for p in ("off", "bf16", "fp16")} <= set(names)
    assert "nccl_2proc" not in names and "nccl_2proc" in [c.name for c in gc.plan(PAPER, 2, "py")]
    bench = next(c for c in checks if c.name == "bench_bf16").argv
    assert bench[bench.index("--batch") + 1] == "50" and bench[bench.index("--resolution") + 1] == "256"
    rows = yaml.safe_load(PAPER.read_text())["rows"]
    assert all(r in rows and rows[r]["generator"]["resolution"] == 256 for r in gc.TRAIN_ROWS)
    # the planned time limits fit the 8-minute bound with a margin for the slowest case of each
    assert sum(c.timeout_s for c in gc.plan(PAPER, 2, "py")) <= 1.5 * gc.TOTAL_BUDGET_S


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_checks_past_the_budget_are_skipped_and_failures_recorded():
    clock = FakeClock()
    checks = [
        gc.Check("a", ("x", "-m", "a"), 100),
        gc.Check("b", ("x", "-m", "b"), 100, parse_json=False),
        gc.Check("c", ("x", "-m", "c"), 100),
    ]

    def runner(check):
        clock.t += 150 if check.name == "a" else 10
        return (0, '{"img_per_s": 3.5}', "") if check.name == "a" else (1, "", "boom\nTraceback: bad")

    records = gc.run_checks(checks, runner=runner, budget_s=300, clock=clock, echo=lambda _: None)
    assert records[0]["status"] == "ok" and records[0]["result"] == {"img_per_s": 3.5}
    assert records[0]["command"] == "a" and records[0]["seconds"] == 150
    assert records[1]["status"] == "failed" and records[1]["stderr_tail"][-1] == "Traceback: bad"
    # 160 s used: a 100 s check would end past 300 s only if it started after 200 s, so c still runs
    assert records[2]["status"] == "failed"
    clock.t = 0
    late = gc.run_checks(checks, runner=runner, budget_s=240, clock=clock, echo=lambda _: None)
    assert [r["status"] for r in late] == ["ok", "skipped", "skipped"]


def test_torchrun_output_is_read_from_its_json_line():
    check = gc.Check("nccl", ("x",), 10)
    assert gc._parse(check, 'W1202 launcher noise\n{"world_size": 2, "allreduce_correct": true}\n') == {
        "world_size": 2,
        "allreduce_correct": True,
    }


def test_report_is_one_json_with_the_device(monkeypatch, tmp_path):
    monkeypatch.setattr(gc, "device_info", lambda: {"device": "Fake H200", "device_count": 1})
    out = tmp_path / "r" / "gpu.json"
    report = gc.gpu_check(PAPER, out, echo=lambda _: None, runner=lambda c: (0, "{}", ""))
    data = json.loads(out.read_text())
    assert data == report and data["device"] == "Fake H200" and len(data["checks"]) >= 9


def test_bench_train_takes_a_mixed_precision_and_refuses_bf16_on_the_cpu(project):
    ok = subprocess.run(
        [sys.executable, "-m", "pipeline", "bench-train", "--row", "inr_gan", "--steps", "1", "--warmup", "0"]
        + ["--mixed-precision", "off", "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mixed_precision"] == "off"
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "bench-train", "--row", "inr_gan", "--mixed-precision", "bf16"]
        + ["--device", "cpu", "--steps", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "needs a CUDA device" in bad.stderr
