"""Frechet distance against a direct scipy implementation and closed forms; the streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from pipeline.metrics.frechet import GaussianAccumulator, frechet_distance, trace_sqrt_product


def _direct(mu1, s1, mu2, s2) -> float:
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def _random_stats(rng: np.random.Generator, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_direct_scipy_on_random_statistics(seed):
    rng = np.random.default_rng(seed)
    mu1, s1 = _random_stats(rng, 32, 200)
    mu2, s2 = _random_stats(rng, 32, 200)
    ours, ref = frechet_distance(mu1, s1, mu2, s2), _direct(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0


def test_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    v1, v2 = rng.uniform(0.1, 3, size=20), rng.uniform(0.1, 3, size=20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_identical_statistics_score_zero_and_mean_shift_adds_its_square():
    rng = np.random.default_rng(1)
    mu, s = _random_stats(rng, 16, 100)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    shift = rng.normal(size=16)
    assert frechet_distance(mu + shift, s, mu, s) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_trace_sqrt_product_equals_trace_of_scipy_sqrtm():
    rng = np.random.default_rng(3)
    _, s1 = _random_stats(rng, 48, 300)
    _, s2 = _random_stats(rng, 48, 300)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_are_exact_without_regularisation():
    # 5 samples in 64 dimensions: rank-4 covariances, where sqrtm alone is inaccurate. The limit of
    # the regularised reference as eps -> 0 is the exact value; identical sets give exactly 0.
    rng = np.random.default_rng(2)
    mu1, s1 = _random_stats(rng, 64, 5)
    mu2, s2 = _random_stats(rng, 64, 5)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d)
    regularised = [_direct(mu1, s1 + e * np.eye(64), mu2, s2 + e * np.eye(64)) for e in (1e-4, 1e-6)]
    assert abs(regularised[1] - d) < abs(regularised[0] - d)
    assert d == pytest.approx(regularised[1], rel=1e-3)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * np.trace(s1)


def test_bad_statistics_are_rejected():
    s = np.eye(3)
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros(3), s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(3, np.nan), s, np.zeros(3), s)
    with pytest.raises(ValueError, match="first covariance .* not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -4.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="second covariance .* not positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -4.0]))


def test_accumulator_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1001, 8)) * 5 + 1e4  # a large mean is where a naive sum of squares loses digits
    acc = GaussianAccumulator(8)
    for chunk in np.array_split(x, [1, 7, 300, 301, 999]):
        acc.update(chunk)
    stats = acc.stats()
    assert stats.count == 1001
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        acc.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        GaussianAccumulator(2).stats()
