from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.analysis import WeightsError
from pipeline.analysis.keypoints import (
    FAN_FILE,
    FAN_URL,
    FANKeypoints,
    build_fan,
    heatmap_argmax,
    keypoint_mse,
    load_regressor,
    save_regressor,
    train_keypoint_regressor,
)
from pipeline.data import synthetic_faces


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces.render_faces(np.arange(1200), 32, seed=3)


@pytest.fixture(scope="module")
def fan_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("fan") / "fan4.pth"
    torch.manual_seed(0)
    torch.save(build_fan(4).state_dict(), path)
    return path


def test_heatmap_argmax_centre_and_quarter_cell_refinement():
    hm = torch.zeros(1, 2, 64, 64)
    hm[0, 0, 10, 20] = 1.0  # isolated peak: cell centre
    hm[0, 1, 30, 40] = 1.0
    hm[0, 1, 30, 41] = 0.5  # right neighbour larger -> +0.25 cell in x
    hm[0, 1, 29, 40] = 0.5  # upper neighbour larger -> -0.25 cell in y
    pts = heatmap_argmax(hm)[0]
    assert torch.allclose(pts[0], torch.tensor([20.5 / 64, 10.5 / 64]))
    assert torch.allclose(pts[1], torch.tensor([40.75 / 64, 30.25 / 64]))


def test_fan_with_random_weights_returns_68_points_per_face(faces, fan_weights):
    K = FANKeypoints(weights=fan_weights, device="cpu")
    out = K(faces.images[:2])
    assert out.shape == (2, 68, 2) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_fan_maps_heatmap_peaks_through_the_box_to_image_coordinates(fan_weights):
    K = FANKeypoints(weights=fan_weights, box=(0.25, 0.25, 0.75, 0.75))
    hm = torch.zeros(1, 68, 64, 64)
    hm[0, :, 10, 20] = 1.0
    K.net = lambda x: [hm.expand(len(x), -1, -1, -1)]
    out = K(np.zeros((1, 40, 40, 3), np.uint8))
    assert np.allclose(out[0, 0], [0.25 + 0.5 * 20.5 / 64, 0.25 + 0.5 * 10.5 / 64])


def test_fan_errors(tmp_path, monkeypatch, fan_weights):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        FANKeypoints()
    assert FAN_FILE in str(err.value) and FAN_URL in str(err.value) and str(tmp_path / "torch") in str(err.value)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a FAN-4 state dict"):
        FANKeypoints(weights=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="box"):
        FANKeypoints(weights=fan_weights, box=(0.5, 0, 0.4, 1))
    # the hub cache is used when no path is given
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / FAN_FILE).write_bytes(fan_weights.read_bytes())
    assert FANKeypoints().net is not None


def test_keypoint_regressor_learns_synthetic_faces(faces, tmp_path):
    names = synthetic_faces.KEYPOINT_NAMES
    extractor, report = train_keypoint_regressor(faces.images, faces.keypoints, names, epochs=5, seed=0)
    # "typical KPL values" on these faces are of the order of the keypoint variance (the mean predictor's error)
    assert report["heldout_mse"] < 0.25 * report["mean_predictor_mse"], report
    assert report["num_heldout"] == 120 and set(report["per_keypoint_mse"]) == set(names)
    save_regressor(tmp_path / "r.pt", extractor, report)
    loaded = load_regressor(tmp_path / "r.pt")
    assert loaded.names == names and loaded.heldout_mse == report["heldout_mse"]
    np.testing.assert_array_equal(loaded(faces.images[:8]), extractor(faces.images[:8]))
    # larger inputs are resized to the regressor's resolution
    big = synthetic_faces.render_faces(np.arange(1200, 1264), 64, seed=3)
    assert keypoint_mse(extractor(big.images), big.keypoints) < 0.5 * report["mean_predictor_mse"]


def test_keypoint_regressor_is_deterministic_given_a_seed(faces):
    args = (faces.images[:200], faces.keypoints[:200], synthetic_faces.KEYPOINT_NAMES)
    a, ra = train_keypoint_regressor(*args, epochs=1, seed=1)
    b, rb = train_keypoint_regressor(*args, epochs=1, seed=1)
    c, rc = train_keypoint_regressor(*args, epochs=1, seed=2)
    assert ra["heldout_mse"] == rb["heldout_mse"] != rc["heldout_mse"]


def test_regressor_input_errors(tmp_path, faces):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_keypoint_regressor(faces.images[:10], faces.keypoints[:10], synthetic_faces.KEYPOINT_NAMES)
    with pytest.raises(ValueError, match="uint8"):
        train_keypoint_regressor(faces.images.astype(np.float32), faces.keypoints, synthetic_faces.KEYPOINT_NAMES)
    with pytest.raises(FileNotFoundError, match="pipeline keypoints"):
        load_regressor(tmp_path / "missing.pt")


def test_keypoint_regressor_trains_on_one_thread_whatever_the_process_has(faces):
    # As the domain network: the regressor is every KPL's yardstick, so its float sums must not depend on
    # the thread count (make repro trains it in a one-thread lane, plain dvc repro with all cores).
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args = (faces.images[:200], faces.keypoints[:200], synthetic_faces.KEYPOINT_NAMES)
        train_keypoint_regressor(*args, epochs=1, seed=1, progress=lambda _: seen.append(torch.get_num_threads()))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_saved_regressor_changes_only_with_the_regressor_not_its_training_time(faces, tmp_path):
    # data/keypoints is a DVC output the projections and KPL depend on: a training time inside it would
    # re-run them after every keypoints run, with equal weights
    from pipeline.io import sha256_file

    args = (faces.images[:200], faces.keypoints[:200], synthetic_faces.KEYPOINT_NAMES)
    extractor, report = train_keypoint_regressor(*args, epochs=1, seed=1)
    save_regressor(tmp_path / "a.pt", extractor, {**report, "seconds": 1.0})
    save_regressor(tmp_path / "b.pt", extractor, {**report, "seconds": 2.0})
    assert sha256_file(tmp_path / "a.pt") == sha256_file(tmp_path / "b.pt")
