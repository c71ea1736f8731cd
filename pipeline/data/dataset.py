"""The one Dataset class that reads every prepared dataset (see pipeline.data.prepare for the format)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class PreparedDataError(ValueError):
    """A prepared dataset's file that cannot be used; the message names it and the command that re-prepares it."""


def _redo(root: Path) -> str:
    return f"re-run `pipeline prepare --dataset {root.name}` (it replaces the folder)"


def _load_array(path: Path, mmap: bool = False) -> np.ndarray:
    # np.load fails in many ways on a damaged file (EOFError on an empty one, which the CLI would
    # print as a bare "Aborted."); every one of them means the same to the user.
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise PreparedDataError(f"prepared dataset file '{path}' is missing; {_redo(path.parent)}") from None
    except Exception as err:  # noqa: BLE001
        raise PreparedDataError(
            f"prepared dataset file '{path}' is truncated or not a .npy array ({type(err).__name__}: {err}); "
            f"{_redo(path.parent)}"
        ) from None


def _load_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise PreparedDataError(
            f"prepared dataset file '{path}' is not valid JSON ({err}); {_redo(path.parent)}"
        ) from None
    if not isinstance(meta, dict):
        raise PreparedDataError(
            f"prepared dataset file '{path}' holds {type(meta).__name__} {str(meta)[:60]}, not a JSON object; "
            f"{_redo(path.parent)}"
        )
    return meta


def check_images(images: np.ndarray, path: Path) -> None:
    """Raise PreparedDataError unless `images` is what prepare writes: uint8 (N, S, S, 3)."""
    if images.dtype != np.uint8:
        # float images in [0, 1] would become near-constant ones after the uint8 scaling below.
        raise PreparedDataError(
            f"prepared dataset file '{path}' holds {images.dtype} images, but the format is uint8 in 0..255; "
            f"{_redo(path.parent)}"
        )
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise PreparedDataError(
            f"prepared dataset file '{path}' holds an array of shape {images.shape}, but the format is "
            f"(N, S, S, 3) RGB images; {_redo(path.parent)}"
        )


def _zip_member(index: int) -> str:
    return f"{index // 1000:05d}/img{index:08d}.png"  # as pipeline.data.prepare.zip_member_name writes it


class ZipImages:
    """The images of an images.zip (StyleGAN2-ADA layout) as a read-only uint8 (N, S, S, 3) sequence.

    The zip is opened on first access in each process, not when this object is made: a DataLoader
    pickles the dataset into its worker processes, which then decode in parallel, each through its
    own file handle (one handle shared across a fork would interleave their seeks)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: Path, resolution: int):
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (OSError, zipfile.BadZipFile) as err:
            raise PreparedDataError(
                f"prepared dataset file '{path}' is not a readable zip ({type(err).__name__}: {err}); {_redo(path.parent)}"
            ) from None
        n = sum(1 for name in names if name.endswith(".png"))
        missing = [_zip_member(i) for i in (0, n - 1) if n and _zip_member(i) not in names]
        if missing:
            raise PreparedDataError(
                f"prepared dataset file '{path}' holds {n} PNGs but not '{missing[0]}' (the StyleGAN2-ADA naming "
                f"00000/img00000000.png); {_redo(path.parent)}"
            )
        self.shape = (n, resolution, resolution, 3)
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}

    def __len__(self) -> int:
        return self.shape[0]

    def _file(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def _one(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of a dataset of {len(self)}")
        with Image.open(io.BytesIO(self._file().read(_zip_member(index % len(self))))) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if arr.shape != self.shape[1:]:
            raise PreparedDataError(
                f"image {index} of '{self.path}' is {arr.shape}, not {self.shape[1:]}; {_redo(self.path.parent)}"
            )
        return arr

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._one(int(index))
        indices = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).ravel().tolist()
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        for j, i in enumerate(indices):
            out[j] = self._one(int(i))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)


def images_path(root: Path) -> Path:
    """The file that holds a prepared folder's images: images.zip when there is one, else images.npy."""
    return root / "images.zip" if (root / "images.zip").exists() else root / "images.npy"


def open_images(root: Path, meta: dict[str, Any]) -> np.ndarray | ZipImages:
    """A prepared folder's images, whichever format it has: a memory map of images.npy or the zip."""
    path = images_path(root)
    if path.suffix == ".zip":
        return ZipImages(path, int(meta.get("resolution", 0)))
    images = _load_array(path, mmap=True)
    check_images(images, path)
    return images


class PreparedDataset(Dataset):
    """Images as float tensors in [-1, 1], (3, S, S), with their class label.

    Opening checks every file against the format (uint8 (N, S, S, 3) images, N labels, N keypoint
    sets when present, a JSON object of metadata) and names the file that does not match.

    `hflip=True` mirrors each image with probability 1/2 (the paper's only augmentation); the coin
    comes from torch's global RNG so a resumed run that restores RNG states flips identically."""

    def __init__(self, root: str | Path, hflip: bool = False, resolution: int | None = None):
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"'{root}' is not a prepared dataset (no meta.json); run `pipeline prepare --dataset {root.name}` for it first"
            )
        self.root = root
        self.meta = _load_meta(meta_path)
        self.images = open_images(root, self.meta)
        # named in the errors below: a zip-format folder has no images.npy to point at
        images_name = images_path(root).name
        if len(self.images) == 0:
            raise PreparedDataError(f"prepared dataset '{root}' is empty; {_redo(root)}")
        self.labels = _load_array(root / "labels.npy")
        if self.labels.shape != (len(self.images),) or not np.issubdtype(self.labels.dtype, np.integer):
            raise PreparedDataError(
                f"prepared dataset file '{root / 'labels.npy'}' holds {self.labels.dtype} of shape {self.labels.shape}, "
                f"but {images_name} has {len(self.images)} images (one integer label each); {_redo(root)}"
            )
        kp = root / "keypoints.npy"
        self.keypoints = _load_array(kp) if kp.exists() else None
        if self.keypoints is not None and (self.keypoints.ndim != 3 or len(self.keypoints) != len(self.images)):
            raise PreparedDataError(
                f"prepared dataset file '{kp}' holds an array of shape {self.keypoints.shape}, but {images_name} has "
                f"{len(self.images)} images (one (K, 2) keypoint set each); {_redo(root)}"
            )
        if resolution is not None and self.resolution != resolution:
            raise ValueError(
                f"prepared dataset '{root}' is {self.resolution} px but {resolution} px was asked for; "
                f"prepare a dataset at {resolution} px or change the row's resolution"
            )
        self.hflip = hflip

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 1))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        if self.hflip and bool(torch.rand(()) < 0.5):
            img = img.flip(-1)
        return img, int(self.labels[index])
