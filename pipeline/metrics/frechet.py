"""Frechet distance between Gaussians fitted to feature sets (the formula behind FID and fd_domain).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

computed in float64 with scipy's matrix square root. Statistics are gathered in one streaming pass
(`GaussianAccumulator`), so 50k feature vectors never have to sit in memory at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

# Relative error ||X X - A||_F / ||A||_F above which a square root is not trusted and recomputed
# on the regularised product (S1 + eps I)(S2 + eps I).
SQRTM_MAX_REL_ERROR = 1e-6
# Largest imaginary part tolerated on the diagonal of the square root: a larger one means the
# product had clearly negative eigenvalues, i.e. the statistics are not covariance matrices.
MAX_IMAGINARY = 1e-3


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D,) and covariance (D, D, unbiased) of `count` feature vectors, in float64."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def _check_stats(mu: np.ndarray, sigma: np.ndarray, which: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{which} statistics: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{which} statistics hold NaN or infinite values (are the features finite?)")


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray | None:
    """sqrtm(sigma1 @ sigma2), or None when it is not finite or not accurate."""
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        # A singular product is expected with few samples; the accuracy check below decides.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(product)
    if not np.isfinite(root).all():
        return None
    norm = np.linalg.norm(product)
    err = np.linalg.norm(root @ root - product) / norm if norm > 0 else np.linalg.norm(root)
    return root if err <= SQRTM_MAX_REL_ERROR else None


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Singular products (fewer samples than dimensions, duplicated features) make the square root
    inaccurate; it is then recomputed with eps added to both diagonals, as the reference FID code does."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    _check_stats(mu1, sigma1, "first")
    _check_stats(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape[0]} vs {mu2.shape[0]} (were both computed with the same feature extractor?)")
    root = _sqrtm_product(sigma1, sigma2)
    if root is None:
        offset = np.eye(sigma1.shape[0]) * eps
        root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        largest = np.max(np.abs(np.diagonal(root).imag))
        if largest > MAX_IMAGINARY:
            raise ValueError(
                f"the square root of sigma1 @ sigma2 has an imaginary part of {largest:.3g} on its diagonal; "
                "the covariances are not positive semi-definite (check the statistics files)"
            )
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root))


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


class GaussianAccumulator:
    """Running mean and covariance of feature batches, merged with Chan et al.'s pairwise update
    (numerically stable in float64, unlike accumulating sum(x x^T) and subtracting n mu mu^T)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim, np.float64)
        self._m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations from the mean

    def update(self, features) -> None:
        """Add a batch (N, dim) of features (numpy array or torch tensor)."""
        x = np.asarray(features.detach().cpu().numpy() if hasattr(features, "detach") else features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {x.shape}")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def stats(self) -> GaussianStats:
        """Mean and unbiased covariance (divided by count - 1, like numpy.cov)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return GaussianStats(self._mean.copy(), self._m2 / (self.count - 1), self.count)
