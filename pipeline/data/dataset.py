"""The one Dataset class that reads every prepared dataset (see pipeline.data.prepare for the format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class PreparedDataset(Dataset):
    """Images as float tensors in [-1, 1], (3, S, S), with their class label.

    `hflip=True` mirrors each image with probability 1/2 (the paper's only augmentation); the coin
    comes from torch's global RNG so a resumed run that restores RNG states flips identically."""

    def __init__(self, root: str | Path, hflip: bool = False, resolution: int | None = None):
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"'{root}' is not a prepared dataset (no meta.json); run `pipeline prepare` for it first")
        self.root = root
        self.meta = json.loads(meta_path.read_text())
        self.images = np.load(root / "images.npy", mmap_mode="r")
        self.labels = np.load(root / "labels.npy")
        kp = root / "keypoints.npy"
        self.keypoints = np.load(kp) if kp.exists() else None
        if len(self.images) == 0:
            raise ValueError(f"prepared dataset '{root}' is empty; re-run `pipeline prepare`")
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
