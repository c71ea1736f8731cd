"""Stage `reference`: feature statistics of one dataset's real images, computed once and cached.

Writes data/reference/<dataset>.npz (mu, sigma, count, resolution, feature kind, weights hash) and,
with the domain features, the domain network trained on the dataset's labels beside it
(data/reference/<dataset>.domain.pt), plus a metrics file with the real images' IS (the paper's
"validation set" row) and, for the domain network, its held-out accuracy. Every output is written
atomically after all the work is done: a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Params
from pipeline.data.dataset import PreparedDataset
from pipeline.headline import write_split
from pipeline.io import remove_stale_temporaries
from pipeline.metrics.domain import DomainFeatures, save_domain_net, train_domain_net
from pipeline.metrics.inception import FeatureExtractor, inception_score, nhwc_to_nchw, summarize
from pipeline.metrics.options import ReferenceConfig
from pipeline.metrics.reference import Reference, save_reference
from pipeline.metrics.reference import build_extractor as build_feature_extractor
from pipeline.metrics.scoring import MetricsInputError, pick_device
from pipeline.progress import progress_bar
from pipeline.tracking import resolve_tracking_uri, stage_run
from stages import paths


def reference_stats_file(dataset: str) -> Path:
    return paths.reference_stats_file(dataset)


def domain_net_file(dataset: str) -> Path:
    return paths.domain_net_file(dataset)


def reference_metrics_file(dataset: str) -> Path:
    return paths.REPORTS / "metrics" / "reference" / f"{dataset}.json"


def reference_config(params: Params) -> ReferenceConfig:
    return params.reference


def open_prepared(root: Path, dataset: str) -> PreparedDataset:
    where = root / paths.prepared_dir(dataset)
    if not (where / "meta.json").exists():
        raise MetricsInputError(
            f"prepared dataset '{where}' does not exist; run `pipeline prepare --dataset {dataset}` first"
        )
    return PreparedDataset(where)


def build_extractor(params: Params, dataset: str, root: Path = Path(".")) -> FeatureExtractor:
    """The feature network that scores `dataset`'s images: Inception, or the domain network this stage trained on it."""
    return build_feature_extractor(reference_config(params), dataset, root / domain_net_file(dataset))


def run(params: Params, dataset: str, root: Path = Path(".")) -> dict[str, Any]:
    """Compute and cache the reference statistics of `dataset`; return the stage's metrics."""
    cfg = reference_config(params)
    params.dataset(dataset)  # unknown names fail here, with the list of datasets
    metrics_file = reference_metrics_file(dataset)
    for output in (reference_stats_file(dataset), domain_net_file(dataset), metrics_file, paths.details(metrics_file)):
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
            # Without the training time: equal networks then give equal files, and an unchanged re-run leaves
            # data/reference (a dep of every score) as it was.
            info = {k: v for k, v in metrics.items() if not k.endswith("seconds")}
            save_domain_net(root / domain_net_file(dataset), net, {"dataset": dataset, **info})
        metrics["weights_sha256"] = extractor.weights_sha256
        save_reference(
            root / reference_stats_file(dataset),
            Reference(dataset, cfg.features, data.resolution, extractor.weights_sha256, summary.stats),
        )
        write_split(root / metrics_file, root / paths.details(metrics_file), metrics, "reference")
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracker.set_tags({"weights_sha256": extractor.weights_sha256})
    return metrics
