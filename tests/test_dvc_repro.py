"""`dvc repro` end to end on the micro profile: runs, is a no-op the second time, re-runs only what changed."""

from __future__ import annotations

import os
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
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def test_dvc_repro_micro(tmp_path: Path) -> None:
    for item in ("pipeline", "stages", "dvc.yaml", ".dvc", ".dvcignore", ".gitignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    shutil.rmtree(tmp_path / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(tmp_path / ".dvc" / "tmp", ignore_errors=True)
    shutil.copy(REPO / "profiles" / "micro.yaml", tmp_path / "params.yaml")
    _run(["git", "init", "-q"], tmp_path)
    datasets = sorted(yaml.safe_load((tmp_path / "params.yaml").read_text())["prepare"]["datasets"])

    out = _run(["dvc", "repro"], tmp_path)
    for name in datasets:
        assert f"prepare@{name}" in out
        assert (tmp_path / paths.prepared_dir(name) / "images.npy").exists()
        assert (tmp_path / paths.prepare_preview(name)).exists()

    again = _run(["dvc", "repro"], tmp_path)
    assert "Running stage" not in again

    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    data["prepare"]["datasets"][datasets[0]]["seed"] += 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    changed = _run(["dvc", "repro"], tmp_path)
    assert f"Running stage 'prepare@{datasets[0]}'" in changed
    assert f"Running stage 'prepare@{datasets[1]}'" not in changed
