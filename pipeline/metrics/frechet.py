"""Frechet distance between Gaussians fitted to feature sets (the formula behind FID and fd_domain).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

computed in float64; the trace of the square root comes from two symmetric eigendecompositions
(`trace_sqrt_product`) and equals the sqrtm-based value of the reference FID code. Statistics are
gathered in one streaming pass (`GaussianAccumulator`), so 50k feature vectors never have to sit in
memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Most negative eigenvalue, relative to the largest, that a covariance may have from rounding; a
# more negative one means the statistics are not covariance matrices.
MAX_NEGATIVE_EIGENVALUE = 1e-6


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


def _check_psd(values: np.ndarray, which: str) -> None:
    """Refuse a covariance whose eigenvalues are clearly negative (more than rounding)."""
    scale = max(float(np.abs(values).max()), np.finfo(np.float64).tiny)
    if values.min() < -MAX_NEGATIVE_EIGENVALUE * scale:
        raise ValueError(
            f"the {which} covariance has an eigenvalue of {values.min():.3g} (largest magnitude {scale:.3g}); "
            "it is not positive semi-definite (check the statistics files)"
        )


def _psd_root(sigma: np.ndarray, which: str) -> np.ndarray:
    """The symmetric square root of a covariance, from its eigendecomposition."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    _check_psd(values, which)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^(1/2)) for covariances sigma1, sigma2.

    sigma1 sigma2 is similar to R sigma2 R with R = sigma1^(1/2) (R^-1 (R sigma2 R) R = sigma1 sigma2
    when R is invertible, and by continuity otherwise), and R sigma2 R is symmetric positive
    semi-definite, so the trace is the sum of the square roots of its eigenvalues. Symmetric
    eigendecompositions replace scipy's general (complex Schur) sqrtm: faster (2048-d FID statistics:
    3.3-4.1 s vs 16.4 s for sqrtm on an idle 2-core CPU) and exact on singular covariances (fewer samples
    than dimensions), where sqrtm is inaccurate and the reference code adds a regularising offset."""
    root1 = _psd_root(sigma1, "first")
    _check_psd(np.linalg.eigvalsh((sigma2 + sigma2.T) / 2), "second")  # a non-covariance must not yield a number
    inner = root1 @ sigma2 @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    _check_stats(mu1, sigma1, "first")
    _check_stats(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"feature sizes differ: {mu1.shape[0]} vs {mu2.shape[0]} (were both computed with the same feature extractor?)"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


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
