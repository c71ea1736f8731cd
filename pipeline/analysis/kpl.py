"""Keypoint prediction loss (KPL, the paper's Algorithm 1 and Table 3): how linearly a generator's
latent space encodes face geometry.

1. sample N_tr latents z ~ N(0, I) (seeded), w = G.mapping(z), images x = G.synthesize(w);
2. keypoints k = K(x) with a keypoint extractor K (FAN for real faces, the trained regressor for
   synthetic faces);
3. fit a linear regression latent -> k (scikit-learn; ordinary least squares, or ridge when
   `ridge` > 0) in Z space (z) and in W space (w);
4. for N_ts real images projected into each space (`pipeline.analysis.projection`), predict their
   keypoints from their latents and compare with K applied to the REAL images.
KPL(random) is the same fit after randomly permuting the training latents against their keypoints:
the regression then learns little more than the mean keypoints, so it measures the keypoint
variability a latent space has to explain (a control, about equal for two models on one dataset).

Convention: KPL = mean over the N_ts images, the keypoints and both coordinates of the squared
error, keypoints in [0, 1] image coordinates (so an error of one pixel in x only, at 32 px, adds
(1/32)^2 / 2 for that keypoint). Per-keypoint values average over images and coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.analysis.keypoints import KeypointExtractor
from pipeline.analysis.options import KPLOptions
from pipeline.metrics.scoring import NOISE_SEED, seeded_global_rng

CONVENTION = (
    "mean over images, keypoints and the (x, y) coordinates of the squared error; keypoints in [0, 1] image coordinates"
)


@torch.no_grad()
def sample_keypoints(
    G: nn.Module,
    extractor: KeypointExtractor,
    num: int,
    seed: int,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z (num, z_dim), w (num, w_dim) and K(G.synthesize(w)) (num, K, 2) for seeded z ~ N(0, I)."""
    device = next(iter(G.parameters()), torch.empty(0)).device
    training = G.training
    G.eval()
    gen = torch.Generator().manual_seed(seed)
    zs, ws, kps = [], [], []
    # StyleGAN2's noise inputs come from the global RNG: fixed here so that Algorithm 1 repeats exactly.
    try:
        with seeded_global_rng(NOISE_SEED + seed, device):
            for start in range(0, num, batch_size):
                z = torch.randn(min(batch_size, num - start), G.z_dim, generator=gen)
                w = G.mapping(z.to(device))
                images = G.synthesize(w).clamp(-1, 1).float().cpu()
                zs.append(z.numpy()), ws.append(w.float().cpu().numpy()), kps.append(extractor(images))
                if progress is not None:
                    progress(len(z))
    finally:
        G.train(training)
    return np.concatenate(zs), np.concatenate(ws), np.concatenate(kps)


def fit_linear(latents: np.ndarray, keypoints: np.ndarray, ridge: float = 0.0):
    """A fitted scikit-learn regression latents (N, D) -> keypoints flattened (N, 2K)."""
    from sklearn.linear_model import LinearRegression, Ridge

    model = Ridge(alpha=ridge) if ridge > 0 else LinearRegression()
    return model.fit(np.asarray(latents, np.float64), keypoints.reshape(len(keypoints), -1).astype(np.float64))


def squared_errors(model, latents: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(N, K, 2) squared errors of the regression's predictions."""
    pred = model.predict(np.asarray(latents, np.float64)).reshape(keypoints.shape)
    return (pred - keypoints.astype(np.float64)) ** 2


def _summary(errors: np.ndarray, names: Sequence[str]) -> dict:
    return {
        "mean": float(errors.mean()),
        "per_keypoint": {n: float(v) for n, v in zip(names, errors.mean(axis=(0, 2)))},
    }


def keypoint_prediction_loss(
    train_latents: Mapping[str, np.ndarray],
    train_keypoints: np.ndarray,
    test_latents: Mapping[str, np.ndarray],
    test_keypoints: np.ndarray,
    names: Sequence[str],
    options: KPLOptions = KPLOptions(),
) -> dict:
    """KPL per latent space, its random-permutation control, and the fit on held-out generated samples.

    train_latents/test_latents: {"z": ..., "w": ...} (any subset); train_keypoints (N_tr, K, 2) are
    K(G(latent)); test_keypoints (N_ts, K, 2) are K(real image) for the projected test latents."""
    if train_keypoints.ndim != 3 or train_keypoints.shape[-1] != 2 or len(names) != train_keypoints.shape[1]:
        raise ValueError(f"train keypoints must be (N, {len(names)}, 2), got {train_keypoints.shape}")
    if test_keypoints.shape[1:] != train_keypoints.shape[1:]:
        raise ValueError(f"test keypoints {test_keypoints.shape} and train keypoints {train_keypoints.shape} disagree")
    n = len(train_keypoints)
    if n < options.num_train:
        raise ValueError(
            f"{n} generated samples, but KPL fits on N_tr = num_train = {options.num_train}; "
            f"generate options.num_generated = {options.num_generated} (N_tr plus the held-out check samples)"
        )
    n_check = n - options.num_train  # the fit uses exactly N_tr samples, as Algorithm 1
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(n)
    fit_idx, check_idx = order[: n - n_check], order[n - n_check :]
    permutation = rng.permutation(len(fit_idx))
    result: dict = {
        "convention": CONVENTION,
        "num_train": int(len(fit_idx)),
        "num_test": int(len(test_keypoints)),
        "num_keypoints": int(train_keypoints.shape[1]),
        "regression": f"ridge(alpha={options.ridge})" if options.ridge > 0 else "ordinary least squares",
        "spaces": {},
    }
    for space, lat in train_latents.items():
        if space not in test_latents:
            raise ValueError(
                f"no projected test latents for space {space!r}; projected spaces: {', '.join(test_latents)}"
            )
        if len(lat) != n:
            raise ValueError(f"{space}: {len(lat)} training latents for {n} keypoint sets")
        lat = np.asarray(lat)
        k_fit = train_keypoints[fit_idx]
        model = fit_linear(lat[fit_idx], k_fit, options.ridge)
        shuffled = fit_linear(lat[fit_idx][permutation], k_fit, options.ridge)
        entry = {
            "kpl": _summary(squared_errors(model, test_latents[space], test_keypoints), names),
            "kpl_random": _summary(squared_errors(shuffled, test_latents[space], test_keypoints), names),
            "fit_train_mse": float(squared_errors(model, lat[fit_idx], k_fit).mean()),
        }
        if n_check:
            entry["fit_generated_heldout_mse"] = float(
                squared_errors(model, lat[check_idx], train_keypoints[check_idx]).mean()
            )
        result["spaces"][space] = entry
    spaces = result["spaces"]
    for space in spaces:
        result[f"kpl_{space}"] = spaces[space]["kpl"]["mean"]
        result[f"kpl_random_{space}"] = spaces[space]["kpl_random"]["mean"]
    # Table 3 has one KPL(random) column; it is the W-space control (Z's is reported beside it).
    result["kpl_random"] = result.get("kpl_random_w", result.get("kpl_random_z"))
    result["mean_keypoint_variance"] = float(((test_keypoints - train_keypoints.mean(0)) ** 2).mean())
    return result
