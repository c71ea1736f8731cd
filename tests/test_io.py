"""Atomic writes: a failure mid-write leaves the previous output untouched and no temp files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io import atomic_dir, atomic_file, load_versioned_torch, save_torch, write_json


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
