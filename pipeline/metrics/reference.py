"""Real-image reference statistics as stored on disk, and the feature network that scores a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import atomic_file
from pipeline.metrics.domain import DomainFeatures
from pipeline.metrics.frechet import GaussianStats
from pipeline.metrics.inception import FeatureExtractor, InceptionFeatures, resolve_inception_weights
from pipeline.metrics.options import ReferenceConfig
from pipeline.metrics.scoring import MetricsInputError, pick_device


@dataclass(frozen=True)
class Reference:
    """Real-image statistics as the reference stage stores them."""

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


def build_extractor(cfg: ReferenceConfig, dataset: str, domain_net: Path) -> FeatureExtractor:
    """The feature network that scores `dataset`'s images: Inception, or the domain network trained on it
    (stored at `domain_net` by the reference stage)."""
    device = pick_device(cfg.device)
    if cfg.features == "inception":
        return InceptionFeatures(resolve_inception_weights(cfg.inception_weights, download=cfg.download), device)
    if not domain_net.is_file():
        raise MetricsInputError(
            f"domain network '{domain_net}' does not exist; run `pipeline reference --dataset {dataset}` first"
        )
    return DomainFeatures.load(domain_net, device)
