"""Image grids for previews and reports (uint8 in, PNG out), with optional keypoint markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


LABEL_SIZE = 14  # px of label text: readable beside 64 px tiles


def label_font(size: int = LABEL_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled(grid: Image.Image, title: str | None = None, row_labels: list[str] | None = None) -> Image.Image:
    """`grid` with a title band above it and, for each of its rows of tiles, a label at its left (the rows
    are taken as equally tall). A figure says what it shows without its file name."""
    if not title and not row_labels:
        return grid
    font = label_font()
    measure = ImageDraw.Draw(grid)
    margin = 6 + max((measure.textlength(label, font=font) for label in row_labels or []), default=0)
    left = int(margin) + 6 if row_labels else 0
    top = LABEL_SIZE + 12 if title else 0
    canvas = Image.new("RGB", (grid.width + left, grid.height + top), (255, 255, 255))
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + 4, 5), title, fill=(0, 0, 0), font=font)
    for i, label in enumerate(row_labels or []):
        centre = top + (i + 0.5) * grid.height / len(row_labels)
        draw.text((4, centre), label, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def save_grid(
    path: str | Path,
    images: np.ndarray,
    columns: int,
    keypoints: np.ndarray | None = None,
    *,
    title: str | None = None,
    row_labels: list[str] | None = None,
) -> None:
    """A grid of `images` as PNG, with an optional title and one label per row of tiles."""
    rows = -(-len(images) // columns)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels ({row_labels}) for a grid of {rows} rows; give one per row")
    with atomic_file(path) as tmp:
        labelled(image_grid(images, columns, keypoints), title, row_labels).save(tmp, format="PNG")


def save_panels(
    path: str | Path, panels: list[tuple[str, Path]], title: str, columns: int = 3, width: int = 264
) -> None:
    """Images side by side under a title, each scaled to `width` px wide with its (multi-line) label above
    it: e.g. one table's rows' sample grids. Without panels, the title and a line saying there are none."""
    font = label_font()
    line = LABEL_SIZE + 4
    label_lines = max((label.count("\n") + 1 for label, _ in panels), default=0)
    scaled = []
    for label, image_path in panels:
        with Image.open(image_path) as image:
            image = image.convert("RGB")
            scaled.append((label, image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)))
    columns = max(1, min(columns, len(scaled)))
    cell_h = max((im.height for _, im in scaled), default=0) + label_lines * line + 8
    rows = -(-len(scaled) // columns)
    top = line + 10
    canvas = Image.new(
        "RGB", (max(columns * (width + 8) + 8, 480), top + max(rows * cell_h, line + 8)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill=(0, 0, 0), font=font)
    if not scaled:
        draw.text((8, top), "no rows of this table in this profile's results", fill=(90, 90, 90), font=font)
    for i, (label, image) in enumerate(scaled):
        x, y = 8 + (i % columns) * (width + 8), top + (i // columns) * cell_h
        draw.multiline_text((x, y), label, fill=(0, 0, 0), font=font, spacing=4)
        canvas.paste(image, (x, y + label_lines * line + 4))
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
