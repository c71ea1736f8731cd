"""Measures the prepared formats: bytes per image, preparation cost per image, decode throughput per process."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import DatasetConfig
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import prepare_dataset


def photographs() -> list[Path]:
    """Photographs that ship inside installed packages (scikit-image, scikit-learn, matplotlib): real
    camera images, so PNG sizes are those of photographs rather than of flat or noise images."""
    found: list[Path] = []
    for module, names in (
        ("skimage.data", ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg")),
        ("sklearn.datasets", ("images/china.jpg", "images/flower.jpg")),
        ("matplotlib", ("mpl-data/sample_data/grace_hopper.jpg",)),
    ):
        try:
            base = Path(__import__(module, fromlist=["_"]).__file__).parent
        except ImportError:
            continue
        found += [base / n for n in names if (base / n).exists()]
    if not found:
        raise RuntimeError("no photographs found (scikit-image, scikit-learn or matplotlib sample data)")
    return found


def photo_crops(n: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    """`n` random crops (half to all of the shorter side, mirrored at random) of the photographs,
    resized to `size` (W, H) with Lanczos."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in photographs()]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        cw, ch = (side, int(side * size[1] / size[0])) if size[0] >= size[1] else (int(side * size[0] / size[1]), side)
        cw, ch = min(cw, w), min(ch, h)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch)).resize(size, Image.LANCZOS)
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def _median_rate(fn, n: int, repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def bench_formats(n: int = 48, repeats: int = 5, seed: int = 0) -> dict:
    """Prepare `n` photograph crops from LSUN-like sources (WebP, 341 x 256, Lanczos to 256) and FFHQ-like
    ones (PNG 1024, box to 256 and kept at 1024) into both formats with one process; report bytes per
    image, preparation seconds per image (median of `repeats`) and 256 px decode throughput of one
    process reading the prepared dataset (img/s, median of `repeats`)."""
    torch_threads = _one_thread()
    sources = {
        "lsun_like_256": ((341, 256), "WEBP", 256, "lanczos"),
        "ffhq_like_256": ((1024, 1024), "PNG", 256, "box"),
        "ffhq_like_1024": ((1024, 1024), "PNG", 1024, "box"),
    }
    results: dict = {"n": n, "repeats": repeats, "torch_threads": torch_threads, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        made: dict[tuple, Path] = {}
        for case, (size, fmt, res, filt) in sources.items():
            src = made.get((size, fmt))
            if src is None:
                src = made[(size, fmt)] = Path(tmp) / f"src_{size[0]}_{fmt}"
                src.mkdir()
                for i, img in enumerate(photo_crops(n, size, seed)):
                    img.save(src / f"{i:05d}.{fmt.lower()}", format=fmt, **({"quality": 90} if fmt == "WEBP" else {}))
            row: dict = {"source_bytes_per_image": sum(p.stat().st_size for p in src.iterdir()) // n}
            for out_fmt in ("npy", "zip"):
                cfg = DatasetConfig(source="folder", path=src, resolution=res, filter=filt, format=out_fmt)
                out = Path(tmp) / f"{case}_{out_fmt}"
                secs = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    prepare_dataset(cfg, out, chunk_size=16)
                    secs.append((time.perf_counter() - t0) / n)
                size_bytes = (out / f"images.{out_fmt}").stat().st_size
                row[out_fmt] = {
                    "bytes_per_image": round(size_bytes / n),
                    "prepare_ms_per_image": round(1000 * statistics.median(secs), 2),
                }
                if res == 256:
                    ds = PreparedDataset(out)
                    rate, rates = _median_rate(lambda ds=ds: [ds[i] for i in range(len(ds))], n, repeats)
                    row[out_fmt]["read_img_per_s_one_process"] = round(rate, 1)
                    row[out_fmt]["read_img_per_s_rounds"] = [round(r, 1) for r in rates]
            results["cases"][case] = row
    return results


def _one_thread() -> int:
    # One thread per process, as in a DataLoader worker: the figure is per worker process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    return torch.get_num_threads()
