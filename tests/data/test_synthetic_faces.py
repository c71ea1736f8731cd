"""Tests for the synthetic faces generator: determinism, layout, keypoints on the drawn parts."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import synthetic_faces
from pipeline.data.synthetic_faces import (
    ATTRIBUTES,
    KEYPOINT_NAMES,
    NUM_CLASSES,
    SUPPORTED_RESOLUTIONS,
    FaceBatch,
    FaceParams,
    iter_faces,
    render_faces,
    sample_face_params,
)

KP = {name: k for k, name in enumerate(KEYPOINT_NAMES)}
SEED = 7


def _colour_distance(pixel, colour) -> float:
    return float(np.linalg.norm(np.asarray(pixel, dtype=np.float64) - np.asarray(colour)))


def _distance_to_segment(pixels, a, b) -> np.ndarray:
    """Distance from colours ``(..., 3)`` to the blends of colours a and b (anti-aliased edges)."""
    pixels, a, b = (np.asarray(c, dtype=np.float64) for c in (pixels, a, b))
    t = np.clip((pixels - a) @ (b - a) / max(np.dot(b - a, b - a), 1e-9), 0.0, 1.0)
    return np.linalg.norm(pixels - (a + t[..., None] * (b - a)), axis=-1)


def _pixel_at(image: np.ndarray, xy) -> np.ndarray:
    size = image.shape[0]
    return image[int(np.floor(xy[1] * size)), int(np.floor(xy[0] * size))]


def _to_face_frame(params: FaceParams, points: np.ndarray) -> np.ndarray:
    cos, sin = np.cos(params.roll), np.sin(params.roll)
    rotation = np.array([[cos, -sin], [sin, cos]])
    return (points - np.asarray(params.centre)) @ rotation / params.scale


def _render_with_params(indices, resolution):
    batch = render_faces(indices, resolution, SEED)
    return batch, [sample_face_params(SEED, i) for i in indices]


@pytest.fixture(scope="module")
def faces_32():
    # Enough faces that a few need the frame clamp (about one in 200 does).
    return _render_with_params(range(600), 32)


@pytest.fixture(scope="module")
def faces_128():
    return _render_with_params(range(60), 128)


@pytest.fixture(scope="module")
def faces_64():
    return _render_with_params(range(60), 64)


def test_same_seed_and_indices_give_identical_batches():
    first = render_faces([0, 5, 9], 64, SEED)
    second = render_faces([0, 5, 9], 64, SEED)
    for field in ("images", "keypoints", "attributes", "labels"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def test_face_depends_only_on_seed_and_index():
    full = render_faces(range(10), 32, SEED)
    shuffled = render_faces([9, 2, 5], 32, SEED)
    np.testing.assert_array_equal(shuffled.images, full.images[[9, 2, 5]])
    np.testing.assert_array_equal(shuffled.keypoints, full.keypoints[[9, 2, 5]])


def test_different_seeds_give_different_faces():
    a = render_faces(range(4), 32, 1)
    b = render_faces(range(4), 32, 2)
    for i in range(4):
        assert not np.array_equal(a.images[i], b.images[i])
        assert not np.allclose(a.keypoints[i], b.keypoints[i])


def test_chunked_iteration_equals_one_render():
    chunks = list(iter_faces(10, 32, SEED, chunk_size=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 2]
    whole = render_faces(np.arange(10), 32, SEED)
    for field in ("images", "keypoints", "attributes", "labels"):
        joined = np.concatenate([getattr(chunk, field) for chunk in chunks])
        np.testing.assert_array_equal(joined, getattr(whole, field))


def test_iter_faces_with_zero_images_yields_nothing():
    assert list(iter_faces(0, 32, SEED)) == []


def test_another_process_renders_identical_pixels():
    script = (
        "import hashlib, sys; from pipeline.data.synthetic_faces import render_faces; "
        f"b = render_faces([3, 11], 64, {SEED}); "
        "sys.stdout.write(hashlib.sha256(b.images.tobytes() + b.keypoints.tobytes()).hexdigest())"
    )
    # The child must import this same checkout, however pytest was launched.
    repo_root = str(Path(synthetic_faces.__file__).resolve().parents[2])
    python_path = os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": python_path}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    here = render_faces([3, 11], 64, SEED)
    expected = hashlib.sha256(here.images.tobytes() + here.keypoints.tobytes()).hexdigest()
    assert result.stdout == expected


@pytest.mark.parametrize("resolution", SUPPORTED_RESOLUTIONS)
def test_shapes_dtypes_and_ranges(resolution):
    batch = render_faces(range(5), resolution, SEED)
    assert isinstance(batch, FaceBatch)
    assert batch.images.shape == (5, resolution, resolution, 3)
    assert batch.images.dtype == np.uint8
    assert batch.keypoints.shape == (5, len(KEYPOINT_NAMES), 2)
    assert batch.keypoints.dtype == np.float32
    assert batch.attributes.shape == (5, len(ATTRIBUTES))
    assert batch.attributes.dtype == np.int64
    assert batch.labels.shape == (5,) and batch.labels.dtype == np.int64
    assert (batch.keypoints >= 0).all() and (batch.keypoints <= 1).all()


def test_empty_index_list_gives_empty_batch():
    batch = render_faces([], 64, SEED)
    assert batch.images.shape == (0, 64, 64, 3)
    assert batch.keypoints.shape == (0, len(KEYPOINT_NAMES), 2)


def test_api_constants_are_consistent():
    assert len(KEYPOINT_NAMES) >= 14 and len(set(KEYPOINT_NAMES)) == len(KEYPOINT_NAMES)
    assert NUM_CLASSES == int(np.prod([len(v) for v in ATTRIBUTES.values()]))


def test_labels_are_mixed_radix_of_attributes_and_cover_all_classes(faces_32):
    batch, _ = faces_32
    sizes = [len(v) for v in ATTRIBUTES.values()]
    expected = np.zeros(len(batch), dtype=np.int64)
    for column, size in enumerate(sizes):
        assert batch.attributes[:, column].min() >= 0
        assert batch.attributes[:, column].max() < size
        expected = expected * size + batch.attributes[:, column]
    np.testing.assert_array_equal(batch.labels, expected)
    assert set(batch.labels.tolist()) == set(range(NUM_CLASSES))


def test_attributes_match_sampled_params():
    batch = render_faces(range(20), 32, SEED)
    for i in range(20):
        assert tuple(batch.attributes[i]) == sample_face_params(SEED, i).attributes


def test_faces_stay_inside_the_frame(faces_32):
    batch, params = faces_32
    for image, p in zip(batch.images, params):
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        worst = _distance_to_segment(border, *p.background).max()
        assert worst < 4, f"face drawn over the border (colour distance {worst:.1f})"


def test_edges_are_anti_aliased(faces_32):
    batch, params = faces_32
    plain = [i for i, p in enumerate(params) if p.gradient == "none"][:10]
    for i in plain:
        colours = np.unique(batch.images[i].reshape(-1, 3), axis=0)
        # About a dozen flat fills; blended edge pixels add many more.
        assert len(colours) > 40


def test_keypoints_lie_inside_the_head(faces_128):
    batch, params = faces_128
    outline = {KP["chin"], KP["face_left"], KP["face_right"]}
    for keypoints, p in zip(batch.keypoints, params):
        face = _to_face_frame(p, keypoints.astype(np.float64))
        radius = np.hypot(face[:, 0] / p.aspect, face[:, 1])
        for k, r in enumerate(radius):
            if k in outline:
                assert abs(r - 1.0) < 1e-3, KEYPOINT_NAMES[k]
            else:
                assert r < 0.95, KEYPOINT_NAMES[k]


def test_left_and_right_mean_image_left_and_right(faces_128):
    batch, _ = faces_128
    x = batch.keypoints[..., 0]
    for left, right in [
        ("left_eye_center", "right_eye_center"),
        ("left_eye_outer", "left_eye_inner"),
        ("right_eye_inner", "right_eye_outer"),
        ("mouth_left", "mouth_right"),
        ("face_left", "face_right"),
    ]:
        assert (x[:, KP[left]] < x[:, KP[right]]).all(), (left, right)


@pytest.mark.parametrize("fixture, tolerance", [("faces_128", 20.0), ("faces_64", 45.0)])
def test_eye_centres_show_iris_or_pupil(fixture, tolerance, request):
    batch, params = request.getfixturevalue(fixture)
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        for name in ("left_eye_center", "right_eye_center"):
            pixel = _pixel_at(image, keypoints[KP[name]])
            assert _distance_to_segment(pixel, p.pupil_rgb, p.iris_rgb) < tolerance, name
            assert _colour_distance(pixel, p.sclera_rgb) > 60, name


@pytest.mark.parametrize("fixture, tolerance", [("faces_128", 12.0), ("faces_64", 30.0)])
def test_mouth_centre_has_mouth_colour(fixture, tolerance, request):
    batch, params = request.getfixturevalue(fixture)
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        pixel = _pixel_at(image, keypoints[KP["mouth_center"]])
        to_mouth = _colour_distance(pixel, p.mouth_rgb)
        assert to_mouth < tolerance and to_mouth < _colour_distance(pixel, p.skin_rgb) / 3


def test_nose_tip_is_on_the_nose(faces_128):
    batch, params = faces_128
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        pixel = _pixel_at(image, keypoints[KP["nose_tip"]])
        assert _colour_distance(pixel, p.nose_rgb) < 6
        assert _colour_distance(pixel, p.skin_rgb) > 12


def _outward_normal(p: FaceParams, face_point: np.ndarray) -> np.ndarray:
    normal = np.array([face_point[0] / p.aspect**2, face_point[1]])
    step = p.to_image(face_point + 1e-3 * normal / np.linalg.norm(normal)) - p.to_image(face_point)
    return step / np.linalg.norm(step)


def test_outline_keypoints_are_on_the_head_boundary(faces_128):
    batch, params = faces_128
    size = batch.images.shape[1]
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        face = _to_face_frame(p, keypoints.astype(np.float64))
        for name in ("chin", "face_left", "face_right"):
            point = keypoints[KP[name]].astype(np.float64)
            outward = _outward_normal(p, face[KP[name]])
            inside = _pixel_at(image, point - 2.0 / size * outward)
            outside = _pixel_at(image, point + 2.0 / size * outward)
            assert _colour_distance(inside, p.skin_rgb) < 6, name
            assert _colour_distance(outside, p.skin_rgb) > 30, name


def _face_point_pixel(image, p: FaceParams, face_xy) -> np.ndarray:
    return _pixel_at(image, p.to_image(np.asarray(face_xy, dtype=np.float64)))


def test_hair_covers_the_top_of_the_head_only_when_present(faces_128):
    batch, params = faces_128
    hair_values = ATTRIBUTES["hair"]
    seen = set()
    for image, p in zip(batch.images, params):
        forehead_top = _face_point_pixel(image, p, (0.0, -0.9))
        above_head = _face_point_pixel(image, p, (0.0, -1.0 - p.hair_height / 2))
        if hair_values[p.hair] == "none":
            assert _colour_distance(forehead_top, p.skin_rgb) < 6
            assert _colour_distance(above_head, p.hair_rgb) > 30
        else:
            assert _colour_distance(forehead_top, p.hair_rgb) < 6
            assert _colour_distance(above_head, p.hair_rgb) < 6
        seen.add(p.hair)
    assert seen == set(range(len(hair_values)))


def test_long_hair_hangs_beside_the_cheeks(faces_128):
    batch, params = faces_128
    for image, p in zip(batch.images, params):
        beside_cheek_x = (0.866 * p.aspect + p.aspect + p.hair_width) / 2
        for side in (-1.0, 1.0):
            pixel = _face_point_pixel(image, p, (side * beside_cheek_x, 0.5))
            if ATTRIBUTES["hair"][p.hair] == "long":
                assert _colour_distance(pixel, p.hair_rgb) < 6
            else:
                assert _colour_distance(pixel, p.hair_rgb) > 30


def test_forehead_keypoint_is_on_skin_below_any_fringe(faces_128):
    batch, params = faces_128
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        pixel = _pixel_at(image, keypoints[KP["forehead"]])
        assert _colour_distance(pixel, p.skin_rgb) < 6


def test_smiles_raise_the_drawn_mouth_corners(faces_128):
    batch, params = faces_128
    size = batch.images.shape[1]
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([(cols + 0.5) / size, (rows + 0.5) / size], axis=-1).reshape(-1, 2)
    lifts = {0: [], 1: []}
    keypoint_lifts = {0: [], 1: []}
    for image, keypoints, p in zip(batch.images, batch.keypoints, params):
        is_mouth = np.linalg.norm(image.reshape(-1, 3) - np.asarray(p.mouth_rgb), axis=1) < 25
        face = _to_face_frame(p, centres[is_mouth])
        across = np.abs(face[:, 0]) / p.mouth_w
        corner_y = face[across > 0.6, 1].mean()
        middle_y = face[across < 0.2, 1].mean()
        lifts[p.smile].append(middle_y - corner_y)

        kp_face = _to_face_frame(p, keypoints.astype(np.float64))
        corner_kp_y = (kp_face[KP["mouth_left"], 1] + kp_face[KP["mouth_right"], 1]) / 2
        keypoint_lifts[p.smile].append(kp_face[KP["mouth_center"], 1] - corner_kp_y)
    assert ATTRIBUTES["smile"] == ("neutral", "smiling")
    assert lifts[0] and lifts[1]
    assert max(lifts[0]) < 0.03 and min(lifts[1]) > 0.045, "drawn corners: flat vs raised"
    assert max(keypoint_lifts[0]) < 0.04 and min(keypoint_lifts[1]) > 0.1, "keypoints"


def test_skin_tones_form_separate_clusters():
    params = [sample_face_params(SEED, i) for i in range(300)]
    brightness = {tone: [] for tone in range(len(ATTRIBUTES["skin"]))}
    for p in params:
        brightness[p.skin].append(sum(p.skin_rgb))
    ranges = [(min(b), max(b)) for b in brightness.values()]
    # Ordered light, medium, dark with a clear gap between neighbours.
    for (low_a, _), (_, high_b) in zip(ranges, ranges[1:]):
        assert low_a - high_b > 60


@pytest.mark.parametrize("resolution", [0, 48, 256, 64.5])
def test_unsupported_resolution_is_rejected(resolution):
    with pytest.raises(ValueError, match=str(resolution)):
        render_faces([0], resolution, SEED)
    with pytest.raises(ValueError, match="32, 64, 128"):
        iter_faces(1, resolution, SEED)


def test_negative_counts_and_indices_are_rejected():
    with pytest.raises(ValueError, match="-3"):
        iter_faces(-3, 32, SEED)
    with pytest.raises(ValueError, match="-2"):
        render_faces([1, -2], 32, SEED)
    with pytest.raises(ValueError, match="-1"):
        render_faces([0], 32, -1)
    with pytest.raises(ValueError, match="0"):
        iter_faces(4, 32, SEED, chunk_size=0)
