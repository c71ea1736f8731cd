from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.analysis.kpl import keypoint_prediction_loss, sample_keypoints
from pipeline.analysis.options import KPLOptions

from .toy import LinearKeypointGenerator, RowKeypoints


def _real(G, n=20, seed=9):
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z)
        return {"z": z.numpy(), "w": w.numpy()}, RowKeypoints()(G.synthesize(w))


def test_kpl_of_linear_keypoints_is_zero_and_random_is_not():
    G, K = LinearKeypointGenerator(), RowKeypoints()
    options = KPLOptions(num_train=200, check_fraction=0.1)
    z, w, kp = sample_keypoints(G, K, options.num_generated, seed=0, batch_size=64)
    assert z.shape == (220, 4) and w.shape == (220, 4) and kp.shape == (220, 3, 2)
    test_latents, test_kp = _real(G)
    r = keypoint_prediction_loss({"z": z, "w": w}, kp, test_latents, test_kp, K.names, options)
    assert r["kpl_z"] < 1e-12 and r["kpl_w"] < 1e-12
    assert r["kpl_random"] > 1e-4 and r["kpl_random_z"] > 1e-4
    assert r["kpl_random"] == pytest.approx(r["mean_keypoint_variance"], rel=0.5)  # the control ~ keypoint variance
    assert set(r["spaces"]["w"]["kpl"]["per_keypoint"]) == {"a", "b", "c"}
    assert r["num_train"] == 200 and r["num_test"] == 20 and "squared error" in r["convention"]  # the fit uses all N_tr
    assert "fit_generated_heldout_mse" in r["spaces"]["w"]
    with pytest.raises(ValueError, match="N_tr = num_train = 200"):
        keypoint_prediction_loss({"w": w[:150]}, kp[:150], test_latents, test_kp, K.names, options)


def test_kpl_sees_projection_errors():
    G, K = LinearKeypointGenerator(), RowKeypoints()
    z, w, kp = sample_keypoints(G, K, 200, seed=0)
    test_latents, test_kp = _real(G)
    off = {s: v + 0.5 for s, v in test_latents.items()}  # badly projected latents
    r = keypoint_prediction_loss({"w": w}, kp, off, test_kp, K.names, KPLOptions(num_train=180))
    assert r["kpl_w"] > 1e-5 and "kpl_z" not in r


def test_kpl_input_errors():
    G, K = LinearKeypointGenerator(), RowKeypoints()
    z, w, kp = sample_keypoints(G, K, 50, seed=0)
    test_latents, test_kp = _real(G)
    with pytest.raises(ValueError, match="no projected test latents for space 'z'"):
        keypoint_prediction_loss({"z": z}, kp, {"w": test_latents["w"]}, test_kp, K.names, KPLOptions(num_train=45))
    with pytest.raises(ValueError, match="disagree"):
        keypoint_prediction_loss({"w": w}, kp, test_latents, test_kp[:, :2], K.names)


def test_sampling_is_seeded():
    G, K = LinearKeypointGenerator(), RowKeypoints()
    a, b = sample_keypoints(G, K, 10, seed=3), sample_keypoints(G, K, 10, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], sample_keypoints(G, K, 10, seed=4)[0])
