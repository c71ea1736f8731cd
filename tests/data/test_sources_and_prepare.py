"""Raw readers (folder, zip, LSUN lmdb, LSUN-10) and preparation, on tiny fixtures built here."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from pipeline.config import DatasetConfig
from pipeline.data.prepare import PrepareError, crop_and_resize, prepare_dataset
from pipeline.data.sources import FolderSource, LSUN10Source, LSUNSource, SourceError, ZipSource


def _encoded(color: tuple[int, int, int], size=(40, 30), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _folder(root: Path, classes: dict[str, int], corrupt: int = 0) -> Path:
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i:03d}.png").write_bytes(_encoded((40 * c, 10 * i, 200)))
    for i in range(corrupt):
        (root / next(iter(classes)) / f"bad{i}.jpg").write_bytes(b"not an image at all")
    (root / "README.txt").write_text("ignored: not an image")
    return root


def _lsun(path: Path, n: int, seed: int, corrupt: int = 0) -> Path:
    env = lmdb.open(str(path), map_size=1 << 24)
    rng = np.random.default_rng(seed)
    with env.begin(write=True) as txn:
        for i in range(n):
            color = tuple(int(v) for v in rng.integers(0, 255, 3))
            txn.put(f"{seed:02d}{i:038x}".encode(), _encoded(color, (48, 36), "WEBP"))
        for i in range(corrupt):
            txn.put(f"ff{i:038x}".encode(), b"\x00" * 50)
    env.close()
    return path


def test_crop_and_resize_centre_crops_the_short_side() -> None:
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (10, 0, 20, 10))  # the white centre square survives the crop
    out = crop_and_resize(img, 8, "box")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out == 255).all()


def test_folder_source_labels_from_subfolders(tmp_path: Path) -> None:
    src = FolderSource(_folder(tmp_path / "imgs", {"cat": 2, "dog": 3}), labels_from_subfolders=True)
    items = list(src)
    assert len(src) == 5 and src.class_names == ["cat", "dog"]
    assert [i.label for i in items] == [0, 0, 1, 1, 1]
    assert items[0].name == "cat/000.png"
    assert len(FolderSource(tmp_path / "imgs", limit=2)) == 2


def test_zip_source_matches_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(root.rglob("*")):
            zf.write(p, p.relative_to(root).as_posix())
    zs, fs = ZipSource(zpath, True), FolderSource(root, True)
    assert [(r.name, r.data, r.label) for r in zs] == [(r.name, r.data, r.label) for r in fs]


def test_lsun_and_lsun10_sources(tmp_path: Path) -> None:
    a, b = _lsun(tmp_path / "bedroom_train_lmdb", 5, 1), _lsun(tmp_path / "church_train_lmdb", 4, 2)
    assert len(LSUNSource(a)) == 5 and len(LSUNSource(a, limit=3)) == 3
    ten = LSUN10Source({"bedroom": a, "church": b}, per_category=3)
    items = list(ten)
    assert len(ten) == 6 and [i.label for i in items] == [0, 0, 0, 1, 1, 1]
    assert ten.class_names == ["bedroom", "church"]
    assert Image.open(io.BytesIO(items[0].data)).format == "WEBP"


def test_missing_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "none")
    with pytest.raises(SourceError, match="does not exist"):
        ZipSource(tmp_path / "none.zip")
    with pytest.raises(SourceError, match="does not exist"):
        LSUNSource(tmp_path / "none_lmdb")
    (tmp_path / "fake.zip").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="not a readable zip"):
        ZipSource(tmp_path / "fake.zip")


def test_prepare_folder_skips_and_names_corrupt_files(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 30, "b": 20}, corrupt=1)
    cfg = DatasetConfig(source="folder", path=root, labels="subfolders", resolution=16, max_bad_fraction=0.05)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*a/bad0.jpg"):
        stats = prepare_dataset(cfg, tmp_path / "out", chunk_size=7)
    images = np.load(tmp_path / "out" / "images.npy")
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert images.shape == (50, 16, 16, 3) and images.dtype == np.uint8
    assert (
        stats["num_bad"] == 1
        and stats["bad_names"] == ["a/bad0.jpg (not an image in a format Pillow reads)"]
        and stats["class_counts"] == [30, 20]
    )
    assert labels.tolist() == [0] * 30 + [1] * 20
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["filter"] == "box"
    assert not (tmp_path / "out" / "keypoints.npy").exists()


def test_prepare_lsun10_with_corrupt_records(tmp_path: Path) -> None:
    a = _lsun(tmp_path / "a_lmdb", 6, 1, corrupt=1)
    b = _lsun(tmp_path / "b_lmdb", 6, 2)
    cfg = DatasetConfig(
        source="lsun10", categories={"a": a, "b": b}, per_category=7, resolution=8, max_bad_fraction=0.2
    )
    with pytest.warns(UserWarning, match="skipped 1"):
        stats = prepare_dataset(cfg, tmp_path / "out")
    assert stats["num_images"] == 12 and stats["class_counts"] == [6, 6]


def test_too_many_bad_images_leave_no_output(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 5}, corrupt=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous good output")
    cfg = DatasetConfig(source="folder", path=root, resolution=16, max_bad_fraction=0.1)
    with pytest.raises(PrepareError, match=r"unreadable images among the first \d of 8.*max_bad_fraction=0.1"):
        prepare_dataset(cfg, out, chunk_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out"]  # no temp folders left
    assert (out / "old.txt").read_text() == "previous good output"


def test_nothing_readable_or_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="holds no images"):
        prepare_dataset(DatasetConfig(source="folder", path=empty, resolution=16), tmp_path / "o1")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"nope")
    with pytest.raises(PrepareError, match="unreadable|could be decoded"):
        prepare_dataset(
            DatasetConfig(source="folder", path=junk, resolution=16, max_bad_fraction=0.99), tmp_path / "o2"
        )
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_prepare_synthetic_faces_is_deterministic_and_has_keypoints(tmp_path: Path) -> None:
    cfg = DatasetConfig(source="synthetic_faces", resolution=32, num_images=40, seed=3)
    s1 = prepare_dataset(cfg, tmp_path / "a", chunk_size=16)
    prepare_dataset(cfg, tmp_path / "b", chunk_size=40)
    for f in ("images.npy", "labels.npy", "keypoints.npy"):
        assert np.array_equal(np.load(tmp_path / "a" / f), np.load(tmp_path / "b" / f)), f
    kp = np.load(tmp_path / "a" / "keypoints.npy")
    assert kp.shape == (40, len(s1["keypoint_names"]), 2) and kp.min() >= 0 and kp.max() <= 1
    assert len(s1["class_names"]) == s1["num_classes"] == len(s1["class_counts"])


def test_prepare_with_worker_processes_matches_serial(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 9})
    cfg = DatasetConfig(source="folder", path=root, resolution=16)
    prepare_dataset(cfg, tmp_path / "serial", chunk_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_dataset(cfg, tmp_path / "pool", chunk_size=4, workers=2)
    assert np.array_equal(np.load(tmp_path / "serial" / "images.npy"), np.load(tmp_path / "pool" / "images.npy"))


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    grey = np.array([[0, 257 * 100], [257 * 200, 65535]], np.uint16)
    assert Image.fromarray(grey).mode == "I;16"
    assert crop_and_resize(Image.fromarray(grey), 2, "box")[..., 0].tolist() == [[0, 100], [200, 255]]
    root = tmp_path / "imgs"
    root.mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(root / "ramp16.png")  # a 16-bit PNG
    prepare_dataset(DatasetConfig(source="folder", path=root, resolution=16), tmp_path / "out")
    images = np.load(tmp_path / "out" / "images.npy")
    assert abs(images.mean() - 127.5) < 2 and (images == 255).mean() < 0.05  # was 97% white


def test_images_without_an_8_bit_form_are_refused_by_name(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 3})
    Image.fromarray(np.random.default_rng(0).random((20, 20)).astype(np.float32)).save(root / "a" / "depth.tif")
    with pytest.raises(
        PrepareError, match=r"image 'a/depth.tif' has floating-point pixels \(mode F\).*convert it to 8-bit"
    ):
        prepare_dataset(DatasetConfig(source="folder", path=root, resolution=16), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_tiny_images_are_counted_and_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 3})
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "a" / "dot.png")
    cfg = DatasetConfig(source="folder", path=root, resolution=16)
    with pytest.warns(
        UserWarning, match=r"1 image\(s\) of 4 have a side under 1/4 of the resolution 16.*a/dot.png \(1 x 1\)"
    ):
        stats = prepare_dataset(cfg, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert stats["num_tiny"] == meta["num_tiny"] == 1 and meta["tiny_names"] == ["a/dot.png (1 x 1)"]


def test_preparing_the_same_data_again_gives_the_same_bytes(tmp_path: Path) -> None:
    # The prepared folder is a DVC dependency of every later stage: a timing in meta.json invalidated them all.
    cfg = DatasetConfig(source="synthetic_faces", resolution=32, num_images=20, seed=1)
    stats = prepare_dataset(cfg, tmp_path / "a")
    prepare_dataset(cfg, tmp_path / "b")
    for f in ("images.npy", "labels.npy", "keypoints.npy", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert stats["seconds"] >= 0 and "seconds" not in json.loads((tmp_path / "a" / "meta.json").read_text())


def test_a_disk_without_room_is_named_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from pipeline.io import NoSpaceLeft

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous good output")
    cfg = DatasetConfig(source="synthetic_faces", resolution=32, num_images=100, seed=1)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 100_000))
    with pytest.raises(
        NoSpaceLeft, match=rf"no space left on {tmp_path}: writing '{out}' needs 1\.3 MiB and 0\.1 MiB are free"
    ):
        prepare_dataset(cfg, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").exists()


def test_a_disk_that_fills_up_raises_instead_of_sigbus(tmp_path: Path, monkeypatch) -> None:
    import errno
    import os

    from pipeline.io import NoSpaceLeft

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(NoSpaceLeft, match=f"no space left on {tmp_path}"):
        prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=10, seed=1), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
