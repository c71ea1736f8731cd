"""Dataset preparation: decode, centre-crop, resize with a recorded filter, write one prepared format.

The prepared format, read by `PreparedDataset`, is a folder holding
  images.npy     uint8 (N, S, S, 3), RGB, memory-mappable (`format: npy`), or
  images.zip     the StyleGAN2-ADA dataset layout (`format: zip`): PNGs named 00000/img00000000.png
                 and dataset.json {"labels": [[name, label], ...]} (null without classes), which the
                 authors' own training code reads as it is
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
import re
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    balanced_quotas,
    short_classes,
)
from pipeline.io import atomic_dir, check_free_space, no_space_as_error, preallocate, sigterm_as_exit

RESAMPLE = {"box": Image.BOX, "lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
MAX_BAD_NAMES_REPORTED = 20
# Chunks handed to worker processes and not yet written, per worker: enough to keep every worker busy
# while the main process writes, few enough that memory stays a small multiple of one chunk.
INFLIGHT_PER_WORKER = 2
# zlib level of the zip format's PNGs: Pillow's default. On photograph crops (`pipeline bench-prepare`)
# it gave 8% (256 px) to 15% (1024 px) fewer bytes than level 1 for 3.5-4.5x the encoding time, paid
# once at preparation; decoding costs the same. (StyleGAN2-ADA's dataset_tool stores level 0.)
PNG_COMPRESS_LEVEL = 6
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same data gives the same zip bytes
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
    images: np.ndarray | None  # uint8 (k, S, S, 3) for the npy format
    pngs: list[bytes] | None  # encoded images for the zip format
    labels: np.ndarray
    keypoints: np.ndarray | None
    bad: list[str]  # "name (reason)" of images that could not be decoded
    tiny: list[str]  # "name (W x H)" of images upscaled by more than TINY_FACTOR
    histogram: np.ndarray  # int64 (3, 256): how often each channel takes each value, for exact statistics

    def __len__(self) -> int:
        return len(self.labels)


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """int64 (3, 256) counts of each 8-bit value per channel of uint8 (k, H, W, 3) images.

    Integers, so chunks merge exactly in any order (the sums of their float64 means would not), and
    computed one image at a time, so its memory is 2 bytes per pixel of one image, not float64
    copies of the chunk."""
    offset = np.arange(3, dtype=np.uint16) * 256
    hist = np.zeros(3 * 256, np.int64)
    for img in images:
        hist += np.bincount((img.reshape(-1, 3) + offset).ravel(), minlength=3 * 256)
    return hist.reshape(3, 256)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _finish_chunk(
    images: np.ndarray, labels, keypoints: np.ndarray | None, bad: list[str], tiny: list[str], fmt: str
) -> Chunk:
    # Runs in the worker: the statistics and the PNG encoding are the costly parts, so they scale with workers.
    hist = channel_histogram(images)
    if fmt == "zip":
        return Chunk(None, [encode_png(im) for im in images], np.asarray(labels, np.int64), keypoints, bad, tiny, hist)
    return Chunk(images, None, np.asarray(labels, np.int64), keypoints, bad, tiny, hist)


def _reason(err: Exception) -> str:
    """Why an image could not be decoded, in words that are the same on every run (meta.json keeps them)."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image in a format Pillow reads"
    text = re.sub(r" at 0x[0-9a-f]+", "", str(err).splitlines()[0] if str(err) else "")
    return f"{type(err).__name__}: {text}"[:120] if text else type(err).__name__


def _decode_chunk(args: tuple[list[RawImage], int, str, str]) -> Chunk:
    raws, resolution, filter, fmt = args
    images, labels, bad, tiny = [], [], [], []
    for raw in raws:
        try:
            with Image.open(io.BytesIO(raw.data)) as img:
                # as a viewer shows it: phone and camera JPEGs store pixels sideways with an EXIF orientation
                upright = ImageOps.exif_transpose(img)
                images.append(crop_and_resize(upright, resolution, filter))
                size = upright.size
            labels.append(raw.label)
        except UnsupportedImage as err:
            raise PrepareError(
                f"image '{raw.name}' has {err}; convert it to 8-bit RGB (or remove it) and prepare again. "
                "Nothing was written."
            ) from None
        except Exception as err:  # noqa: BLE001 - any decoder failure means a corrupt file, counted below
            bad.append(f"{raw.name} ({_reason(err)})")
            continue
        if min(size) * TINY_FACTOR < resolution:
            tiny.append(f"{raw.name} ({size[0]} x {size[1]})")
    arr = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return _finish_chunk(arr, labels, None, bad, tiny, fmt)


def _render_chunk(args: tuple[int, int, int, int, str]) -> Chunk:
    start, stop, resolution, seed, fmt = args
    batch = synthetic_faces.render_faces(np.arange(start, stop), resolution, seed)
    return _finish_chunk(batch.images, batch.labels, batch.keypoints, [], [], fmt)


def _bounded_imap(pool, worker: Callable, work: Iterable, max_inflight: int) -> Iterator[Chunk]:
    """pool.imap with backpressure: at most `max_inflight` work items are taken from `work` and not yet
    yielded (Pool.imap reads its whole input at once and queues every result, so the decoded dataset
    would pile up in this process whenever writing is slower than decoding)."""
    items = iter(work)
    pending: deque = deque()

    def submit() -> None:
        for item in items:
            pending.append(pool.apply_async(worker, (item,)))
            return

    for _ in range(max_inflight):
        submit()
    while pending:
        chunk = pending.popleft().get()
        submit()
        yield chunk


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


# Bytes per pixel of the zip format's PNGs measured by `pipeline bench-prepare` on photograph crops
# (docs/benchmarks.md, "Prepared formats"): 256 px 1.34 (LSUN-like) to 1.56 (FFHQ-like), 1024 px 0.91.
# Used only to estimate a zip's size before preparing it; real photographs may differ.
ZIP_BYTES_PER_PIXEL = {256: 1.45, 1024: 0.91}


def estimated_bytes_per_image(cfg: DatasetConfig) -> int:
    """Bytes one prepared image takes: exact for the array, a measured estimate for the zip."""
    pixels = cfg.resolution * cfg.resolution
    if cfg.format == "npy":
        return pixels * 3
    nearest = min(ZIP_BYTES_PER_PIXEL, key=lambda r: abs(r - cfg.resolution))
    return round(pixels * ZIP_BYTES_PER_PIXEL[nearest])


# Published image counts of the paper's sources, by how their path ends: what a dry run expects for a
# source not downloaded yet. LSUN: the train lmdbs' entries (LSUN's README); FFHQ: 70,000;
# MiniImageNet-100: 100 classes x 1k images as paper.md describes it.
PUBLISHED_SIZES = {
    "bedroom_train_lmdb": 3_033_042,
    "bridge_train_lmdb": 818_687,
    "church_outdoor_train_lmdb": 126_227,
    "classroom_train_lmdb": 168_103,
    "conference_room_train_lmdb": 229_069,
    "dining_room_train_lmdb": 657_571,
    "kitchen_train_lmdb": 2_212_277,
    "living_room_train_lmdb": 1_315_802,
    "restaurant_train_lmdb": 626_331,
    "tower_train_lmdb": 708_264,
    "ffhq/images1024x1024": 70_000,
    "ffhq/images1024x1024.zip": 70_000,
    "miniimagenet/train": 100_000,
}


def _published_size(path: Path) -> int | None:
    posix = path.as_posix().rstrip("/")
    return next((n for key, n in PUBLISHED_SIZES.items() if posix == key or posix.endswith("/" + key)), None)


def _limit(n: int | None, limit: int | None) -> int | None:
    return n if n is None or limit is None else min(n, limit)


def _class_subset(class_names: list[str], counts: list[int] | None, limit: int | None) -> dict:
    """The dry run's view of a limited source with classes: images kept per class, and the classes too
    small for an equal share (the others took their surplus). Empty without a limit or classes."""
    if counts is None or limit is None:
        return {}
    quotas = balanced_quotas(counts, limit)
    return {"class_quotas": dict(zip(class_names, quotas)), "short_classes": short_classes(class_names, counts, limit)}


def describe_plan(cfg: DatasetConfig) -> dict:
    """What preparing `cfg` would do, without decoding anything: every missing source path, the number
    of images (counted in the sources that exist; `num_images_exact` False where part of it comes from
    the params' limits because a source is missing), the expected output size and, for a source with
    classes and num_images, the images kept per class (`class_quotas`) and the classes too small for an
    equal share (`short_classes`)."""
    missing = cfg.missing_sources()
    subset: dict = {}
    if cfg.source == "synthetic_faces":
        n, exact = cfg.num_images, True
    elif not missing:
        source = open_source(cfg)
        n, exact = len(source), True
        subset = _class_subset(source.class_names, source.class_counts(), cfg.num_images)
    elif cfg.source == "lsun10":
        # the present categories are counted; a missing one holds its published size, or per_category
        counts = [
            _limit(_published_size(p) or cfg.per_category, cfg.per_category)
            if p in missing
            else len(LSUNSource(p, limit=cfg.per_category))
            for p in cfg.source_paths()
        ]
        n, exact = _limit(sum(counts), cfg.num_images), False
        subset = _class_subset(list(cfg.categories), counts, cfg.num_images)
    else:
        n, exact = _limit(_published_size(cfg.path), cfg.num_images) or cfg.num_images, False
    return {
        "source": cfg.source,
        "format": cfg.format,
        "missing_paths": [str(p) for p in missing],
        "num_images": n,
        "num_images_exact": exact,
        "output_bytes": None if n is None else n * estimated_bytes_per_image(cfg),
        "output_bytes_exact": exact and cfg.format == "npy",
        **subset,
    }


def _batched(it: Iterator[RawImage], size: int) -> Iterator[list[RawImage]]:
    batch: list[RawImage] = []
    for item in it:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _plan(cfg: DatasetConfig, chunk_size: int) -> tuple[int, Iterator, Callable, list[str], list[str], list[str]]:
    """(candidates, work items, worker function, class names, keypoint names, classes too small for an
    equal share of num_images) for a dataset."""
    if cfg.source == "synthetic_faces":
        n = cfg.num_images
        work = ((s, min(s + chunk_size, n), cfg.resolution, cfg.seed, cfg.format) for s in range(0, n, chunk_size))
        classes = [
            "/".join(f"{a}={v}" for a, v in zip(synthetic_faces.ATTRIBUTES, combo))
            for combo in _attribute_combinations()
        ]
        return n, work, _render_chunk, classes, list(synthetic_faces.KEYPOINT_NAMES), []
    source = open_source(cfg)
    work = ((batch, cfg.resolution, cfg.filter, cfg.format) for batch in _batched(iter(source), chunk_size))
    counts = source.class_counts()
    short = [] if counts is None else short_classes(source.class_names, counts, source.limit)
    return len(source), work, _decode_chunk, source.class_names, [], short


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
    candidates, work, worker, class_names, keypoint_names, short = _plan(cfg, chunk_size)
    if candidates == 0:
        raise PrepareError(
            f"{cfg.source} source {', '.join(map(str, cfg.source_paths()))} holds no images "
            f"(looked for files ending in {', '.join(IMAGE_EXTENSIONS)})"
        )
    max_bad = int(cfg.max_bad_fraction * candidates)
    s = cfg.resolution
    # labels and keypoints are saved at the end; 1 MiB covers the headers and meta.json. A zip's size is
    # not known before its PNGs are encoded, so only the array reserves its space up front.
    image_bytes = candidates * s * s * 3 if cfg.format == "npy" else 0
    check_free_space(out_dir, image_bytes + candidates * (8 + 8 * len(keypoint_names)) + (1 << 20))
    with sigterm_as_exit(), no_space_as_error(out_dir), atomic_dir(out_dir) as tmp:
        if cfg.format == "zip":
            images: _ImageWriter | _ZipWriter = _ZipWriter(tmp / "images.zip")
        else:
            images = _ImageWriter(tmp / "images.npy", (s, s, 3), candidates, out_dir)
        labels = np.zeros(candidates, np.int64)
        keypoints = np.zeros((candidates, len(keypoint_names), 2), np.float32) if keypoint_names else None
        histogram = np.zeros((3, 256), np.int64)
        bad: list[str] = []
        tiny: list[str] = []
        n = 0
        pool = get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = _bounded_imap(pool, worker, work, INFLIGHT_PER_WORKER * workers) if pool else map(worker, work)
            for chunk in results:
                k = len(chunk)
                images.append(chunk)
                labels[n : n + k] = chunk.labels
                if keypoints is not None:
                    keypoints[n : n + k] = chunk.keypoints
                histogram += chunk.histogram
                n += k
                bad.extend(chunk.bad)
                tiny.extend(chunk.tiny)
                del chunk  # before the next one arrives: at most one received chunk is held here
                if len(bad) > max_bad:
                    raise PrepareError(
                        f"{len(bad)} unreadable images among the first {n + len(bad)} of {candidates}, more than "
                        f"max_bad_fraction={cfg.max_bad_fraction} allows ({max_bad}); first ones: {', '.join(bad[:5])}. "
                        f"Fix or remove them, or raise "
                        f"max_bad_fraction in params.yaml. Nothing was written."
                    )
                if progress:
                    progress(n + len(bad), candidates)
        except BaseException:
            images.close()
            raise
        finally:
            if pool:
                pool.terminate()
        if n == 0:
            images.close()
            raise PrepareError(
                f"none of the {candidates} images of {cfg.source_paths()} could be decoded; nothing was written"
            )
        has_classes = len(class_names) > 1 or cfg.labels == "subfolders" or cfg.source == "synthetic_faces"
        images.finish(labels[:n] if has_classes else None)
        np.save(tmp / "labels.npy", labels[:n])
        if keypoints is not None:
            np.save(tmp / "keypoints.npy", keypoints[:n])
        values = np.arange(256, dtype=np.float64)
        # Exact integer sums as float64 (below 2**53 up to ~10**11 images at 1024 px): the same numbers
        # whatever the chunking or the number of workers.
        channel_sum = histogram.astype(np.float64) @ values
        channel_sq = histogram.astype(np.float64) @ (values**2)
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
        if cfg.format != "npy":  # absent for the array, so the folders prepared before formats existed keep their bytes
            stats["format"] = cfg.format
        (tmp / "meta.json").write_text(json.dumps(stats, indent=2) + "\n")
    if short:
        warnings.warn(
            f"num_images={cfg.num_images}: {len(short)} class(es) hold fewer images than an equal share and were "
            f"taken whole, the other classes taking their surplus: {', '.join(short[:MAX_BAD_NAMES_REPORTED])} "
            "(class_counts in meta.json has what each class gave)",
            stacklevel=2,
        )
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

    def append(self, chunk: Chunk) -> None:
        # memoryview, not tobytes(): no second copy of the chunk
        self.file.write(np.ascontiguousarray(chunk.images, np.uint8).data)
        self.n += len(chunk.images)

    def close(self) -> None:
        self.file.close()

    def finish(self, labels: np.ndarray | None = None) -> None:
        # Skipped images only shorten the file: the header is rewritten in place and the reserved tail
        # cut off, never a second copy of the array.
        self.file.close()
        header = self._header(self.n)
        if len(header) != self.offset:
            raise RuntimeError(
                f"numpy wrote an .npy header of {len(header)} bytes for {self.n} images, {self.offset} for the capacity"
            )
        with open(self.path, "r+b") as f:
            f.write(header)
            f.truncate(self.offset + self.n * self.image_bytes)


def zip_member_name(index: int) -> str:
    """StyleGAN2-ADA's naming: folders of 1000 images, so no folder of the zip grows large."""
    return f"{index // 1000:05d}/img{index:08d}.png"


class _ZipWriter:
    """images.zip in the StyleGAN2-ADA dataset layout, PNGs stored uncompressed in the zip (they are
    compressed already) so a reader can seek to any member, with fixed member dates for equal bytes."""

    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        self.n = 0

    def _write(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, data)

    def append(self, chunk: Chunk) -> None:
        for png in chunk.pngs or []:
            self._write(zip_member_name(self.n), png)
            self.n += 1

    def finish(self, labels: np.ndarray | None) -> None:
        listed = None if labels is None else [[zip_member_name(i), int(v)] for i, v in enumerate(labels)]
        self._write("dataset.json", json.dumps({"labels": listed}).encode())
        self.zip.close()

    def close(self) -> None:
        self.zip.close()
