"""Atomic writes: a failure mid-write leaves the previous output untouched and no temp files behind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.io import (
    NoSpaceLeft,
    atomic_dir,
    atomic_file,
    load_versioned_torch,
    no_space_as_error,
    remove_stale_temporaries,
    save_torch,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]


def test_atomic_file_keeps_old_content_on_error(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_dir_replaces_whole_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("1")
    with atomic_dir(out) as tmp:
        assert not out.joinpath("new.txt").exists()  # invisible until the end
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    with pytest.raises(KeyError):
        with atomic_dir(out) as tmp:
            (tmp / "partial.txt").write_text("3")
            raise KeyError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_gets_umask_permissions(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_versioned_torch_file_round_trip_and_refusals(tmp_path):
    import torch

    path = tmp_path / "net.pt"
    save_torch(path, {"format": 3, "w": torch.arange(4)})
    assert torch.equal(load_versioned_torch(path, 3, "test net", "make it", "remake it")["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"is not a test net of format 4; remake it"):
        load_versioned_torch(path, 4, "test net", "make it", "remake it")
    with pytest.raises(FileNotFoundError, match=r"test net '.*absent.pt' does not exist; make it"):
        load_versioned_torch(tmp_path / "absent.pt", 3, "test net", "make it", "remake it")


def test_save_torch_gives_equal_bytes_for_equal_payloads(tmp_path):
    import torch

    # torch.save given a path names the zip records after the (random) temporary file.
    save_torch(tmp_path / "a.pt", {"format": 1, "w": torch.arange(6.0)})
    save_torch(tmp_path / "b.pt", {"format": 1, "w": torch.arange(6.0)})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_gone_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getppid()
    names = {
        "dead": f".m.json.{dead}-abcd_123.tmp.json",
        "live": f".m.json.{live}-abcd_123.tmp.json",  # a run beside this one, still writing
        "legacy_old": ".m.json.k3j4h5g6.tmp.json",  # the earlier naming, from before this process
        "other_output": f".n.json.{dead}-abcd_123.tmp.json",  # not a temporary of m.json
    }
    for name in names.values():
        (tmp_path / name).write_text("")
    os.utime(tmp_path / names["legacy_old"], (time.time() - 3600, time.time() - 3600))
    write_json(tmp_path / "m.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.json", names["live"], names["other_output"]])


def test_a_prepared_folder_killed_between_the_two_renames_is_recovered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("old")
    # SIGKILL right after the old folder was moved aside: the output exists under neither name.
    code = textwrap.dedent("""
        import os, signal, sys
        from pipeline import io
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if str(dst).endswith("/x"):
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
        with io.atomic_dir(sys.argv[1]) as tmp:
            (tmp / "v").write_text("new")
    """)
    res = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO)
    assert res.returncode == -signal.SIGKILL and not out.exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".out.")]) == 2  # the .old and the .tmp
    assert remove_stale_temporaries(out)
    assert (out / "v").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_clears_leftovers_of_a_killed_run_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    partial = tmp_path / f".out.{_dead_pid()}-zzzz_000.tmp"
    partial.mkdir()
    (partial / "images.npy").write_bytes(b"\0" * 1000)
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _raise_like_torch_on_a_full_disk(*args, **kwargs):
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


def test_a_full_disk_under_torch_save_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "save", _raise_like_torch_on_a_full_disk)
    with pytest.raises(NoSpaceLeft, match=rf"^no space left on {tmp_path}: writing '{tmp_path / 'net.pt'}'"):
        save_torch(tmp_path / "net.pt", {"w": torch.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_torch_write_on_a_nearly_full_disk_is_named(tmp_path, monkeypatch):
    # torch.save given a path hides the OSError; the free space left tells a full disk apart.
    err = RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
    )
    with pytest.raises(RuntimeError, match="enforce fail"):  # plenty of space: some other failure, passed on
        with no_space_as_error(tmp_path / "c.pt"):
            raise err
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
    with pytest.raises(NoSpaceLeft, match="no space left on"):
        with no_space_as_error(tmp_path / "c.pt"):
            raise err


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (needs root; skipped elsewhere, where the simulated tests above still run)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_torch_save_on_a_really_full_disk(full_disk):
    import torch

    with pytest.raises(NoSpaceLeft, match=f"no space left on {full_disk}"):
        save_torch(full_disk / "net.pt", {"w": torch.zeros(1 << 20)})
    assert list(full_disk.iterdir()) == []


def test_state_dict_sha256_names_the_weights_not_their_file() -> None:
    import torch

    from pipeline.io import state_dict_sha256

    base = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}
    digest = state_dict_sha256(base)
    assert len(digest) == 64
    assert state_dict_sha256({k: v.clone() for k, v in reversed(base.items())}) == digest  # order of insertion
    changed = {
        "value": {**base, "a.bias": torch.tensor([0.0, 1e-6])},
        "dtype": {**base, "a.bias": torch.zeros(2, dtype=torch.float64)},
        "shape": {**base, "a.weight": torch.arange(6.0).reshape(3, 2)},
        "name": {"b.weight": base["a.weight"], "a.bias": base["a.bias"]},
    }
    for what, state in changed.items():
        assert state_dict_sha256(state) != digest, what
    assert state_dict_sha256({"w": torch.arange(6.0).reshape(2, 3).t()}) == state_dict_sha256(
        {"w": torch.arange(6.0).reshape(2, 3).t().contiguous()}
    )  # a strided view hashes as its values
    with pytest.raises(TypeError, match="'step' is a int"):
        state_dict_sha256({"step": 3})
