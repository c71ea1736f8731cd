"""The prepared-dataset reader and preview grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DatasetConfig
from pipeline.data.dataset import PreparedDataset
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
