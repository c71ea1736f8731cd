"""The offline stand-in for Inception: a small CNN trained on a prepared dataset's class labels.

Its penultimate features (global max pool of the last convolution) give the Frechet distance
`fd_domain`, its class probabilities the inception-score analogue `is_domain` (the practice of
MNIST-GAN papers). They are reported under those names, never as FID/IS: the numbers are only
comparable between models scored with the same network.

The network is trained at the dataset's resolution and refuses other resolutions: a dataset at 2S
(UpsampledFID) gets its own network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.io import load_versioned_torch, save_torch, state_dict_sha256
from pipeline.metrics.options import DomainNetConfig

FORMAT_VERSION = 1


class DomainNet(nn.Module):
    """uint8 (N, 3, S, S) -> logits; four 3x3 convolutions (strides 1, 2, 2, 2) with batch norm and
    ReLU, a global max pool, a linear classifier.

    Max rather than average pooling: on synthetic faces the smile attribute is a few pixels of mouth
    shape, and held-out accuracy on it went from about 77% to 90% with the same training budget."""

    def __init__(self, num_classes: int, resolution: int, width: int = 32):
        super().__init__()
        self.num_classes, self.resolution, self.width = num_classes, resolution, width
        c = (width, 2 * width, 4 * width, 4 * width)
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, c[0], 3, 1, 1),
                nn.Conv2d(c[0], c[1], 3, 2, 1),
                nn.Conv2d(c[1], c[2], 3, 2, 1),
                nn.Conv2d(c[2], c[3], 3, 2, 1),
            ]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(ch) for ch in c])
        self.classifier = nn.Linear(c[3], num_classes)
        self.dim = c[3]

    def features(self, images: Tensor) -> Tensor:
        """uint8 or [-1, 1] float images -> (N, dim) penultimate features."""
        x = images.float().div(127.5).sub(1.0) if images.dtype == torch.uint8 else images
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return x.amax(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


@dataclass
class DomainTrainReport:
    train_images: int
    holdout_images: int
    holdout_accuracy: float
    epochs: int
    seconds: float


def split_indices(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays, sorted, from a seeded permutation of range(n)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = max(1, int(round(n * holdout_fraction)))
    if n - n_hold < 1:
        raise ValueError(f"{n} images cannot be split into training and held-out sets")
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def _batch(images: np.ndarray, idx: np.ndarray) -> Tensor:
    # Sorted indices read a memory-mapped array front to back.
    order = np.argsort(idx)
    x = torch.from_numpy(np.ascontiguousarray(images[idx[order]])).permute(0, 3, 1, 2)
    out = torch.empty_like(x)
    out[torch.from_numpy(order)] = x
    return out


@torch.no_grad()
def accuracy(net: DomainNet, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, batch: int = 512) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        correct += int((net(_batch(images, idx)).argmax(1).numpy() == labels[idx]).sum())
    return correct / len(indices)


def train_domain_net(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: DomainNetConfig = DomainNetConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[DomainNet, DomainTrainReport]:
    """Train on uint8 images (N, S, S, 3) (a memory map works) with integer labels; deterministic given cfg.seed.

    Adam with a cosine learning-rate decay, random horizontal flips (the attributes do not depend on
    the side). `progress(step, total_steps)` is called after each step."""
    import time

    t0 = time.perf_counter()
    labels = np.asarray(labels, np.int64)
    n, s = len(images), int(images.shape[1])
    if num_classes < 2:
        raise ValueError(
            f"the domain network needs a dataset with at least 2 classes, got {num_classes}; "
            "use reference.features: inception, or prepare the dataset with labels"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    train_idx, hold_idx = split_indices(n, cfg.holdout_fraction, cfg.seed)
    per_epoch = min(len(train_idx), cfg.max_train_images or len(train_idx))
    batch = min(cfg.batch, per_epoch)  # a dataset smaller than one batch still trains
    steps_per_epoch = max(1, per_epoch // batch)
    total = steps_per_epoch * cfg.epochs

    rng = np.random.default_rng([cfg.seed, 1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = DomainNet(num_classes, s, cfg.width)
    # One CPU thread whatever the machine or OMP_NUM_THREADS: the thread count changes the order of float
    # sums, and over thousands of steps a 2-thread run ends with another network (holdout accuracy 0.392 vs
    # 0.412 on faces32_test), i.e. another yardstick for every fd_domain. So make repro, plain dvc repro and
    # machines with more cores train the same one (on one CPU type); the network is small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
        net.train()
        step = 0
        for _ in range(cfg.epochs):
            order = rng.permutation(train_idx)[: steps_per_epoch * batch]
            for idx in order.reshape(steps_per_epoch, batch):
                x = _batch(images, idx)
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = F.cross_entropy(net(x), torch.from_numpy(labels[idx]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress is not None:
                    progress(step, total)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    acc = accuracy(net, images, labels, hold_idx)
    return net, DomainTrainReport(len(train_idx), len(hold_idx), acc, cfg.epochs, time.perf_counter() - t0)


def save_domain_net(path: str | Path, net: DomainNet, info: dict[str, Any] | None = None) -> None:
    """torch.save of the weights and what rebuilds the network, written atomically."""
    save_torch(
        path,
        {
            "format": FORMAT_VERSION,
            "state_dict": net.state_dict(),
            "num_classes": net.num_classes,
            "resolution": net.resolution,
            "width": net.width,
            "info": info or {},
        },
    )


def load_domain_net(path: str | Path) -> DomainNet:
    payload = load_versioned_torch(
        path,
        FORMAT_VERSION,
        "domain network",
        missing_hint="run `pipeline reference` for its dataset first",
        wrong_hint="re-run `pipeline reference`",
    )
    net = DomainNet(payload["num_classes"], payload["resolution"], payload["width"])
    net.load_state_dict(payload["state_dict"])
    return net.eval()


class DomainFeatures:
    """A trained DomainNet as a feature extractor (see pipeline.metrics.inception.FeatureExtractor)."""

    kind = "domain"
    fd_name = "fd_domain"
    is_name = "is_domain"

    def __init__(self, net: DomainNet, device: str | torch.device = "cpu"):
        # The weights' own hash, not the file's: scores name the network they used, the same in any clone.
        self.weights_sha256 = state_dict_sha256(net.state_dict())
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.dim = net.dim
        self.resolution = net.resolution

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> DomainFeatures:
        return cls(load_domain_net(path), device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            raise ValueError(
                f"this domain network was trained on {self.resolution} px images and cannot score "
                f"{images.shape[-2]}x{images.shape[-1]} images; score them with the network of a dataset at that resolution"
            )
        feats = self.net.features(images.to(self.device))
        logits = self.net.classifier(feats)
        return feats.float().cpu(), logits.float().cpu()
