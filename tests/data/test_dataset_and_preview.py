"""The prepared-dataset reader and preview grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DatasetConfig
from pipeline.data.dataset import PreparedDataError, PreparedDataset
from pipeline.data.prepare import prepare_dataset
from pipeline.data.preview import image_grid


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=8), tmp_path / "faces")
    return tmp_path / "faces"


def test_reader_returns_normalised_images_and_labels(prepared: Path) -> None:
    ds = PreparedDataset(prepared)
    img, label = ds[3]
    raw = np.load(prepared / "images.npy")[3]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.allclose(img, torch.from_numpy(raw).permute(2, 0, 1).float() / 127.5 - 1)
    assert label == int(np.load(prepared / "labels.npy")[3]) and len(ds) == 8 and ds.resolution == 32


def test_hflip_mirrors_about_half_the_time(prepared: Path) -> None:
    plain, flipping = PreparedDataset(prepared), PreparedDataset(prepared, hflip=True)
    original = plain[0][0]
    assert not torch.equal(original, original.flip(-1))
    torch.manual_seed(0)
    samples = [flipping[0][0] for _ in range(200)]
    flips = [torch.equal(s, original.flip(-1)) for s in samples]
    assert 60 < sum(flips) < 140
    assert all(f or torch.equal(s, original) for f, s in zip(flips, samples))


def test_reader_errors(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 px but 64 px was asked"):
        PreparedDataset(prepared, resolution=64)
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        PreparedDataset(tmp_path / "missing")


def test_image_grid_layout_and_keypoints() -> None:
    imgs = np.zeros((5, 64, 64, 3), np.uint8)
    grid = np.asarray(image_grid(imgs, columns=3, pad=2))
    assert grid.shape == (2 * 66 + 2, 3 * 66 + 2, 3)
    kp = np.full((5, 1, 2), 0.5, np.float32)
    marked = np.asarray(image_grid(imgs, columns=3, keypoints=kp, pad=2))
    assert tuple(marked[2 + 32, 2 + 32]) == (255, 0, 0)  # the centre of tile 0 is marked
    kp[0] = np.nan
    skipped = np.asarray(image_grid(imgs, columns=3, keypoints=kp, pad=2))
    assert tuple(skipped[2 + 32, 2 + 32]) == (0, 0, 0) and tuple(skipped[2 + 32, 2 + 66 + 32]) == (255, 0, 0)
    with pytest.raises(ValueError, match="uint8"):
        image_grid(imgs.astype(np.float32), 3)


def _damage_images(path: Path, how: str) -> None:
    images = np.load(path)
    if how == "float01":  # what a hand-made preparation in [0, 1] looks like: trained on near-constant images
        np.save(path, images.astype(np.float32) / 255)
    elif how == "grayscale":
        np.save(path, images[..., 0])
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif how == "empty":
        path.write_bytes(b"")  # np.load raised EOFError, which the CLI printed as a bare "Aborted."


@pytest.mark.parametrize(
    "how, expected",
    [
        ("float01", r"images.npy' holds float32 images, but the format is uint8 in 0..255"),
        ("grayscale", r"images.npy' holds an array of shape \(8, 32, 32\), but the format is \(N, S, S, 3\)"),
        ("truncated", r"images.npy' is truncated or not a .npy array"),
        ("random", r"images.npy' is truncated or not a .npy array"),
        ("empty", r"images.npy' is truncated or not a .npy array \(EOFError"),
    ],
)
def test_damaged_images_are_named_with_the_command_that_remakes_them(prepared: Path, how: str, expected: str) -> None:
    # Issue #15 items 4 and 12.
    _damage_images(prepared / "images.npy", how)
    with pytest.raises(
        PreparedDataError,
        match=rf"prepared dataset file '.*faces/{expected}.*re-run `pipeline prepare --dataset faces`",
    ):
        PreparedDataset(prepared)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("meta.json", b'{"num_classes": ', r"meta.json' is not valid JSON"),
        ("meta.json", b"[1, 2, 3]", r"meta.json' holds list \[1, 2, 3\], not a JSON object"),
        ("labels.npy", np.zeros(7, np.int64), r"labels.npy' holds int64 of shape \(7,\), but images.npy has 8 images"),
        ("labels.npy", np.zeros(8, np.float32), r"labels.npy' holds float32 of shape \(8,\)"),
        (
            "keypoints.npy",
            np.zeros((7, 5, 2), np.float32),
            r"keypoints.npy' holds an array of shape \(7, 5, 2\), but images.npy has 8",
        ),
    ],
)
def test_damaged_metadata_labels_and_keypoints_are_named(prepared: Path, name: str, content, expected: str) -> None:
    if isinstance(content, bytes):
        (prepared / name).write_bytes(content)
    else:
        np.save(prepared / name, content)
    with pytest.raises(PreparedDataError, match=rf"'.*faces/{expected}.*pipeline prepare --dataset faces"):
        PreparedDataset(prepared)


def test_a_zero_byte_images_file_is_a_named_error_with_exit_code_2_through_the_cli(project: Path) -> None:
    import subprocess
    import sys

    where = project / "data" / "prepared" / "faces32"
    prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=8), where)
    (where / "images.npy").write_bytes(b"")
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "--row", "inr_gan"], cwd=project, capture_output=True, text=True
    )
    assert res.returncode == 2, res.stderr
    assert (
        "data/prepared/faces32/images.npy' is truncated" in res.stderr
        and "pipeline prepare --dataset faces32" in res.stderr
    )
    assert "Traceback" not in res.stderr and not (project / "runs").exists()


def test_grids_carry_a_title_and_row_labels(tmp_path) -> None:
    from PIL import Image

    from pipeline.data.preview import LABEL_SIZE, image_grid, save_grid

    images = np.full((6, 16, 16, 3), 128, np.uint8)
    plain = image_grid(images, 3)
    save_grid(tmp_path / "g.png", images, 3, title="inr_gan: 16 kimg", row_labels=["targets", "Z"])
    with Image.open(tmp_path / "g.png") as out:
        grid = np.asarray(out.convert("L"))
    assert grid.shape[0] == plain.height + LABEL_SIZE + 12 and grid.shape[1] > plain.width + 20
    left = grid.shape[1] - plain.width
    assert (grid[: LABEL_SIZE + 12, left:] < 128).any()  # the title is drawn
    assert (grid[LABEL_SIZE + 12 :, :left] < 128).any()  # and the row labels
    with pytest.raises(ValueError, match="3 row labels"):
        save_grid(tmp_path / "bad.png", images, 3, row_labels=["targets", "Z", "W"])


def test_panels_put_labelled_images_side_by_side(tmp_path) -> None:
    from PIL import Image

    from pipeline.data.preview import save_grid, save_panels

    for name in ("a", "b"):
        save_grid(tmp_path / f"{name}.png", np.zeros((4, 16, 16, 3), np.uint8), 2)
    save_panels(
        tmp_path / "p.png", [("row a\nfd 1.0", tmp_path / "a.png"), ("row b", tmp_path / "b.png")], "T", width=100
    )
    with Image.open(tmp_path / "p.png") as out:
        assert out.width == 2 * 108 + 8 or out.width == 480  # two panels of 100 px (or the least width)
        dark = np.asarray(out.convert("L")) < 10
    assert dark[:, 8:108].any() and dark[:, 116:216].any()  # both grids pasted, side by side
    save_panels(tmp_path / "empty.png", [], "Table 4")  # a table without rows still gets its figure
    assert (tmp_path / "empty.png").is_file()


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("labels.npy", np.zeros(7, np.int64), r"labels.npy' holds int64 of shape \(7,\), but images.zip has 8 images"),
        (
            "keypoints.npy",
            np.zeros((7, 5, 2), np.float32),
            r"keypoints.npy' holds an array of shape \(7, 5, 2\), but images.zip has 8",
        ),
    ],
)
def test_errors_of_a_zip_format_dataset_name_the_zip(tmp_path: Path, name: str, content, expected: str) -> None:
    # A zip-format folder has no images.npy: pointing at one would send the user looking for a missing file.
    root = tmp_path / "faces"
    prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=8, format="zip"), root)
    assert not (root / "images.npy").exists()
    np.save(root / name, content)
    with pytest.raises(PreparedDataError, match=rf"'.*faces/{expected}.*pipeline prepare --dataset faces"):
        PreparedDataset(root)
