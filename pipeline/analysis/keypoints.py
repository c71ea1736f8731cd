"""Keypoint extractors K for the keypoint prediction loss, behind one interface:

    K(images) -> keypoints float32 (N, K, 2), (x, y) in [0, 1] image coordinates

where `images` are uint8 (N, S, S, 3) arrays or tensors, or float tensors (N, 3, S, S) in [-1, 1].
Coordinates are continuous: pixel column i covers [i/S, (i+1)/S), the same convention as the
ground-truth keypoints of the synthetic faces.

- `FANKeypoints`: face-alignment's 2D-FAN (68 points) for real faces. The package's own
  `FaceAlignment` always builds a face detector and downloads weights from its servers; here the
  FAN network is built directly and its weights come from `locate_weights` (a path or the torch hub
  cache). Faces are cropped either by a fixed box (aligned faces such as FFHQ: the box is the crop)
  or by face-alignment's S3FD detector.
- `RegressorKeypoints`: a small CNN trained by the pipeline on the synthetic faces' ground-truth
  keypoints (16 points), for the embedded profile where no landmark model can be downloaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.analysis import locate_weights
from pipeline.analysis.options import FAN_FILE, FAN_URL, S3FD_FILE, S3FD_URL
from pipeline.io import load_state_dict, load_versioned_torch, save_torch

FAN_INPUT, FAN_HEATMAP = 256, 64
FAN_NUM_POINTS = 68
REGRESSOR_FORMAT = 1


class KeypointExtractor(Protocol):
    names: tuple[str, ...]

    def __call__(self, images: np.ndarray | Tensor) -> np.ndarray: ...


def as_float_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, S, S, 3) or float (N, 3, S, S) in [-1, 1] -> float32 tensor (N, 3, S, S) in [-1, 1]."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(images if images.flags.writeable else images.copy())
    else:
        x = images
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must have shape (N, S, S, 3), got {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float images must have shape (N, 3, S, S) with values in [-1, 1], got {tuple(x.shape)}")
    return x.float()


def as_uint8_images(images: np.ndarray | Tensor) -> np.ndarray:
    """Either image form -> uint8 (N, S, S, 3), rounding [-1, 1] floats as the samplers do."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return images
    x = as_float_images(images).detach().cpu()
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def heatmap_argmax(heatmaps: Tensor) -> Tensor:
    """Heatmaps (N, K, H, W) -> peak positions (N, K, 2) as fractions of the heatmap's width/height.

    The peak cell (i, j) maps to its centre ((j + 0.5) / W, (i + 0.5) / H), moved a quarter cell
    towards the larger of its two neighbours in x and in y (FAN's sub-cell refinement), so the
    resolution is half a heatmap cell; peaks on the border are not refined."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).argmax(-1)
    row, col = flat // w, flat % w
    x, y = col.float() + 0.5, row.float() + 0.5
    inner = (col > 0) & (col < w - 1) & (row > 0) & (row < h - 1)
    hm = heatmaps.reshape(n * k, h, w)
    idx = torch.arange(n * k)
    r, c = row.reshape(-1).clamp(1, h - 2), col.reshape(-1).clamp(1, w - 2)
    dx = torch.sign(hm[idx, r, c + 1] - hm[idx, r, c - 1]).reshape(n, k)
    dy = torch.sign(hm[idx, r + 1, c] - hm[idx, r - 1, c]).reshape(n, k)
    x = x + 0.25 * dx * inner
    y = y + 0.25 * dy * inner
    return torch.stack([x / w, y / h], dim=-1)


# --- FAN -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A square crop of an image in pixels: left, top, side (it may reach outside the image)."""

    left: float
    top: float
    side: float


def crop_images(images: Tensor, crops: Sequence[Crop], size: int) -> Tensor:
    """Bilinear crops (N, 3, size, size) of images (N, 3, H, W); outside the image is black (0 in [0, 1])."""
    n, _, h, w = images.shape
    theta = torch.zeros(n, 2, 3)
    for i, c in enumerate(crops):
        # affine_grid works in [-1, 1] with align_corners=False: pixel edges at -1 and 1.
        theta[i, 0, 0] = c.side / w
        theta[i, 0, 2] = (2 * c.left + c.side) / w - 1
        theta[i, 1, 1] = c.side / h
        theta[i, 1, 2] = (2 * c.top + c.side) / h - 1
    grid = F.affine_grid(theta.to(images), [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def detector_crop(box: Sequence[float]) -> Crop:
    """FAN's crop for a detector box (x0, y0, x1, y1) in pixels: centred on the box, moved up by 12%
    of its height, side 200 * (w + h) / 195 (face-alignment's reference scale)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * (y1 - y0)
    side = 200.0 * ((x1 - x0) + (y1 - y0)) / 195.0
    return Crop(cx - side / 2, cy - side / 2, side)


def build_fan(num_modules: int = 4) -> nn.Module:
    """face-alignment's FAN (2DFAN-4 has 4 stacked hourglasses), randomly initialised."""
    from face_alignment.models import FAN

    return FAN(num_modules)


class FANKeypoints:
    """face-alignment's 2D-FAN: 68 landmarks per face, in [0, 1] image coordinates.

    box: a fixed crop (x0, y0, x1, y1) as fractions of the image, used as FAN's 256 x 256 input;
        the full image (0, 0, 1, 1) suits aligned faces such as FFHQ, whose face box is about half the
        image, as in FAN's training crops. "detect": face-alignment's S3FD detector gives the box of the
        most confident face and FAN's own crop rule is applied (falls back to the full image, counted
        in `num_undetected`, when no face is found).
    Coordinates: the last hourglass's heatmaps (64 x 64 over the crop) -> `heatmap_argmax` -> crop
    fraction -> image fraction. `flip_input` averages with the mirrored image (left/right points
    swapped), as FaceAlignment does by default.
    """

    names: tuple[str, ...] = tuple(f"fan_{i}" for i in range(FAN_NUM_POINTS))

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        box: Sequence[float] | Literal["detect"] = (0.0, 0.0, 1.0, 1.0),
        detector_weights: str | Path | None = None,
        flip_input: bool = False,
        batch_size: int = 8,
        allow_download: bool = False,
        num_modules: int = 4,
    ):
        self.device = torch.device(device)
        path = self.weights_path = locate_weights("face-alignment 2D-FAN-4", FAN_FILE, FAN_URL, weights, allow_download)
        net = build_fan(num_modules)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as err:  # noqa: BLE001 - a wrong or damaged file means the same to the user
            raise ValueError(
                f"'{path}' is not a FAN-{num_modules} state dict ({err}); download {FAN_URL} again"
            ) from None
        self.net = net.to(self.device).eval().requires_grad_(False)
        if box == "detect":
            from face_alignment.detection.sfd.sfd_detector import SFDDetector

            det_path = locate_weights(
                "face-alignment S3FD face detector", S3FD_FILE, S3FD_URL, detector_weights, allow_download
            )
            # face_alignment unpickles the file itself (with weights_only=False in older releases): it gets
            # only a file that has passed weights_only=True, which therefore holds tensors and nothing to run.
            load_state_dict(det_path, "S3FD face detector state dict", f"Download {S3FD_URL} again.")
            self.detector = SFDDetector(str(self.device), path_to_detector=str(det_path))
            self.box = None
        else:
            if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise ValueError(
                    f"FAN box must be (x0, y0, x1, y1) fractions with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, or 'detect'; got {box}"
                )
            self.detector, self.box = None, tuple(float(v) for v in box)
        self.flip_input, self.batch_size = flip_input, batch_size
        self.num_undetected = 0

    def _crops(self, uint8: np.ndarray) -> list[Crop]:
        h, w = uint8.shape[1:3]
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            # a square crop over the box (aligned datasets are square, so this is the box itself)
            side = max((x1 - x0) * w, (y1 - y0) * h)
            cx, cy = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h
            return [Crop(cx - side / 2, cy - side / 2, side)] * len(uint8)
        crops = []
        for img in uint8:
            boxes = self.detector.detect_from_image(img.copy())
            if len(boxes) == 0:
                self.num_undetected += 1
                crops.append(Crop(0.0, 0.0, float(max(h, w))))
            else:
                crops.append(detector_crop(max(boxes, key=lambda b: b[4])))
        return crops

    @torch.no_grad()
    def _heatmaps(self, x: Tensor) -> Tensor:
        out = self.net(x)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        if self.flip_input:
            from face_alignment.utils import flip

            mirrored = self.net(x.flip(-1))
            mirrored = mirrored[-1] if isinstance(mirrored, (list, tuple)) else mirrored
            out = out + flip(mirrored.cpu(), is_label=True).to(out)
        return out

    def __call__(self, images: np.ndarray | Tensor) -> np.ndarray:
        uint8 = as_uint8_images(images)
        h, w = uint8.shape[1:3]
        result = np.empty((len(uint8), FAN_NUM_POINTS, 2), np.float32)
        for start in range(0, len(uint8), self.batch_size):
            chunk = uint8[start : start + self.batch_size]
            crops = self._crops(chunk)
            x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
            x = crop_images(x, crops, FAN_INPUT)
            frac = heatmap_argmax(self._heatmaps(x).float().cpu())  # (n, 68, 2) in crop fractions
            left = torch.tensor([c.left for c in crops])[:, None]
            top = torch.tensor([c.top for c in crops])[:, None]
            side = torch.tensor([c.side for c in crops])[:, None]
            xs = (left + frac[..., 0] * side) / w
            ys = (top + frac[..., 1] * side) / h
            result[start : start + len(chunk)] = torch.stack([xs, ys], -1).numpy()
        return result


# --- keypoint regressor for synthetic faces ----------------------------------------------------------


class KeypointRegressor(nn.Module):
    """A small fully convolutional network: images (N, 3, S, S) in [-1, 1] -> keypoints (N, K, 2) in [0, 1].

    One heatmap per keypoint at S/2 resolution; the keypoint is the heatmap's soft-argmax (the
    expected cell centre under a softmax over cells), which is differentiable and sub-pixel
    accurate, and trains much faster than regressing coordinates from a flattened feature map.
    A pixel-unshuffle replaces the first stride-2 stage (CPU time is the budget: 10k faces at
    32 px train in under a minute on one core); dilated convolutions give each cell a receptive
    field of about 30 px at S = 32."""

    def __init__(self, num_keypoints: int, resolution: int, width: int = 24):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"keypoint regressor resolution must be a power of two >= 8, got {resolution}")
        self.num_keypoints, self.resolution, self.width = num_keypoints, resolution, width
        self.trunk = nn.Sequential(
            nn.PixelUnshuffle(2),  # (3, S, S) -> (12, S/2, S/2): the stride-2 stage for free
            nn.Conv2d(12, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.heatmaps = nn.Conv2d(width, num_keypoints, 1)
        side = resolution // 2
        centres = (torch.arange(side) + 0.5) / side
        self.register_buffer("centres", centres, persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """The trunk's features (N, width, S/2, S/2) of images at this regressor's resolution."""
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.heatmaps(self.features(x))  # (N, K, S/2, S/2)
        n, k, h, w = logits.shape
        p = logits.reshape(n, k, h * w).softmax(-1).reshape(n, k, h, w)
        x_coord = (p.sum(2) * self.centres).sum(-1)
        y_coord = (p.sum(3) * self.centres).sum(-1)
        return torch.stack([x_coord, y_coord], dim=-1)


class RegressorKeypoints:
    """A trained `KeypointRegressor` behind the extractor interface; inputs of another resolution are
    resized (area or bilinear) to the regressor's."""

    def __init__(
        self, model: KeypointRegressor, names: Sequence[str], heldout_mse: float | None = None, batch_size: int = 256
    ):
        self.model = model.eval()
        self.names = tuple(names)
        self.heldout_mse = heldout_mse
        self.batch_size = batch_size

    def prepare(self, images: np.ndarray | Tensor) -> Tensor:
        x = as_float_images(images)
        s = self.model.resolution
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(
                x,
                size=(s, s),
                mode="area" if x.shape[-1] > s else "bilinear",
                align_corners=None if x.shape[-1] > s else False,
            )
        return x

    @torch.no_grad()
    def __call__(self, images: np.ndarray | Tensor) -> np.ndarray:
        device = self.model.centres.device
        out = [
            self.model(self.prepare(images[i : i + self.batch_size]).to(device)).cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float32)

    def features(self, images: Tensor) -> Tensor:
        """Differentiable trunk features (N, D) of [-1, 1] images: a domain feature network for projection."""
        return self.model.features(self.prepare(images)).flatten(1)


def keypoint_mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over images, keypoints and both coordinates of the squared error, in [0, 1] units (the KPL convention)."""
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))


def train_keypoint_regressor(
    images: np.ndarray,
    keypoints: np.ndarray,
    names: Sequence[str],
    *,
    heldout_fraction: float = 0.1,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 6e-3,
    width: int = 24,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[RegressorKeypoints, dict[str, Any]]:
    """Fit a `KeypointRegressor` on uint8 images (N, S, S, 3) and keypoints (N, K, 2) in [0, 1].

    The last `heldout_fraction` of a seeded permutation is held out; its mean squared error (KPL
    convention) and that of predicting the training mean (the trivial baseline) are reported.
    Adam with a cosine learning-rate decay; deterministic given `seed` on a given machine."""
    images, keypoints = np.asarray(images), np.asarray(keypoints, np.float32)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}")
    if keypoints.shape[:1] != images.shape[:1] or keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2) with N = {len(images)}, got {keypoints.shape}")
    n = len(images)
    n_held = max(1, int(round(n * heldout_fraction)))
    if n - n_held < batch_size:
        raise ValueError(
            f"{n} images leave {n - n_held} for training, fewer than one batch of {batch_size}; prepare more images"
        )
    order = np.random.default_rng(seed).permutation(n)
    train_idx, held_idx = np.sort(order[: n - n_held]), np.sort(order[n - n_held :])
    x_all = as_float_images(images)
    y_all = torch.from_numpy(keypoints)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KeypointRegressor(keypoints.shape[1], images.shape[1], width)
    # One CPU thread whatever the machine or OMP_NUM_THREADS, as the domain network (pipeline/metrics/domain.py):
    # with 2 threads the float sums run in another order and the regressor, the yardstick of every KPL, ends
    # up different; make repro, plain dvc repro and bigger machines thus train the same one (on one CPU type).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = (n - n_held) // batch_size
        total = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        start = time.perf_counter()
        model.train()
        train_t = torch.from_numpy(train_idx)
        for _ in range(epochs):
            perm = train_t[torch.randperm(len(train_t), generator=gen)]
            for b in range(steps_per_epoch):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                loss = F.mse_loss(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if progress is not None:
                progress(1)
    finally:
        torch.set_num_threads(threads)
    extractor = RegressorKeypoints(model, names)
    held_pred = extractor(x_all[torch.from_numpy(held_idx)])
    heldout = keypoint_mse(held_pred, keypoints[held_idx])
    baseline = keypoint_mse(np.broadcast_to(keypoints[train_idx].mean(0), held_pred.shape), keypoints[held_idx])
    extractor.heldout_mse = heldout
    per_kp = ((held_pred.astype(np.float64) - keypoints[held_idx]) ** 2).mean(axis=(0, 2))
    report = {
        "heldout_mse": heldout,
        "heldout_rmse_pixels": math.sqrt(heldout) * images.shape[1],
        "mean_predictor_mse": baseline,
        "per_keypoint_mse": {name: float(v) for name, v in zip(names, per_kp)},
        "num_train": int(len(train_idx)),
        "num_heldout": int(n_held),
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 2),
        "convention": "mean over images, keypoints and (x, y) of the squared error, keypoints in [0, 1]",
    }
    return extractor, report


def save_regressor(path: str | Path, extractor: RegressorKeypoints, report: dict[str, Any] | None = None) -> None:
    """torch.save the regressor with what rebuilds it; atomic. The report goes in without its training time:
    the file is a DVC output that projections and KPL depend on, so its bytes must change only with the
    regressor (the time stays in reports/details/keypoints/)."""
    m = extractor.model
    save_torch(
        path,
        {
            "format": REGRESSOR_FORMAT,
            "state_dict": m.state_dict(),
            "num_keypoints": m.num_keypoints,
            "resolution": m.resolution,
            "width": m.width,
            "names": list(extractor.names),
            "heldout_mse": extractor.heldout_mse,
            "report": {k: v for k, v in (report or {}).items() if k != "seconds"},
        },
    )


def load_regressor(path: str | Path) -> RegressorKeypoints:
    payload = load_versioned_torch(
        path,
        REGRESSOR_FORMAT,
        "keypoint regressor",
        missing_hint="train it with `pipeline keypoints` (the keypoints stage) first",
        wrong_hint="re-run `pipeline keypoints`",
    )
    model = KeypointRegressor(payload["num_keypoints"], payload["resolution"], payload["width"])
    model.load_state_dict(payload["state_dict"])
    return RegressorKeypoints(model, payload["names"], payload["heldout_mse"])
