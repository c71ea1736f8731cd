"""Preparation at paper scale (issue #12): bounded memory, statistics in the workers, the zip format,
class folders, Finder zips, SIGTERM, permissions, previews and dry runs, on small data built here."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import ConfigError, DatasetConfig
from pipeline.data import prepare as prep
from pipeline.data.dataset import PreparedDataset, ZipImages
from pipeline.data.prepare import describe_plan, prepare_dataset
from pipeline.data.preview import MAX_TILE, image_grid
from pipeline.data.sources import FolderSource, ZipSource

REPO = Path(__file__).resolve().parents[2]


def _png(seed: int, size=(40, 30)) -> bytes:
    # smooth random images: a photograph's statistics more than flat colours, and every pixel differs
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def _files(root: Path, names: list[str], size=(40, 30)) -> Path:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(i, size))
    return root


def _classes(root: Path, per_class: int = 6, size=(40, 30)) -> Path:
    return _files(root, [f"{c}/{i:03d}.png" for c in ("cat", "dog", "owl") for i in range(per_class)], size)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- item 1 and deliverable 3: bounded in-flight chunks, bounded memory ------------------------------------


def test_worker_processes_take_at_most_a_few_chunks_ahead_of_the_writer(tmp_path: Path, monkeypatch) -> None:
    root = _files(tmp_path / "imgs", [f"{i:03d}.png" for i in range(60)])
    read = {"n": 0}
    original = FolderSource._iter_all

    def counting(self):
        for raw in original(self):
            read["n"] += 1
            yield raw

    monkeypatch.setattr(FolderSource, "_iter_all", counting)
    ahead = []
    cfg = DatasetConfig(source="folder", path=root, resolution=16)
    prepare_dataset(
        cfg, tmp_path / "out", chunk_size=2, workers=2, progress=lambda done, n: ahead.append(read["n"] - done)
    )
    # Pool.imap reads its whole input at once: all 60 images would be read before the first one is written.
    bound = (prep.INFLIGHT_PER_WORKER * 2 + 1) * 2
    assert max(ahead) <= bound < 60, ahead


def test_peak_memory_is_a_few_chunks_whatever_the_dataset_size(tmp_path: Path) -> None:
    chunk, res = 8, 128
    root = _files(tmp_path / "imgs", [f"{i:03d}.png" for i in range(6 * chunk)], size=(160, 128))
    cfg = DatasetConfig(source="folder", path=root, resolution=res)
    chunk_bytes = chunk * res * res * 3
    tracemalloc.start()
    try:
        prepare_dataset(cfg, tmp_path / "out", chunk_size=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # float64 statistics of a chunk took 16 bytes per output byte on top of the chunk itself (~18 chunks)
    assert peak < 4 * chunk_bytes, f"peak {peak / chunk_bytes:.1f} chunks"


# --- item 4: statistics computed in the workers, merged exactly ---------------------------------------------


def test_statistics_come_from_the_workers_and_merge_exactly(tmp_path: Path, monkeypatch) -> None:
    root = _classes(tmp_path / "imgs", per_class=7)
    cfg = DatasetConfig(source="folder", path=root, resolution=16, labels="subfolders")
    serial = prepare_dataset(cfg, tmp_path / "serial", chunk_size=3)

    def not_here(images):
        raise AssertionError("statistics computed in the main process")

    # spawned workers import the module afresh, so only the main process sees this
    monkeypatch.setattr(prep, "channel_histogram", not_here)
    pooled = prepare_dataset(cfg, tmp_path / "pool", chunk_size=3, workers=2)
    images = np.load(tmp_path / "serial" / "images.npy").reshape(-1, 3).astype(np.float64)
    assert pooled["channel_mean"] == serial["channel_mean"] == [round(float(x), 4) for x in images.mean(0)]
    assert pooled["channel_std"] == serial["channel_std"] == [round(float(x), 4) for x in images.std(0)]


def test_channel_histogram_is_exact() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    hist = prep.channel_histogram(images)
    for c in range(3):
        assert np.array_equal(hist[c], np.bincount(images[..., c].ravel(), minlength=256))


# --- item 3: the class is the first folder under the root -------------------------------------------------


def test_class_is_the_first_folder_under_the_root(tmp_path: Path) -> None:
    names = [f"n0{c}/images/{i}.png" for c in range(3) for i in range(2)] + ["n01/extra/nested/9.png"]
    root = _files(tmp_path / "train", names)
    src = FolderSource(root, labels_from_subfolders=True)
    assert src.class_names == ["n00", "n01", "n02"]
    assert src.labels == [0, 0, 1, 1, 1, 2, 2]  # sorted paths: n01/extra/... before n01/images/...
    with pytest.raises(ValueError, match=r"lie directly in the root \(first: 'loose.png'\)"):
        FolderSource(_files(tmp_path / "flat", ["a/1.png", "loose.png"]), labels_from_subfolders=True)


# --- item 10: macOS Finder zips ----------------------------------------------------------------------------


def test_finder_zip_metadata_members_are_not_images(tmp_path: Path) -> None:
    path = tmp_path / "ffhq.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(4):
            zf.writestr(f"faces/{i}.png", _png(i))
            zf.writestr(f"__MACOSX/faces/._{i}.png", b"\x00\x05\x16\x07AppleDouble")
        zf.writestr("faces/._4.png", b"\x00\x05\x16\x07AppleDouble")
    assert ZipSource(path).members == [f"faces/{i}.png" for i in range(4)]
    stats = prepare_dataset(DatasetConfig(source="zip", path=path, resolution=16, max_bad_fraction=0.0), tmp_path / "o")
    assert stats["num_images"] == 4 and stats["num_bad"] == 0


# --- item 5: the dry run and the real run name every missing path --------------------------------------------


def _lsun(path: Path, n: int) -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(f"{i:040x}".encode(), _png(i))
    env.close()
    return path


def test_dry_run_plan_lists_every_missing_lsun10_path_with_counts_and_size(tmp_path: Path) -> None:
    cats = {
        "bedroom": _lsun(tmp_path / "bedroom_train_lmdb", 5),
        "bridge": tmp_path / "bridge_train_lmdb",
        "tower": tmp_path / "tower_train_lmdb",
    }
    cfg = DatasetConfig(source="lsun10", categories=cats, per_category=100_000, resolution=256, format="zip")
    plan = describe_plan(cfg)
    assert plan["missing_paths"] == [str(cats["bridge"]), str(cats["tower"])]
    assert plan["num_images"] == 5 + 100_000 + 100_000 and not plan["num_images_exact"]
    assert plan["output_bytes"] == plan["num_images"] * prep.estimated_bytes_per_image(cfg)
    with pytest.raises(ConfigError, match="2 paths do not exist: '.*bridge_train_lmdb', '.*tower_train_lmdb'"):
        cfg.check_sources_exist("lsun10_256")
    npy = describe_plan(DatasetConfig(source="lsun", path=cats["bedroom"], resolution=64))
    assert npy["num_images"] == 5 and npy["output_bytes"] == 5 * 64 * 64 * 3 and npy["output_bytes_exact"]


def test_dry_run_on_the_paper_profile_shows_every_path_count_and_size(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--dry-run", "--params", str(REPO / "profiles" / "paper.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for cat in ("bedroom", "bridge", "church_outdoor", "kitchen", "tower"):
        assert f"lsun10_256.categories.{cat} 'data/raw/lsun/{cat}_train_lmdb' does not exist yet" in res.stderr
    assert "lsun10_256: 1,000,000 images" in res.stderr
    assert "lsun_bedroom_256: 3,033,042 images" in res.stderr and "zip output" in res.stderr
    assert "ffhq_1024: 70,000 images" in res.stderr and "GiB" in res.stderr


# --- item 6: SIGTERM in the library, stale temporaries ------------------------------------------------------

_SLOW = """
import sys, time
from pathlib import Path
from pipeline.config import DatasetConfig
from pipeline.data.prepare import prepare_dataset

def progress(done, n):
    Path("started").touch()
    time.sleep(0.3)

prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=400), Path("out"), chunk_size=8,
                workers=int(sys.argv[1]), progress=progress)
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_prepare_dataset_leaves_no_temporary(tmp_path: Path, workers: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, str(workers)], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]


def test_a_killed_runs_temporary_is_removed_by_the_next_run(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.{int(dead.stdout)}-abcd1234.tmp"
    (stale / "images.npy").parent.mkdir()
    (stale / "images.npy").write_bytes(b"\0" * 100)
    prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=4), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- item 7: permissions -------------------------------------------------------------------------------------


def test_prepared_folder_is_readable_by_others_per_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=4), tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


# --- item 8: a skipped image shortens images.npy in place -----------------------------------------------------


def test_an_unreadable_image_does_not_copy_the_array(tmp_path: Path) -> None:
    root = _files(tmp_path / "imgs", [f"{i:02d}.png" for i in range(10)])
    (root / "05.png").write_bytes(b"broken")
    inodes = set()

    def progress(done, n):
        inodes.update(p.stat().st_ino for p in tmp_path.glob(".out.*.tmp/images.npy"))

    with pytest.warns(UserWarning, match=r"05.png"):
        prepare_dataset(
            DatasetConfig(source="folder", path=root, resolution=16, max_bad_fraction=0.2),
            tmp_path / "out",
            chunk_size=4,
            progress=progress,
        )
    final = tmp_path / "out" / "images.npy"
    assert inodes == {final.stat().st_ino}  # the file written is the file kept: no second copy
    arr = np.load(final)
    assert arr.shape == (9, 16, 16, 3) and final.stat().st_size == 128 + arr.nbytes


def test_unreadable_images_are_named_with_a_reason_that_is_the_same_on_every_run(tmp_path: Path) -> None:
    root = _files(tmp_path / "imgs", ["a.png", "b.png"])
    (root / "b.png").write_bytes(b"broken")
    (root / "c.png").write_bytes(_png(3)[:60])  # a truncated PNG
    cfg = DatasetConfig(source="folder", path=root, resolution=16, max_bad_fraction=0.9)
    with pytest.warns(UserWarning, match=r"b.png \(not an image in a format Pillow reads\)"):
        stats = prepare_dataset(cfg, tmp_path / "out")
    assert stats["bad_names"][0] == "b.png (not an image in a format Pillow reads)"
    assert stats["bad_names"][1].startswith("c.png (") and "0x" not in stats["bad_names"][1]


# --- item 9: small previews of large images --------------------------------------------------------------------


def test_preview_tiles_of_large_images_are_reduced() -> None:
    images = np.zeros((4, 1024, 1024, 3), np.uint8)
    images[:, :512] = 255
    grid = image_grid(images, columns=2, pad=2)
    assert grid.size == (2 * (MAX_TILE + 2) + 2, 2 * (MAX_TILE + 2) + 2)
    tile = np.asarray(grid)[2 : 2 + MAX_TILE, 2 : 2 + MAX_TILE]
    assert tile[: MAX_TILE // 2].min() == 255 and tile[MAX_TILE // 2 :].max() == 0
    assert image_grid(np.zeros((1, 16, 16, 3), np.uint8), 1).size == (64 + 4, 64 + 4)  # small ones still enlarged


# --- deliverable 2: the zip format ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npy", "zip"])
def test_one_and_two_workers_give_identical_output(tmp_path: Path, fmt: str) -> None:
    root = _classes(tmp_path / "imgs", per_class=5)
    (root / "dog" / "bad.png").write_bytes(b"broken")
    cfg = DatasetConfig(
        source="folder", path=root, resolution=16, labels="subfolders", format=fmt, max_bad_fraction=0.1
    )
    with pytest.warns(UserWarning):
        prepare_dataset(cfg, tmp_path / "w1", chunk_size=4)
    with pytest.warns(UserWarning):
        prepare_dataset(cfg, tmp_path / "w2", chunk_size=4, workers=2)
    one, two = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert one == two and f"images.{fmt}" in one


def test_zip_format_reads_back_the_pixels_of_the_array(tmp_path: Path) -> None:
    root = _classes(tmp_path / "imgs", per_class=4)
    for fmt in ("npy", "zip"):
        cfg = DatasetConfig(source="folder", path=root, resolution=16, labels="subfolders", format=fmt)
        prepare_dataset(cfg, tmp_path / fmt, chunk_size=5)
    npy, zds = PreparedDataset(tmp_path / "npy"), PreparedDataset(tmp_path / "zip")
    assert len(zds) == len(npy) == 12 and zds.resolution == 16 and zds.num_classes == 3
    assert np.array_equal(np.asarray(zds.images[:]), np.asarray(npy.images))
    assert np.array_equal(zds.images[[3, 0]], npy.images[[3, 0]])
    x, y = zds[7]
    assert y == npy[7][1] == 1 and np.array_equal(x.numpy(), npy[7][0].numpy())
    # opened lazily per process: a dataset that has read images still pickles into DataLoader workers
    clone = pickle.loads(pickle.dumps(zds))
    assert np.array_equal(clone[11][0].numpy(), npy[11][0].numpy())
    with zipfile.ZipFile(tmp_path / "zip" / "images.zip") as zf:
        names = zf.namelist()
        labels = json.loads(zf.read("dataset.json"))["labels"]
    assert names[0] == "00000/img00000000.png" and names[-1] == "dataset.json"
    assert labels[:1] == [["00000/img00000000.png", 0]] and [v for _, v in labels] == [0] * 4 + [1] * 4 + [2] * 4
    assert json.loads((tmp_path / "zip" / "meta.json").read_text())["format"] == "zip"
    assert "format" not in json.loads((tmp_path / "npy" / "meta.json").read_text())


def test_zip_without_classes_has_null_labels(tmp_path: Path) -> None:
    root = _files(tmp_path / "imgs", ["a.png", "b.png"])
    prepare_dataset(DatasetConfig(source="folder", path=root, resolution=16, format="zip"), tmp_path / "z")
    with zipfile.ZipFile(tmp_path / "z" / "images.zip") as zf:
        assert json.loads(zf.read("dataset.json")) == {"labels": None}


def test_progress_reaches_a_log_file_as_timed_lines(capsys) -> None:
    from pipeline import progress

    now = [0.0]
    advance = progress._log_lines("prepare x", clock=lambda: now[0])
    for done in range(1, 11):
        now[0] += 10.0
        advance(done * 100, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "prepare x: 300/1000 (30%), 30 s",
        "prepare x: 600/1000 (60%), 60 s",
        "prepare x: 900/1000 (90%), 90 s",
        "prepare x: 1000/1000 (100%), 100 s",
    ]
    with progress.progress_bar("prepare y") as adv:  # stderr captured: not a terminal
        adv(5, 5)
    assert capsys.readouterr().err == "prepare y: 5/5 (100%), 0 s\n"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (64, 32), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 64, 16))  # stored: top half red, bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": red on the right, blue on the left
    (tmp_path / "imgs").mkdir()
    img.save(tmp_path / "imgs" / "a.jpg", format="JPEG", quality=95, exif=exif)
    prepare_dataset(DatasetConfig(source="folder", path=tmp_path / "imgs", resolution=32), tmp_path / "out")
    out = np.load(tmp_path / "out" / "images.npy")[0].astype(int)
    assert out[:, :12, 2].mean() > 200 and out[:, 20:, 0].mean() > 200  # as stored it would be top/bottom


def test_prepare_stage_writes_and_previews_the_zip_format(project: Path, micro_dict: dict, monkeypatch) -> None:
    from pipeline.config import parse_params
    from stages import paths
    from stages import prepare as stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: no MLflow run needed
    micro_dict["prepare"]["datasets"]["faces32"]["format"] = "zip"
    stats = stage.run(parse_params(micro_dict), "faces32")
    ds = PreparedDataset(paths.prepared_dir("faces32"))
    assert isinstance(ds.images, ZipImages) and len(ds) == stats["num_images"] == 128
    assert ds.keypoints is not None and len(ds.keypoints) == 128
    assert Image.open(paths.prepare_preview("faces32")).size[0] > 0
