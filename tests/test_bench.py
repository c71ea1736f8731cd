"""`pipeline bench` and `pipeline bench-train`: JSON records, and which spec a row is benchmarked with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ConfigError, load_params
from stages.bench import spec_for

runner = CliRunner()


def test_bench_json_records(project: Path) -> None:
    res = runner.invoke(app, ["bench", "--rows", "inr_gan,stylegan2", "--resolution", "32", "--batch", "2", "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout[res.stdout.index("[") :])
    assert [r["row"] for r in records] == ["inr_gan", "stylegan2"]
    for r in records:
        assert {"row", "resolution", "batch", "device", "img_per_s", "peak_mem_mb"} <= set(r)
        assert r["resolution"] == 32 and r["batch"] == 2 and r["device"] == "cpu" and r["img_per_s"] > 0


def test_bench_uses_paper_size_specs_where_they_exist(project: Path) -> None:
    params = load_params("params.yaml")
    assert spec_for(params, "inr_gan", 256) == params.macs.rows["inr_gan"][256]  # paper size
    assert spec_for(params, "inr_gan", 32) == params.rows["inr_gan"].generator  # the profile's toy row
    with pytest.raises(ConfigError, match="row 'inr_gan' has no generator at 64 px"):
        spec_for(params, "inr_gan", 64)


def test_bench_train_reports_images_per_second(project: Path) -> None:
    res = runner.invoke(
        app, ["bench-train", "--row", "inr_gan", "--batch", "2", "--steps", "2", "--warmup", "1", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["row"] == "inr_gan" and record["images_per_s"] > 0 and record["batch"] == 2


def test_paper_profile_benches_every_table2_generator_at_256() -> None:
    from pipeline.paper_numbers import TABLE2_LABELS, paper_row

    params = load_params(Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml")
    specs = [spec_for(params, row, params.bench.resolution) for row in params.bench.rows]
    assert all(s.resolution == 256 for s in specs)
    assert {paper_row(s, "table2") for s in specs} == set(TABLE2_LABELS)


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench", "--dtype", "fp16"], "--dtype: Input should be 'fp32' or 'bf16' (got 'fp16')"),
        (["bench", "--batch", "-1"], "--batch: Input should be greater than 0 (got -1)"),
        (["bench-train", "--row", "inr_gan", "--steps", "0"], "--steps must be at least 1, got 0"),
        (["bench-train", "--row", "inr_gan", "--batch", "0"], "--batch must be at least 1, got 0"),
        (["train", "--row", "inr_gan", "--nproc", "0"], "--nproc must be at least 1"),
    ],
)
def test_bad_command_line_values_are_one_line_errors(project: Path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    from pipeline.devices import resolve_device_flag as resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA device is available here"):
        resolve_device("cuda", "pipeline bench")
