"""`dvc repro` end to end on the micro profile: every stage runs, a second run is a no-op, and a
changed parameter re-runs only the stages that read it (checked with `dvc repro --dry`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages import paths

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


def _would_run(cwd: Path, edit) -> set[str]:
    params = cwd / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    edit(data)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        return set(re.findall(r"Running stage '([^']+)'", _run(["dvc", "repro", "--dry"], cwd)))
    finally:
        params.write_text(original)


def test_dvc_repro_micro(tmp_path: Path) -> None:
    for item in ("pipeline", "stages", "dvc.yaml", ".dvc", ".dvcignore", ".gitignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    shutil.rmtree(tmp_path / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(tmp_path / ".dvc" / "tmp", ignore_errors=True)
    shutil.copy(REPO / "profiles" / "micro.yaml", tmp_path / "params.yaml")
    _run(["git", "init", "-q"], tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    datasets, rows = sorted(params["prepare"]["datasets"]), sorted(params["rows"])

    out = _run(["dvc", "repro"], tmp_path)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    expected = (
        {f"prepare@{d}" for d in datasets}
        | {f"reference@{d}" for d in datasets}
        | {"macs", "keypoints", "kpl", "tables"}
    )
    expected |= {f"{stage}@{r}" for r in rows for stage in ("train", "score", "project")}
    expected |= {f"properties@{r}" for r in params["properties"]["rows"]}
    assert ran == expected
    for r in params["properties"]["rows"]:
        assert (tmp_path / paths.properties_dir(r) / "extrapolation.png").exists() and (
            tmp_path / paths.properties_metrics(r)
        ).exists()
    for name in datasets:
        assert (tmp_path / paths.prepared_dir(name) / "images.npy").exists()
        assert (tmp_path / paths.prepare_preview(name)).exists()
    for row in rows:
        assert (tmp_path / paths.run_dir(row) / "network-snapshot.pt").exists()
        assert (tmp_path / "reports" / "metrics" / "score" / f"{row}.json").exists()
    assert (tmp_path / paths.TABLE1_COST_MD).exists() and (tmp_path / "reports" / "tables" / "table3_kpl.md").exists()

    assert "Running stage" not in _run(["dvc", "repro"], tmp_path)

    # Re-running stages unchanged leaves every DVC metric as it was: timings, hashes and paths are in the
    # details files (pipeline/headline.py), which are plain outputs.
    before = _run(["dvc", "metrics", "show", "--json"], tmp_path)
    # Their outputs are byte-equal too (reference's domain network file records no training time), so the
    # --dry checks below still see only what a parameter change touches.
    forced = ["prepare@faces32_test", "reference@faces32_test", "macs", f"score@{rows[0]}", f"project@{rows[0]}"]
    for stage in forced:
        _run(["dvc", "repro", "--force", "--single-item", stage], tmp_path)
    assert _run(["dvc", "metrics", "show", "--json"], tmp_path) == before
    assert (tmp_path / paths.details(paths.score_metrics(rows[0]))).is_file()

    def reseed_test_faces(p: dict) -> None:
        p["prepare"]["datasets"]["faces32_test"]["seed"] += 1

    # --dry lists the stages whose own params or deps changed (downstream ones re-run once the new
    # outputs exist): exactly the one dataset here, and the one row's train and score below.
    assert _would_run(tmp_path, reseed_test_faces) == {"prepare@faces32_test"}

    def change_stylegan2(p: dict) -> None:
        p["rows"]["stylegan2"]["train"] = {"r1_gamma": 0.5}

    # tables reads every row's settings (to map rows to the paper's), so it is directly affected too.
    assert _would_run(tmp_path, change_stylegan2) == {"train@stylegan2", "score@stylegan2", "tables"}
