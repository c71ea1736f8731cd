"""Stages `keypoints` and `kpl`: the keypoint regressor for synthetic faces, and the keypoint prediction
loss of Table 3 (Algorithm 1) for each model, compiled into reports/tables/table3_kpl.md.

- `train_regressor(params)`: trains the regressor on kpl.regressor.dataset's ground-truth keypoints;
  writes data/keypoints/<dataset>/regressor.pt and reports/metrics/keypoints/<dataset>.json (its
  held-out error).
- `run(params, model)`: KPL(Z), KPL(W), KPL(random) of one model from its snapshot and its
  projections (stage `project`); writes reports/metrics/kpl/<model>.json and refreshes the table.
- `run_all(params)`: every model of project.models, then the table and reports/metrics/table3.json
  (the DVC stage; its metrics output, so the per-model files of other runs, e.g. seed repeats, stay).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.keypoints import (
    KeypointExtractor,
    keypoint_mse,
    load_regressor,
    save_regressor,
    train_keypoint_regressor,
)
from pipeline.analysis.kpl import keypoint_prediction_loss, sample_keypoints
from pipeline.analysis.options import KPLConfig
from pipeline.analysis.projection import ProjectionsError, check_projections_source
from pipeline.config import ConfigError, Params
from pipeline.data.dataset import PreparedDataset
from pipeline.devices import resolve_device
from pipeline.headline import write_split
from pipeline.io import clear_stale_outputs, write_json, write_text
from pipeline.progress import counting_bar
from pipeline.reporting import pool_repeats
from pipeline.snapshots import load_model_generator, model_row, project_config
from pipeline.tracking import resolve_tracking_uri, stage_run
from stages import paths

# Table 3 of the paper (FFHQ 256, Super-FAN keypoints)
PAPER_TABLE3 = {
    "stylegan2": {"kpl_z": 2.1e-4, "kpl_w": 7.6e-5, "kpl_random": 4.6e-4},
    "inr_gan": {"kpl_z": 6.0e-5, "kpl_w": 5.2e-5, "kpl_random": 4.7e-4},
}
TABLE_MODELS = ("stylegan2", "inr_gan")


def regressor_metrics(dataset: str) -> Path:
    return paths.REPORTS / "metrics" / "keypoints" / f"{dataset}.json"


def kpl_metrics(model: str) -> Path:
    return paths.kpl_metrics(model)


def table3_file() -> Path:
    return paths.REPORTS / "tables" / "table3_kpl.md"


def kpl_config(params: Params) -> KPLConfig:
    return params.optional_section("kpl")


def _prepared(root: Path, dataset: str) -> PreparedDataset:
    """The prepared dataset, its files checked (a damaged one is named with the command that remakes it)."""
    where = root / paths.prepared_dir(dataset)
    if not where.is_dir():
        raise FileNotFoundError(
            f"prepared dataset '{where}' does not exist; run `pipeline prepare --dataset {dataset}` first"
        )
    return PreparedDataset(where)


def train_regressor(params: Params, root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Train the synthetic-faces keypoint regressor; return its report (held-out error included)."""
    cfg = kpl_config(params).regressor
    if cfg is None:
        raise ConfigError(
            "`pipeline keypoints` needs kpl.regressor in params.yaml (the dataset with ground-truth keypoints)"
        )
    data = _prepared(root, cfg.dataset)
    if data.keypoints is None:
        raise ConfigError(
            f"dataset {cfg.dataset!r} has no ground-truth keypoints ({data.root / 'keypoints.npy'}); "
            f"the regressor needs synthetic faces; for real faces use kpl.extractor: fan"
        )
    n = cfg.num_images
    images = np.asarray(data.images[:n])
    keypoints = data.keypoints[:n]
    names = data.meta.get("keypoint_names") or [f"k{i}" for i in range(keypoints.shape[1])]
    tags = {"stage": "keypoints", "dataset": cfg.dataset, "profile": params.profile, "table": "table3"}
    with stage_run(
        resolve_tracking_uri(params.tracking.uri),
        params.tracking.experiment,
        f"keypoints/{cfg.dataset}",
        tags,
        cfg.model_dump(mode="json"),
    ) as tracker:
        with counting_bar(f"keypoint regressor on {cfg.dataset}", cfg.epochs, progress) as advance:
            extractor, report = train_keypoint_regressor(
                images,
                keypoints,
                names,
                heldout_fraction=cfg.heldout_fraction,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                width=cfg.width,
                seed=cfg.seed,
                progress=advance,
            )
        report = {"dataset": cfg.dataset, "resolution": int(images.shape[1]), **report}
        save_regressor(root / paths.regressor_file(cfg.dataset), extractor, report)
        write_split(
            root / regressor_metrics(cfg.dataset),
            root / paths.details(regressor_metrics(cfg.dataset)),
            report,
            "keypoints",
        )
        tracker.log_metrics({k: v for k, v in report.items() if isinstance(v, (int, float))})
    return report


def prepare_extractor(params: Params, root: Path = Path("."), progress: bool = True) -> dict[str, Any]:
    """Stage `keypoints`: make the keypoint extractor K ready. The regressor is trained here; FAN's
    weights are located and loaded once (failing with the file, URL and folder when missing) and
    recorded in data/keypoints/fan.json, so DVC re-runs KPL when they change."""
    cfg = kpl_config(params)
    if cfg.extractor != "fan":
        return train_regressor(params, root, progress)
    from pipeline.metrics.inception import sha256_file

    fan = cfg.fan.build(resolve_device(cfg.device))
    record = {
        "extractor": "fan",
        "weights": str(fan.weights_path),
        "weights_sha256": sha256_file(fan.weights_path),
        "box": cfg.fan.box,
    }
    write_json(root / paths.DATA / "keypoints" / "fan.json", record)
    write_split(root / regressor_metrics("fan"), root / paths.details(regressor_metrics("fan")), record, "keypoints")
    return record


def build_extractor(cfg: KPLConfig, root: Path, device) -> KeypointExtractor:
    if cfg.extractor == "fan":
        return cfg.fan.build(device)
    return load_regressor(root / paths.regressor_file(cfg.regressor.dataset))


def load_projections(root: Path, model: str) -> dict[str, np.ndarray]:
    path = root / paths.projections_file(model)
    if not path.is_file():
        raise FileNotFoundError(
            f"no projections of model {model!r} at '{path}'; run `pipeline project --model {model}` first"
        )
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file: the remedy is the same
        raise ProjectionsError(
            f"projections '{path}' cannot be read ({type(err).__name__}: {err}); "
            f"re-run `pipeline project --model {model}`"
        ) from None


def run(
    params: Params, model: str, root: Path = Path("."), progress: bool = True, table: bool = True
) -> dict[str, Any]:
    """KPL of `model`; writes its metrics json (and, with `table`, refreshes Table 3)."""
    cfg, pcfg = kpl_config(params), project_config(params)
    row = model_row(params, model)  # unknown models fail before any work
    clear_stale_outputs(root, paths.kpl_metrics(model), table3_file())
    device = resolve_device(cfg.device)
    projections = load_projections(root, model)
    snapshot = root / paths.snapshot_file(row)
    G, row, source = load_model_generator(params, model, snapshot, device)
    # Retraining the row leaves projections of the old generator in place; pairing them with the new one's samples is
    # meaningless.
    check_projections_source(
        projections, root / paths.projections_file(model), source["sha256"], source["step"], snapshot, model
    )
    extractor = build_extractor(cfg, root, device)
    data = _prepared(root, pcfg.dataset)
    real = np.asarray(data.images[projections["indices"]])
    spaces = [s for s in ("z", "w") if s in projections]
    tags = {"stage": "kpl", "model": model, "row": row, "profile": params.profile, "table": "table3"}
    run_params = {"model": model, "row": row, "test_dataset": pcfg.dataset, **cfg.model_dump(mode="json")}
    with stage_run(
        resolve_tracking_uri(params.tracking.uri), params.tracking.experiment, f"kpl/{model}", tags, run_params
    ) as tracker:
        start = time.perf_counter()
        with counting_bar(f"KPL {model}: generate + keypoints", cfg.fit.num_generated, progress) as advance:
            z, w, train_kp = sample_keypoints(
                G, extractor, cfg.fit.num_generated, cfg.fit.seed, cfg.fit.batch_size, advance
            )
        real_kp = extractor(real)
        train_latents = {"z": z, "w": w}
        result = keypoint_prediction_loss(
            {s: train_latents[s] for s in spaces},
            train_kp,
            {s: projections[s] for s in spaces},
            real_kp,
            extractor.names,
            cfg.fit,
        )
        result.update(
            {
                "model": model,
                "row": row,
                "profile": params.profile,
                "settings_sha256": params.settings_fingerprint(row),
                "snapshot": str(snapshot),
                "extractor": cfg.extractor,
                "test_dataset": pcfg.dataset,
            }
        )
        if cfg.extractor == "regressor":
            result["extractor_heldout_mse"] = extractor.heldout_mse
            if data.keypoints is not None:  # K's own error on the very images KPL is evaluated on
                result["extractor_test_mse"] = keypoint_mse(real_kp, data.keypoints[projections["indices"]])
        # No timing in this git-tracked file (it is no DVC output, so that the seed repeats' files survive a
        # re-run): an unchanged re-run, or a fresh clone's `make repro`, leaves it byte-identical. The time goes
        # to MLflow and, through run_all, to the details of Table 3.
        write_json(root / kpl_metrics(model), result)
        seconds = round(time.perf_counter() - start, 2)
        tracker.log_metrics(
            {k: v for k, v in result.items() if k.startswith(("kpl", "extractor_")) and isinstance(v, (int, float))}
            | {"seconds": seconds}
        )
        result["seconds"] = seconds
    if table:
        write_table3(params, root)
    return result


def run_all(params: Params, root: Path = Path("."), progress: bool = True) -> dict[str, dict[str, Any]]:
    results = {m: run(params, m, root, progress, table=False) for m in project_config(params).models}
    write_table3(params, root)
    headline = (
        "kpl_z",
        "kpl_w",
        "kpl_random",
        "kpl_random_z",
        "kpl_random_w",
        "extractor_test_mse",
        "num_train",
        "num_test",
        "seconds",  # not headline: write_split puts it in the details file
    )
    summary = {m: {k: r[k] for k in headline if k in r} for m, r in results.items()}
    write_split(root / paths.KPL_SUMMARY, root / paths.details(paths.KPL_SUMMARY), summary, "kpl_summary")
    return results


def _mean_over_seeds(params: Params, root: Path, cols: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each model's KPL results, with its repeats (the same row trained with other seeds, found by
    Params.repeats_of) pooled in (pipeline.reporting.pool_repeats: mean, `<col>_std`, `seeds`)."""
    merged = {}
    for base, names in params.repeats_of(project_config(params).models, lambda m: root / kpl_metrics(m)).items():
        group = []
        for name in names:
            path = root / kpl_metrics(name)
            if path.is_file():
                result = json.loads(path.read_text())
                if result.get("profile", params.profile) == params.profile:  # another profile's run is not this table's
                    group.append(result)
        if group:
            merged[base] = pool_repeats(group, cols)
    return merged


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def write_table3(params: Params, root: Path = Path(".")) -> str:
    """reports/tables/table3_kpl.md from the kpl metrics present, the paper's values beside ours."""
    cols = ("kpl_z", "kpl_w", "kpl_random")
    ours = _mean_over_seeds(params, root, cols)
    lines = [
        "# Table 3: keypoint prediction loss (lower is better)",
        "",
        f"Profile `{params.profile}`. Paper: FFHQ 256, Super-FAN keypoints, N_tr = 10^4, N_ts = 256. "
        f"Ours: test images from `{project_config(params).dataset}`, keypoint extractor `{kpl_config(params).extractor}`.",
        "",
        "| generator | KPL (Z) ours | KPL (Z) paper | KPL (W) ours | KPL (W) paper | KPL (random) ours | KPL (random) paper | N_tr | N_ts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted(set(ours) | set(TABLE_MODELS), key=lambda m: (m not in TABLE_MODELS, m)):
        r, p = ours.get(model, {}), PAPER_TABLE3.get(model, {})
        cells = [
            x
            for c in cols
            for x in (
                _fmt(r.get(c)) + (f" +- {_fmt(r[c + '_std'])} ({r['seeds']} seeds)" if r.get("seeds", 1) > 1 else ""),
                _fmt(p.get(c)),
            )
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {r.get('num_train', '-')} | {r.get('num_test', '-')} |")
    lines += [
        "",
        f"Convention: {ours[next(iter(ours))]['convention'] if ours else 'see pipeline/analysis/kpl.py'}. "
        "KPL (random) is the W-space fit on randomly permuted latents (the Z-space one is in the metrics json).",
        "",
    ]
    sg, ig = ours.get("stylegan2", {}).get("kpl_z"), ours.get("inr_gan", {}).get("kpl_z")
    if sg is not None and ig is not None:
        verdict = "lower than" if ig < sg else ("equal to" if ig == sg else "not lower than")
        lines.append(
            f"INR-GAN's KPL(Z) {ig:.2e} is {verdict} StyleGAN2's {sg:.2e} in our run "
            f"(paper: {PAPER_TABLE3['inr_gan']['kpl_z']:.1e} < {PAPER_TABLE3['stylegan2']['kpl_z']:.1e})."
        )
    else:
        missing = [m for m in TABLE_MODELS if m not in ours]
        lines.append(f"No comparison of KPL(Z) yet: no results for {', '.join(missing)}.")
    extractor_err = {m: r.get("extractor_test_mse", r.get("extractor_heldout_mse")) for m, r in ours.items()}
    if any(v is not None for v in extractor_err.values()):
        lines.append("")
        lines.append(
            "Keypoint extractor error on the test images (same convention): "
            + ", ".join(f"{m} {_fmt(v)}" for m, v in extractor_err.items())
            + "; KPL values near it are not resolved."
        )
    text = "\n".join(lines) + "\n"
    write_text(root / table3_file(), text)
    return text
