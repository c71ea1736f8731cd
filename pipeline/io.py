"""Atomic file and folder writes, so an interrupted stage never leaves a half-written output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    # A sibling in the same folder: rename() is atomic only within one filesystem.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    tmp = _tmp_sibling(path, path.suffix)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces the folder `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            # Move the old folder aside first so the new one appears in a single rename.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, keys sorted so diffs between runs are readable."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def save_torch(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` atomically."""
    import torch  # here, not at the top: configuration code imports this module without needing torch

    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_versioned_torch(path: str | Path, version: int, what: str, missing_hint: str, wrong_hint: str) -> dict[str, Any]:
    """The dict that save_torch wrote with {"format": version}; tensors and plain values only
    (weights_only). A missing file raises FileNotFoundError and another format ValueError, each
    naming the file, `what` it should be and the hint that says how to make it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist; {missing_hint}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != version:
        raise ValueError(f"'{path}' is not a {what} of format {version}; {wrong_hint}")
    return payload
