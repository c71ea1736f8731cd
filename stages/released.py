"""Import stage: one of the authors' released network pickles -> runs/<row>/network-snapshot.pt of a `released` row.

The snapshot has the layout the train stage writes (G_ema, options, info, step, kimg; see
pipeline/train/checkpoint.py), so score, project and kpl read it as any trained row's. `info` says where it
came from: source 'imported', the pickle's path and sha256, and the authors' training_set_kwargs. Nothing
is written unless every step succeeds: the pickle is read without running any of its code
(pipeline.models.released), its G_ema converted and loaded into the row's generator, and the snapshot
written to a temporary file that replaces the old one in a single rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, Params, ReleasedConfig
from pipeline.io import sha256_file, write_text
from pipeline.train.checkpoint import NETWORK_SNAPSHOT, save_checkpoint
from pipeline.train.loop import PLOT_COLUMNS
from stages import paths

SOURCE = "imported"


def released_config(params: Params, row: str) -> ReleasedConfig:
    released = params.row(row).released
    if released is None:
        raise ConfigError(
            f"row {row!r} has no `released` section: it is trained, not imported; run `pipeline train --row {row}`, "
            "or add rows.<row>.released (pickle, url, published_fid) for one of the authors' checkpoints"
        )
    return released


def pickle_path(params: Params, row: str, root: Path = Path("."), override: Path | None = None) -> Path:
    """The row's .pkl (or `override`), which must exist; its absence names the file and where to get it."""
    released = released_config(params, row)
    path = override if override is not None else root / released.pickle
    if not path.is_file():
        raise FileNotFoundError(
            f"row {row!r} imports '{path}', which does not exist (the authors' weights cannot be downloaded here); "
            f"download {released.url} and save it as '{root / released.pickle}', then re-run `pipeline import --row {row}`"
        )
    return path


def run(params: Params, row: str, root: Path = Path("."), pickle: Path | None = None) -> dict[str, Any]:
    """Import `row`'s pickle (or `pickle`) into runs/<row>/network-snapshot.pt; return the snapshot's info."""
    import torch

    from pipeline.models.registry import build_generator, parse_generator_spec
    from pipeline.models.released import (
        ReleasedPickleError,
        convert_state_dict,
        read_network_pickle,
        record_state_dict,
    )

    cfg = params.row(row)
    released = released_config(params, row)
    path = pickle_path(params, row, root, pickle)
    digest = sha256_file(path)
    if released.sha256 is not None and digest != released.sha256.lower():
        raise ReleasedPickleError(
            f"'{path}' has sha256 {digest}, but rows.{row}.released.sha256 says {released.sha256}: it is another file "
            f"or a damaged download; download {released.url} again (or correct the sha256 in params.yaml)"
        )
    network = read_network_pickle(path)
    spec = parse_generator_spec(cfg.generator)
    generator = build_generator(spec)
    state = convert_state_dict(generator, record_state_dict(network.modules["G_ema"]), f"'{path}' (row {row!r})")
    generator.load_state_dict(state)  # the converted dict is exactly our keys and shapes, checked above
    info = {
        "row": row,
        "dataset": cfg.dataset,
        "profile": params.profile,
        "generator": spec.model_dump(mode="json"),
        "source": SOURCE,
        "pickle": str(path),
        "pickle_name": path.name,
        "sha256": digest,
        "url": released.url,
        "training_set_kwargs": network.training_set_kwargs,
    }
    snapshot = root / paths.run_dir(row) / NETWORK_SNAPSHOT
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        payload_state = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    # options: the train options are not this snapshot's (the authors trained it); say so instead of inventing them.
    save_checkpoint(
        snapshot, {"G_ema": payload_state, "options": {"source": SOURCE}, "info": info, "step": 0, "kimg": 0.0}
    )
    # dvc.yaml's train stage (which runs this for released rows) declares the loss CSV as an output: no losses here.
    write_text(root / paths.train_plots(row), ",".join(PLOT_COLUMNS) + "\n")
    return info
