"""Checkpoints: a network snapshot (G, G_ema, D; for sampling and scoring) apart from the training
state (everything a resumed run needs), plus optional kept G_ema-only snapshots along the way (for
score-vs-kimg curves). All are plain `torch.save` files written atomically.

torch.load does not verify the data it reads (a flipped byte loads silently), so loading first checks
every stored CRC32 of the zip container torch.save writes; a damaged file raises CheckpointError
naming it and is left untouched for the user to inspect."""

from __future__ import annotations

import random
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.io import save_torch

NETWORK_SNAPSHOT = "network-snapshot.pt"
TRAINING_STATE = "training-state.pt"
KEPT_SNAPSHOTS_DIR = "snapshots"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` with torch.save; readers see the old file or the new one, never half of one, and
    equal payloads give equal bytes (pipeline.io.save_torch)."""
    save_torch(path, {"format": FORMAT_VERSION, **payload})


def kept_snapshot_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / KEPT_SNAPSHOTS_DIR / f"snapshot-{step:07d}.pt"


def kept_snapshot_files(run_dir: str | Path) -> dict[int, Path]:
    """step -> kept snapshot of a run, in step order (empty when the run kept none)."""
    files = (Path(run_dir) / KEPT_SNAPSHOTS_DIR).glob("snapshot-*.pt")
    found = {int(p.stem.removeprefix("snapshot-")): p for p in files if p.stem.removeprefix("snapshot-").isdigit()}
    return dict(sorted(found.items()))


def verify_checkpoint(path: str | Path) -> None:
    """Raise CheckpointError unless `path` is a complete torch.save file whose CRCs all match."""
    path = Path(path)
    advice = f"it was left as it is; move or delete '{path}' to start over (or pass --no-resume), or restore a copy"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated ({err}); {advice}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint '{path}' is corrupt: member '{bad}' fails its CRC check; {advice}")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: Collection[str] = ()
) -> dict[str, Any]:
    """Verify, then load a checkpoint written by save_checkpoint (tensors, numbers, strings only);
    raise CheckpointError when it lacks any of the `required` keys."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({err}); it was left as it is") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' is not a training checkpoint of format {FORMAT_VERSION} (got {type(payload).__name__}); it was left as it is"
        )
    missing = sorted(set(required) - set(payload))
    if missing:
        raise CheckpointError(
            f"checkpoint '{path}' lacks {', '.join(map(repr, missing))} (it holds {', '.join(map(repr, sorted(payload)))}): it was not "
            "written by this pipeline's training, or by an older version; it was left as it is; move it away and re-train the row"
        )
    return payload


def capture_rng() -> dict[str, Any]:
    """This process's random generators, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
