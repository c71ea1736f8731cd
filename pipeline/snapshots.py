"""Trained generators from their snapshot files: the strict loader of the scoring stages (the snapshot must be
the row params.yaml defines) and the analysis stages' loader of a named model (project.models)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.analysis.options import ProjectConfig
from pipeline.config import ConfigError, Params
from pipeline.io import sha256_file
from pipeline.metrics.scoring import MetricsInputError
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.options import recorded_changes


def load_state(generator: nn.Module, state_dict: Mapping[str, Any], where: str) -> nn.Module:
    """Load the EMA weights of a snapshot into a freshly built generator; a mismatch says what to do."""
    try:
        generator.load_state_dict(state_dict)
    except RuntimeError as err:
        raise MetricsInputError(
            f"snapshot '{where}' does not fit the row's generator as params.yaml builds it ({str(err).splitlines()[0]}); "
            "the row's settings changed since training: re-train it (`pipeline train --row ROW --no-resume`)"
        ) from None
    return generator.eval()


def load_row_snapshot(params: Params, row: str, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(EMA generator in eval mode, snapshot info: step, kimg) of a trained row's final snapshot at `path`."""
    if not path.is_file():
        released = params.row(row).released
        if released is not None:
            raise MetricsInputError(
                f"row {row!r} has not been imported: '{path}' does not exist; put the authors' checkpoint at "
                f"'{released.pickle}' (download {released.url}) and run `pipeline import --row {row}` first"
            )
        raise MetricsInputError(
            f"row {row!r} has not been trained: '{path}' does not exist; run `pipeline train --row {row}` first"
        )
    return load_ema_generator(params, row, path)


def load_ema_generator(params: Params, row: str, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(EMA generator in eval mode, step, kimg) of one snapshot file of `row` (final or kept), checked to be
    the row params.yaml defines."""
    from pipeline.models.registry import build_generator, parse_generator_spec

    cfg = params.row(row)
    payload = load_checkpoint(path, required=("G_ema", "info"))
    spec = parse_generator_spec(cfg.generator)
    info = payload["info"] if isinstance(payload["info"], Mapping) else {}
    trained_with = info.get("generator")
    if trained_with is None or _spec_dump(trained_with) != spec.model_dump(mode="json"):
        raise MetricsInputError(
            f"snapshot '{path}' was trained with generator settings {trained_with}, but params.yaml now says "
            f"{spec.model_dump(mode='json')}; re-train the row (`pipeline train --row {row} --no-resume`) or restore its settings"
        )
    # The same generator on another dataset, or with other training settings, is another row's snapshot:
    # scoring it would write that row's numbers under this row's name. An imported row was trained by the
    # authors: its snapshot must be an import (of the configured file when a sha256 is given), not a training.
    if cfg.released is not None:
        changes = _import_changes(info, cfg.dataset, cfg.released.sha256)
    else:
        changes = recorded_changes(info, cfg.dataset, params.train_options(row))
    if changes:
        shown = "; ".join(f"{k}: {old!r} there, {new!r} in params.yaml" for k, (old, new) in changes.items())
        raise MetricsInputError(
            f"snapshot '{path}' is not row {row!r} as params.yaml defines it (recorded row {info.get('row')!r}; {shown}); "
            f"re-train the row (`pipeline train --row {row} --no-resume`) or restore its settings"
        )
    generator = load_state(build_generator(spec), payload["G_ema"], str(path))
    # An imported row's metrics say which file they measure (tables put the published FID beside ours).
    provenance = {k: info.get(k) for k in ("source", "pickle_name", "sha256")} if cfg.released is not None else {}
    return generator, {"step": int(payload.get("step", 0)), "kimg": float(payload.get("kimg", 0.0)), **provenance}


def _import_changes(info: Mapping[str, Any], dataset: str, sha256: str | None) -> dict[str, tuple[Any, Any]]:
    """What an imported row's snapshot (`info` as stages/released.py records it) has other than the row says."""
    changes: dict[str, tuple[Any, Any]] = {}
    if info.get("source") != "imported":
        changes["source"] = (info.get("source", "trained"), "imported")
    if info.get("dataset") != dataset:
        changes["dataset"] = (info.get("dataset"), dataset)
    if sha256 is not None and info.get("sha256") != sha256.lower():
        changes["released.sha256"] = (info.get("sha256"), sha256)
    return changes


def row_truncation(params: Params, row: str) -> float:
    """score.truncation_psi, or a released row's published setting (e.g. 0.9 for the authors' Bedrooms)."""
    released = params.row(row).released
    return released.truncation_psi if released is not None else params.score.truncation_psi


def _spec_dump(settings: Any) -> Any:
    from pipeline.models.registry import parse_generator_spec

    try:
        return parse_generator_spec(settings).model_dump(mode="json")
    except ValueError:
        return settings  # settings of an older format: differ from any current spec


def project_config(params: Params) -> ProjectConfig:
    return params.optional_section("project")


def model_row(params: Params, model: str) -> str:
    """The ablation row a model name of project.models stands for; unknown names fail with the known ones."""
    models = project_config(params).models
    if model not in models:
        raise ConfigError(
            f"unknown model {model!r}; project.models in params.yaml defines: {', '.join(sorted(models)) or 'none'} "
            f"(add `{model}: <row>` there to analyse another row)"
        )
    return models[model]


def build_row_generator(generator: dict[str, Any]) -> torch.nn.Module:
    """The generator a snapshot's recorded settings describe (a seam the tests replace with a toy network)."""
    from pipeline.models.registry import build_generator

    return build_generator(generator)


def load_model_generator(
    params: Params, model: str, snapshot: Path, device: torch.device
) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """(EMA generator of `model`'s row in eval mode, row, {sha256, step} of its snapshot at `snapshot`)."""
    row = model_row(params, model)
    if not snapshot.is_file():
        raise FileNotFoundError(
            f"model {model!r} (row {row!r}) has no trained snapshot at '{snapshot}'; "
            f"train it first with `pipeline train --row {row}` (or `dvc repro train@{row}`)"
        )
    # Hashed before loading: a snapshot replaced meanwhile then fails the next check, not silently.
    sha256 = sha256_file(snapshot)
    payload = load_checkpoint(snapshot, required=("G_ema",))
    generator = (payload.get("info") or {}).get("generator") or params.row(row).generator
    G = build_row_generator(generator)
    G.load_state_dict(payload["G_ema"])
    return G.to(device).eval(), row, {"sha256": sha256, "step": int(payload.get("step", 0))}
