"""Which fields of a stage's record are headline numbers (its DVC metrics file) and which are details
(timings, hashes, curves, per-keypoint errors, options: a plain JSON output beside it)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.io import write_json

Headline = Callable[[str], bool]  # dotted key of a leaf -> is it a headline number?

_SCORE = re.compile(r"^(fd|fid|is)(_.*)?$")


def _score(key: str) -> bool:
    # fd_domain / fid, is_domain / is, UpsampledFID per mode (fd_domain_up2x_<mode>), kimg; not IS's std.
    return key == "kimg" or (_SCORE.match(key) is not None and not key.endswith("_std"))


def _keys(*keys: str) -> Headline:
    return lambda key: key in keys


def _last(*keys: str) -> Headline:
    return lambda key: key.rsplit(".", 1)[-1] in keys


HEADLINE: dict[str, Headline] = {
    "score": _score,
    "prepare": _keys("num_images", "num_classes", "num_bad"),
    "reference": lambda key: key.endswith("_real") or key in ("domain_holdout_accuracy", "num_images"),
    "properties": _keys(
        "kimg",
        "extrapolation_centre_max_abs_error",
        "superres_inr_vs_bicubic_mean_abs",
        "interpolation_params_vs_pixels_mean_abs",
    ),
    "project": _keys("z.loss_mean", "w.loss_mean"),
    "keypoints": _keys("heldout_mse"),
    "kpl_summary": _last("kpl_z", "kpl_w", "kpl_random"),
    # Paper-size cost at 256 px, the resolution of Table 1's cost column; other sizes and counts are details.
    "macs": lambda key: key.endswith(".256.gmacs_true"),
}


def split_record(record: dict[str, Any], headline: Headline, prefix: str = "") -> tuple[dict, dict]:
    """(headline numbers, everything else) of `record`; nested dicts are split leaf by leaf on their dotted
    key, so that merge_records(*split_record(r, h)) == r. Only numbers can be headline: DVC shows any
    other value as one more column."""
    head: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in record.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            h, r = split_record(value, headline, dotted + ".")
            if h:
                head[key] = h
            if r:
                rest[key] = r
        elif headline(dotted) and isinstance(value, (int, float)) and not isinstance(value, bool):
            head[key] = value
        else:
            rest[key] = value
    return head, rest


def merge_records(head: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """The record split_record split, its keys in sorted order as write_json writes them."""
    merged: dict[str, Any] = dict(rest)
    for key, value in head.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_records(value, merged[key])
        elif key in merged:
            raise ValueError(f"field {key!r} is in both the metrics and the details file; re-run the stage")
        else:
            merged[key] = value
    return dict(sorted(merged.items()))


def write_split(metrics: Path, details: Path, record: dict[str, Any], kind: str) -> None:
    """Write `record`'s headline numbers to `metrics` and the rest to `details` (each atomically)."""
    head, rest = split_record(record, HEADLINE[kind])
    write_json(details, rest)
    write_json(metrics, head)


def read_split(metrics: Path, details: Path) -> dict[str, Any]:
    """The whole record of a metrics file and its details file. A metrics file without details (written by
    hand, or by an older run) reads as its headline numbers alone."""
    head = json.loads(Path(metrics).read_text())
    rest = json.loads(Path(details).read_text()) if Path(details).is_file() else {}
    return merge_records(head, rest)
