"""Failures an attack on the micro profile found (issue #15): pretrained weights that are not what their
name says, a prepare killed by SIGTERM, a disk without room for a prepared dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.analysis import WeightsError, locate_weights

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


def test_a_download_that_does_not_match_the_hash_in_its_name_is_discarded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    published = tmp_path / "published.pth"
    torch.save({"w": torch.zeros(2)}, published)
    with pytest.raises(WeightsError, match="downloading .* failed"):
        locate_weights("test net", "net-0123abcd.pth", published.as_uri(), allow_download=True)
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []


def test_weights_found_under_a_hashed_name_with_other_content_are_warned_about(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "net-0123abcd.pth"
    cached.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, cached)
    with pytest.warns(
        UserWarning, match=r"net-0123abcd.pth' have sha256 \w+\.\.\., not the 0123abcd\.\.\. their name promises"
    ):
        assert locate_weights("test net", "net-0123abcd.pth", "https://example.invalid/net-0123abcd.pth") == cached


def test_a_crafted_fan_file_is_refused_without_running_its_payload(tmp_path):
    from pipeline.analysis.keypoints import FANKeypoints

    marker = tmp_path / "payload-ran.txt"
    torch.save({"conv1.weight": _Payload(marker)}, tmp_path / "fan.pth")
    with pytest.raises(ValueError, match="not a FAN-4 state dict"):
        FANKeypoints(weights=tmp_path / "fan.pth")
    assert not marker.exists()


def test_a_crafted_face_detector_file_never_reaches_face_alignment(tmp_path):
    from pipeline.analysis.keypoints import FANKeypoints, build_fan

    torch.save(build_fan(4).state_dict(), tmp_path / "fan.pth")
    marker = tmp_path / "payload-ran.txt"
    torch.save({"conv1_1.weight": _Payload(marker)}, tmp_path / "s3fd.pth")
    with pytest.raises(
        ValueError, match="s3fd.pth' is not a usable S3FD face detector state dict.*refused without running"
    ):
        FANKeypoints(weights=tmp_path / "fan.pth", box="detect", detector_weights=tmp_path / "s3fd.pth")
    assert not marker.exists()


_SLOW_PREPARE = """
import sys, time
from pathlib import Path
import pipeline.data.synthetic_faces as faces
from pipeline.config import load_params
from stages import prepare as stage

render = faces.render_faces
def slow(*args, **kwargs):
    Path("started").touch()
    time.sleep(0.5)
    return render(*args, **kwargs)
faces.render_faces = slow
stage.run(load_params("params.yaml"), "faces32")
"""


def test_sigterm_to_prepare_removes_its_temporary_folder(project: Path) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
    }  # nothing listens: no MLflow run
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPARE], cwd=project, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not (project / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.1)
    prepared = project / "data" / "prepared"
    assert [p.name for p in prepared.iterdir() if p.name.startswith(".faces32.")]  # the temporary is there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(prepared.iterdir()) == []


def test_prepare_on_a_full_disk_says_so_with_exit_code_2(project: Path, monkeypatch, capsys) -> None:
    import shutil

    from pipeline import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1000))
    monkeypatch.setattr(sys, "argv", ["pipeline", "prepare", "--dataset", "faces32"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        "error: no space left on data/prepared: writing 'data/prepared/faces32' needs" in err and "Traceback" not in err
    )
    assert not (project / "data").exists() or not any((project / "data").rglob("*.npy"))


def test_prepare_on_a_really_full_disk(project: Path, monkeypatch) -> None:
    """A 1 MiB tmpfs as data/ (needs root; the simulated test above runs everywhere)."""
    data = project / "data"
    data.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], capture_output=True).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        (data / "filler").write_bytes(b"\0" * 700_000)  # faces32 needs ~0.4 MiB: the check passes only without this
        env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
        res = subprocess.run(
            [sys.executable, "-m", "pipeline", "prepare", "--dataset", "faces32"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 2, res.stderr
        assert "no space left on data/prepared" in res.stderr and "Traceback" not in res.stderr
        assert sorted(p.name for p in data.rglob("*")) == ["filler"]
        # Past the free-space check (as when the disk fills up meanwhile), the reservation fails: no SIGBUS.
        import pipeline.data.prepare as prepare
        from pipeline.io import NoSpaceLeft

        monkeypatch.setattr(prepare, "check_free_space", lambda path, need: None)
        with pytest.raises(NoSpaceLeft, match=f"no space left on {data / 'prepared'}"):
            prepare.prepare_dataset(
                prepare.DatasetConfig(source="synthetic_faces", resolution=32, num_images=200), data / "prepared" / "x"
            )
        assert sorted(p.name for p in data.rglob("*")) == ["filler", "prepared"]
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_reference_removes_what_a_killed_run_left_beside_its_outputs(project: Path) -> None:
    from pipeline.config import load_params
    from pipeline.metrics.scoring import MetricsInputError
    from stages import reference as stage

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is gone
    folder = project / "data" / "reference" / "faces32"
    folder.mkdir(parents=True)
    stale = folder / f".stats.npz.{proc.pid}-abcd_123.tmp.npz"
    stale.write_bytes(b"")
    with pytest.raises(
        MetricsInputError, match="prepare --dataset faces32"
    ):  # nothing prepared: fails after the clean-up
        stage.run(load_params("params.yaml"), "faces32")
    assert list(folder.iterdir()) == []
