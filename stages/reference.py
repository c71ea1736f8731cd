"""Stage `reference`: feature statistics of one dataset's real images, computed once and cached.

Writes data/reference/<dataset>.npz (mu, sigma, count, resolution, feature kind, weights hash) and,
with the domain features, the domain network trained on the dataset's labels beside it
(data/reference/<dataset>.domain.pt), plus a metrics file with the real images' IS (the paper's
"validation set" row) and, for the domain network, its held-out accuracy. Every output is written
atomically after all the work is done: a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Params
from pipeline.data.dataset import PreparedDataset
from pipeline.io import atomic_file, remove_stale_temporaries, write_json
from pipeline.metrics.domain import DomainFeatures, save_domain_net, train_domain_net
from pipeline.metrics.frechet import GaussianStats
from pipeline.metrics.inception import (
    FeatureExtractor,
    InceptionFeatures,
    inception_score,
    nhwc_to_nchw,
    resolve_inception_weights,
    sha256_file,
    summarize,
)
from pipeline.metrics.options import ReferenceConfig
from pipeline.metrics.scoring import MetricsInputError, pick_device
from pipeline.progress import progress_bar
from pipeline.tracking import resolve_tracking_uri, stage_run
from stages import paths

REFERENCE_DIR = paths.DATA / "reference"


def reference_stats_file(dataset: str) -> Path:
    return REFERENCE_DIR / dataset / "stats.npz"


def domain_net_file(dataset: str) -> Path:
    # Only written for domain features; one folder per dataset keeps DVC's outputs the same either way.
    return REFERENCE_DIR / dataset / "domain.pt"


def reference_metrics_file(dataset: str) -> Path:
    return paths.REPORTS / "metrics" / "reference" / f"{dataset}.json"


def reference_config(params: Params) -> ReferenceConfig:
    return params.reference


@dataclass(frozen=True)
class Reference:
    """Real-image statistics as stored by this stage."""

    dataset: str
    features: str
    resolution: int
    weights_sha256: str
    stats: GaussianStats


def save_reference(path: Path, ref: Reference) -> None:
    with atomic_file(path) as tmp:
        np.savez(
            tmp,
            mu=ref.stats.mu,
            sigma=ref.stats.sigma,
            count=ref.stats.count,
            resolution=ref.resolution,
            features=ref.features,
            weights_sha256=ref.weights_sha256,
            dataset=ref.dataset,
        )


def load_reference(path: Path, dataset: str) -> Reference:
    if not path.is_file():
        raise MetricsInputError(
            f"reference statistics '{path}' do not exist; run `pipeline reference --dataset {dataset}` first"
        )
    with np.load(path) as f:
        stats = GaussianStats(f["mu"], f["sigma"], int(f["count"]))
        return Reference(str(f["dataset"]), str(f["features"]), int(f["resolution"]), str(f["weights_sha256"]), stats)


def open_prepared(root: Path, dataset: str) -> PreparedDataset:
    where = root / paths.prepared_dir(dataset)
    if not (where / "meta.json").exists():
        raise MetricsInputError(
            f"prepared dataset '{where}' does not exist; run `pipeline prepare --dataset {dataset}` first"
        )
    return PreparedDataset(where)


def build_extractor(params: Params, dataset: str, root: Path = Path(".")) -> FeatureExtractor:
    """The feature network that scores `dataset`'s images: Inception, or the domain network this stage trained on it."""
    cfg = reference_config(params)
    device = pick_device(cfg.device)
    if cfg.features == "inception":
        return InceptionFeatures(resolve_inception_weights(cfg.inception_weights, download=cfg.download), device)
    path = root / domain_net_file(dataset)
    if not path.is_file():
        raise MetricsInputError(
            f"domain network '{path}' does not exist; run `pipeline reference --dataset {dataset}` first"
        )
    return DomainFeatures.load(path, device)


def run(params: Params, dataset: str, root: Path = Path(".")) -> dict[str, Any]:
    """Compute and cache the reference statistics of `dataset`; return the stage's metrics."""
    cfg = reference_config(params)
    params.dataset(dataset)  # unknown names fail here, with the list of datasets
    for output in (reference_stats_file(dataset), domain_net_file(dataset), reference_metrics_file(dataset)):
        remove_stale_temporaries(root / output)  # what a killed earlier run left beside its outputs
    data = open_prepared(root, dataset)
    n = cfg.num_images or len(data)
    if n > len(data):
        raise MetricsInputError(
            f"reference.num_images is {n} but prepared dataset '{dataset}' holds only {len(data)} images; "
            f"lower reference.num_images or prepare more (prepare.datasets.{dataset}.num_images)"
        )
    tags = {"stage": "reference", "dataset": dataset, "profile": params.profile}
    run_params = {"dataset": dataset, **cfg.model_dump(mode="json"), "num_images": n}
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "features": cfg.features,
        "num_images": n,
        "resolution": data.resolution,
    }
    with stage_run(
        resolve_tracking_uri(params.tracking.uri), params.tracking.experiment, f"reference/{dataset}", tags, run_params
    ) as tracker:
        net = None
        if cfg.features == "domain":
            with progress_bar(f"domain network {dataset}") as advance:
                net, report = train_domain_net(data.images, data.labels, data.num_classes, cfg.domain, advance)
            extractor: FeatureExtractor = DomainFeatures(net, device=pick_device(cfg.device))
            metrics |= {
                "domain_holdout_accuracy": report.holdout_accuracy,
                "domain_train_images": report.train_images,
                "domain_holdout_images": report.holdout_images,
                "domain_train_seconds": report.seconds,
            }
        else:
            extractor = build_extractor(params, dataset, root)
        with progress_bar(f"reference {dataset}") as advance:
            batches = (nhwc_to_nchw(np.asarray(data.images[i : min(i + cfg.batch, n)])) for i in range(0, n, cfg.batch))
            summary = summarize(batches, extractor, lambda done: advance(done, n))
        is_mean, is_std = inception_score(summary.logits)
        metrics |= {f"{extractor.is_name}_real": is_mean, f"{extractor.is_name}_real_std": is_std}

        if net is not None:
            save_domain_net(root / domain_net_file(dataset), net, {"dataset": dataset, **metrics})
            extractor.weights_sha256 = sha256_file(root / domain_net_file(dataset))
        metrics["weights_sha256"] = extractor.weights_sha256
        save_reference(
            root / reference_stats_file(dataset),
            Reference(dataset, cfg.features, data.resolution, extractor.weights_sha256, summary.stats),
        )
        write_json(root / reference_metrics_file(dataset), metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracker.set_tags({"weights_sha256": extractor.weights_sha256})
    return metrics
