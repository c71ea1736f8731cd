"""Image grids for previews and reports (uint8 in, PNG out), with optional keypoint markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.io import atomic_file

MIN_TILE = 64  # small images are enlarged (nearest) so a preview is readable
# Large images are reduced (box filter) to this side: an 8x8 grid of FFHQ's 1024 px tiles would be a
# ~100 MB PNG in git, and a glance at a preview needs no more than this.
MAX_TILE = 256


def image_grid(images: np.ndarray, columns: int, keypoints: np.ndarray | None = None, pad: int = 2) -> Image.Image:
    """Tile uint8 images (N, H, W, 3) into a grid; draw keypoints (N, K, 2) in [0, 1] if given
    (NaN keypoints are skipped)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    scale = max(1, -(-MIN_TILE // max(h, w)))
    th, tw = h * scale, w * scale
    if max(th, tw) > MAX_TILE:
        th, tw = max(1, round(th * MAX_TILE / max(th, tw))), max(1, round(tw * MAX_TILE / max(th, tw)))
    rows = -(-n // columns)
    canvas = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    r = max(1, tw // 64)
    for i in range(n):
        y0, x0 = pad + (i // columns) * (th + pad), pad + (i % columns) * (tw + pad)
        tile = Image.fromarray(np.asarray(images[i]))
        canvas.paste(tile.resize((tw, th), Image.NEAREST if th >= h else Image.BOX), (x0, y0))
        if keypoints is not None:
            for x, y in keypoints[i]:
                if np.isnan(x) or np.isnan(y):  # NaN marks "do not draw"
                    continue
                cx, cy = x0 + x * tw, y0 + y * th
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 0, 0))
    return canvas


def save_grid(path: str | Path, images: np.ndarray, columns: int, keypoints: np.ndarray | None = None) -> None:
    with atomic_file(path) as tmp:
        image_grid(images, columns, keypoints).save(tmp, format="PNG")
