"""Dataset preparation: decode, centre-crop, resize with a recorded filter, write one prepared format.

The prepared format, read by `PreparedDataset`, is a folder holding
  images.npy     uint8 (N, S, S, 3), RGB, memory-mappable
  labels.npy     int64 (N,), class index (0 when the source has no classes)
  keypoints.npy  float32 (N, K, 2), (x, y) in [0, 1]; only for sources with ground-truth keypoints
  meta.json      source, resolution, filter, counts, class and keypoint names, channel statistics
It is written into a temporary folder that replaces the output in one rename at the end, so an
interrupted or failed preparation leaves nothing behind. meta.json holds no timings: the folder is a
DVC dependency of later stages, and preparing the same data again must give the same bytes.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import DatasetConfig
from pipeline.data import synthetic_faces
from pipeline.data.sources import (
    IMAGE_EXTENSIONS,
    FolderSource,
    ImageSource,
    LSUN10Source,
    LSUNSource,
    RawImage,
    ZipSource,
)
from pipeline.io import atomic_dir, check_free_space, no_space_as_error, preallocate

RESAMPLE = {"box": Image.BOX, "lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
MAX_BAD_NAMES_REPORTED = 20
# A source image whose shorter side is below resolution / TINY_FACTOR becomes a nearly flat upscale.
TINY_FACTOR = 4


class PrepareError(ValueError):
    """Preparation cannot produce a trustworthy dataset; nothing was written."""


class UnsupportedImage(ValueError):
    """An image decodes, but into pixel values that have no faithful 8-bit RGB form."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits (Pillow's convert("RGB") clips it to 255: nearly white)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImage(f"32-bit integer pixels (mode {img.mode}, values {values.min()}..{values.max()})")
        return Image.fromarray(np.round(values.astype(np.float64) / 257.0).astype(np.uint8), mode="L")
    if img.mode == "F":
        raise UnsupportedImage("floating-point pixels (mode F), whose range is not defined")
    return img


def crop_and_resize(img: Image.Image, resolution: int, filter: str) -> np.ndarray:
    """Centre-crop to a square on the shorter side, then resize to `resolution` with `filter`."""
    img = _to_8bit(img).convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), RESAMPLE[filter])
    return np.asarray(img, dtype=np.uint8)


@dataclass
class Chunk:
    images: np.ndarray
    labels: np.ndarray
    keypoints: np.ndarray | None
    bad: list[str]
    tiny: list[str]  # "name (W x H)" of images upscaled by more than TINY_FACTOR


def _decode_chunk(args: tuple[list[RawImage], int, str]) -> Chunk:
    raws, resolution, filter = args
    images, labels, bad, tiny = [], [], [], []
    for raw in raws:
        try:
            with Image.open(io.BytesIO(raw.data)) as img:
                images.append(crop_and_resize(img, resolution, filter))
                size = img.size
            labels.append(raw.label)
        except UnsupportedImage as err:
            raise PrepareError(
                f"image '{raw.name}' has {err}; convert it to 8-bit RGB (or remove it) and prepare again. "
                "Nothing was written."
            ) from None
        except Exception:  # noqa: BLE001 - any decoder failure means a corrupt file, counted below
            bad.append(raw.name)
            continue
        if min(size) * TINY_FACTOR < resolution:
            tiny.append(f"{raw.name} ({size[0]} x {size[1]})")
    arr = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return Chunk(arr, np.asarray(labels, np.int64), None, bad, tiny)


def _render_chunk(args: tuple[int, int, int, int]) -> Chunk:
    start, stop, resolution, seed = args
    batch = synthetic_faces.render_faces(np.arange(start, stop), resolution, seed)
    return Chunk(batch.images, batch.labels, batch.keypoints, [], [])


def open_source(cfg: DatasetConfig) -> ImageSource:
    """The raw reader for a dataset's source (not used for synthetic faces)."""
    by_subfolder = cfg.labels == "subfolders"
    if cfg.source == "folder":
        return FolderSource(cfg.path, by_subfolder, cfg.num_images)
    if cfg.source == "zip":
        return ZipSource(cfg.path, by_subfolder, cfg.num_images)
    if cfg.source == "lsun":
        return LSUNSource(cfg.path, limit=cfg.num_images)
    if cfg.source == "lsun10":
        return LSUN10Source(cfg.categories, cfg.per_category, cfg.num_images)
    raise ValueError(f"source {cfg.source!r} has no raw reader")


def _batched(it: Iterator[RawImage], size: int) -> Iterator[list[RawImage]]:
    batch: list[RawImage] = []
    for item in it:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _plan(cfg: DatasetConfig, chunk_size: int) -> tuple[int, Iterator, Callable, list[str], list[str]]:
    """(candidates, work items, worker function, class names, keypoint names) for a dataset."""
    if cfg.source == "synthetic_faces":
        n = cfg.num_images
        work = ((s, min(s + chunk_size, n), cfg.resolution, cfg.seed) for s in range(0, n, chunk_size))
        classes = [
            "/".join(f"{a}={v}" for a, v in zip(synthetic_faces.ATTRIBUTES, combo))
            for combo in _attribute_combinations()
        ]
        return n, work, _render_chunk, classes, list(synthetic_faces.KEYPOINT_NAMES)
    source = open_source(cfg)
    work = ((batch, cfg.resolution, cfg.filter) for batch in _batched(iter(source), chunk_size))
    return len(source), work, _decode_chunk, source.class_names, []


def _attribute_combinations() -> list[tuple[str, ...]]:
    # Mixed-radix order of synthetic_faces labels: the first attribute is the most significant digit.
    combos: list[tuple[str, ...]] = [()]
    for values in synthetic_faces.ATTRIBUTES.values():
        combos = [c + (v,) for c in combos for v in values]
    return combos


def prepare_dataset(
    cfg: DatasetConfig,
    out_dir: str | Path,
    *,
    chunk_size: int = 512,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Prepare one dataset into `out_dir` (replaced atomically) and return its statistics: meta.json's
    plus `seconds`, the time it took (kept out of meta.json, which must not change between runs).

    Unreadable images are skipped, counted and named in a warning; if more than
    `cfg.max_bad_fraction` of the candidates are unreadable, or none is readable, PrepareError is
    raised and `out_dir` is left as it was. Images far smaller than the resolution are counted and
    named in a warning. A disk without room for the output raises NoSpaceLeft before any image is
    decoded (the space is reserved up front), leaving `out_dir` as it was."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    candidates, work, worker, class_names, keypoint_names = _plan(cfg, chunk_size)
    if candidates == 0:
        raise PrepareError(
            f"{cfg.source} source {', '.join(map(str, cfg.source_paths()))} holds no images "
            f"(looked for files ending in {', '.join(IMAGE_EXTENSIONS)})"
        )
    max_bad = int(cfg.max_bad_fraction * candidates)
    s = cfg.resolution
    image_bytes = candidates * s * s * 3
    # labels and keypoints are saved at the end; 1 MiB covers the headers and meta.json
    check_free_space(out_dir, image_bytes + candidates * (8 + 8 * len(keypoint_names)) + (1 << 20))
    with no_space_as_error(out_dir), atomic_dir(out_dir) as tmp:
        images = _ImageWriter(tmp / "images.npy", (s, s, 3), candidates, out_dir)
        labels = np.zeros(candidates, np.int64)
        keypoints = np.zeros((candidates, len(keypoint_names), 2), np.float32) if keypoint_names else None
        channel_sum = np.zeros(3, np.float64)
        channel_sq = np.zeros(3, np.float64)
        bad: list[str] = []
        tiny: list[str] = []
        n = 0
        pool = get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(worker, work) if pool else map(worker, work)
            for chunk in results:
                k = len(chunk.images)
                images.append(chunk.images)
                labels[n : n + k] = chunk.labels
                if keypoints is not None:
                    keypoints[n : n + k] = chunk.keypoints
                pixels = chunk.images.reshape(-1, 3).astype(np.float64)
                channel_sum += pixels.sum(0)
                channel_sq += (pixels**2).sum(0)
                n += k
                bad.extend(chunk.bad)
                tiny.extend(chunk.tiny)
                if len(bad) > max_bad:
                    raise PrepareError(
                        f"{len(bad)} unreadable images among the first {n + len(bad)} of {candidates}, more than "
                        f"max_bad_fraction={cfg.max_bad_fraction} allows ({max_bad}); first ones: {', '.join(bad[:5])}. "
                        f"Fix or remove them, or raise "
                        f"max_bad_fraction in params.yaml. Nothing was written."
                    )
                if progress:
                    progress(n + len(bad), candidates)
        finally:
            if pool:
                pool.terminate()
            images.close()
        if n == 0:
            raise PrepareError(
                f"none of the {candidates} images of {cfg.source_paths()} could be decoded; nothing was written"
            )
        images.finish()
        np.save(tmp / "labels.npy", labels[:n])
        if keypoints is not None:
            np.save(tmp / "keypoints.npy", keypoints[:n])
        mean = channel_sum / (n * s * s)
        std = np.sqrt(np.maximum(channel_sq / (n * s * s) - mean**2, 0.0))
        stats = {
            "source": cfg.source,
            "resolution": s,
            "filter": cfg.filter,
            "num_images": n,
            "num_candidates": candidates,
            "num_bad": len(bad),
            "bad_names": bad[:MAX_BAD_NAMES_REPORTED],
            "num_tiny": len(tiny),
            "tiny_names": tiny[:MAX_BAD_NAMES_REPORTED],
            "num_classes": max(len(class_names), 1),
            "class_names": class_names,
            "class_counts": np.bincount(labels[:n], minlength=max(len(class_names), 1)).tolist(),
            "keypoint_names": keypoint_names,
            "channel_mean": [round(float(x), 4) for x in mean],
            "channel_std": [round(float(x), 4) for x in std],
        }
        (tmp / "meta.json").write_text(json.dumps(stats, indent=2) + "\n")
    if bad:
        shown = ", ".join(bad[:MAX_BAD_NAMES_REPORTED])
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {candidates}: {shown}", stacklevel=2)
    if tiny:
        shown = ", ".join(tiny[:MAX_BAD_NAMES_REPORTED])
        warnings.warn(
            f"{len(tiny)} image(s) of {candidates} have a side under 1/{TINY_FACTOR} of the resolution {s} and were "
            f"upscaled into nearly flat images (counted as num_tiny in meta.json): {shown}. Remove them or lower the "
            f"resolution if they are not meant to be there.",
            stacklevel=2,
        )
    return {**stats, "seconds": round(time.perf_counter() - t0, 3)}


class _ImageWriter:
    """images.npy written with plain file writes into space reserved up front.

    Not a memory map: a write to a mapped page that the filesystem cannot back (a full disk, a sparse
    file) kills the process with SIGBUS, leaving no message and a partial temporary; file writes raise
    OSError instead. The header is written for `capacity` images; `finish` rewrites it for the images
    appended (numpy pads the first axis to a fixed width, so the header keeps its length) and cuts the
    file there."""

    def __init__(self, path: Path, image_shape: tuple[int, ...], capacity: int, report_path: Path):
        self.path, self.image_shape, self.n = path, image_shape, 0
        self.file = open(path, "wb")
        self.file.write(self._header(capacity))
        self.offset = self.file.tell()
        self.image_bytes = int(np.prod(image_shape))
        preallocate(self.file.fileno(), self.offset + capacity * self.image_bytes, report_path)

    def _header(self, n: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": "|u1", "fortran_order": False, "shape": (n, *self.image_shape)}
        )
        return buf.getvalue()

    def append(self, images: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(images, np.uint8).tobytes())
        self.n += len(images)

    def close(self) -> None:
        self.file.close()

    def finish(self) -> None:
        header = self._header(self.n)
        if len(header) != self.offset:
            raise RuntimeError(
                f"numpy wrote an .npy header of {len(header)} bytes for {self.n} images, {self.offset} for the capacity"
            )
        with open(self.path, "r+b") as f:
            f.write(header)
            f.truncate(self.offset + self.n * self.image_bytes)
