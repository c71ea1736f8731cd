"""Deterministic procedural faces with exact keypoints and attributes: offline stand-in for FFHQ.

Each face is a cartoon portrait (background, head, ears, hair, eyes, brows, nose, mouth) whose
geometry and colours are drawn from ``np.random.default_rng([seed, index])``, so face ``index``
depends on nothing else: chunks, orders and processes all give identical pixels.

Conventions
-----------
* Images are uint8 RGB, ``(N, S, S, 3)``, rows first.
* Keypoints are ``(x, y)`` in ``[0, 1]``: x along the width, y down the height. Pixel column ``j``
  covers ``[j / S, (j + 1) / S)``, so keypoint ``(x, y)`` lies in pixel
  ``(row=floor(y * S), col=floor(x * S))``.
* "left" and "right" in keypoint names mean image left and image right (the viewer's side),
  not the depicted person's.
* Attributes are small integers indexing the value names in ``ATTRIBUTES``; the combined class
  label is their mixed-radix number, the first attribute most significant.

Geometry is built in a face frame (origin at the head centre, head half-height 1, y down) and
mapped to the image by one similarity transform (roll about the head centre, scale, translation)
applied to drawn polygons and keypoints alike, so keypoints are exact up to the polygon
approximation of ellipses and the rasteriser's edge rule (about a tenth of a pixel).
"""

from __future__ import annotations

import colorsys
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_outer",
    "left_eye_inner",
    "right_eye_inner",
    "right_eye_outer",
    "left_brow_center",
    "right_brow_center",
    "nose_tip",
    "mouth_left",
    "mouth_right",
    "mouth_center",
    "chin",
    "face_left",
    "face_right",
    "forehead",
)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair": ("none", "short", "long"),
    "smile": ("neutral", "smiling"),
    "skin": ("light", "medium", "dark"),
}

NUM_CLASSES: int = int(np.prod([len(values) for values in ATTRIBUTES.values()]))

SUPPORTED_RESOLUTIONS = (32, 64, 128)

# Polygon filling is aliased; drawing at 4x and box-averaging gives 16 coverage levels per pixel.
_SUPERSAMPLE = 4
# Fraction of the frame kept free on every side: over one pixel at 32 px, so no face touches the
# border pixels.
_MARGIN = 0.04
# Face-frame height at which face_left/face_right sit on the head outline: below the ears, so that
# just outside these keypoints there is never skin-coloured ear.
_CHEEK_Y = 0.35
_FOREHEAD_Y = -0.55

_SKIN_TONES = ((236.0, 198.0, 170.0), (192.0, 138.0, 98.0), (104.0, 68.0, 48.0))
_HAIR_COLOURS = ((30.0, 26.0, 24.0), (72.0, 46.0, 30.0), (110.0, 72.0, 42.0), (214.0, 182.0, 110.0))
_IRIS_COLOURS = (
    (100.0, 60.0, 35.0),
    (60.0, 110.0, 180.0),
    (70.0, 130.0, 80.0),
    (120.0, 130.0, 140.0),
)
# Hair closer than this (RGB distance) to the skin tone would be hard to see at 32 px, so each
# skin tone only gets the hair colours that contrast with it.
_MIN_HAIR_SKIN_DISTANCE = 80.0
_CONTRASTING_HAIR = tuple(
    tuple(
        i for i, hair in enumerate(_HAIR_COLOURS) if np.linalg.norm(np.subtract(hair, tone)) >= _MIN_HAIR_SKIN_DISTANCE
    )
    for tone in _SKIN_TONES
)

RGB = tuple[int, int, int]


@dataclass(frozen=True, eq=False)  # field-wise == is ambiguous for arrays
class FaceBatch:
    """A batch of rendered faces with their ground truth."""

    images: np.ndarray  # uint8 (N, S, S, 3), RGB
    keypoints: np.ndarray  # float32 (N, K, 2), (x, y) in [0, 1]
    attributes: np.ndarray  # int64 (N, len(ATTRIBUTES))
    labels: np.ndarray  # int64 (N,), combined class in [0, NUM_CLASSES)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FaceParams:
    """Everything sampled for one face; lengths are in face-frame units (head half-height 1)."""

    hair: int
    smile: int
    skin: int
    centre: tuple[float, float]  # head centre in image coordinates
    scale: float  # head half-height as a fraction of the image side
    roll: float  # radians, positive turns clockwise on screen (y points down)
    aspect: float  # head half-width
    gradient: str  # "none", "vertical" or "horizontal"
    background: tuple[RGB, RGB]  # start and end of the gradient
    skin_rgb: RGB
    ear_rgb: RGB
    hair_rgb: RGB
    brow_rgb: RGB
    nose_rgb: RGB
    mouth_rgb: RGB
    sclera_rgb: RGB
    iris_rgb: RGB
    pupil_rgb: RGB
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    iris_r: float
    pupil_r: float
    brow_dy: float
    brow_len: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float
    nose_y: float
    nose_w: float
    nose_len: float
    mouth_y: float  # lip line at the middle; the mouth_center keypoint is midway between the lips
    mouth_w: float
    mouth_curve: float  # height of the corners above the centre; > 0 is a smile
    lip_upper: float
    lip_lower: float
    ear_y: float
    ear_w: float
    ear_h: float
    hair_width: float  # how far hair reaches beyond the head at the sides
    hair_height: float  # how far hair reaches above the head
    hair_length: float  # lowest point of long hair
    fringe_y: float
    fringe_tilt: float
    fringe_bow: float

    @property
    def attributes(self) -> tuple[int, ...]:
        return (self.hair, self.smile, self.skin)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map face-frame points ``(..., 2)`` to image coordinates in ``[0, 1]``."""
        return _similarity(points, self.centre, self.scale, self.roll)


def sample_face_params(seed: int, index: int) -> FaceParams:
    """Draw the parameters of face ``index`` for ``seed``; exposed for tests and inspection."""
    u = _Uniforms(np.random.default_rng([seed, index]))
    hair, smile, skin = (u.choice(len(values)) for values in ATTRIBUTES.values())

    brightness = u(0.94, 1.06)
    skin_f = [(tone + u(-10, 10)) * brightness for tone in _SKIN_TONES[skin]]
    hair_f = [c + u(-8, 8) for c in _HAIR_COLOURS[u.pick(_CONTRASTING_HAIR[skin])]]
    iris_f = [c + u(-10, 10) for c in u.pick(_IRIS_COLOURS)]

    # Hues from green through blue to magenta never resemble skin, hair or lips.
    hue, sat, val = u(1 / 3, 5 / 6), u(0.15, 0.5), u(0.5, 0.95)
    val_end = min(max(val + u(-0.2, 0.2), 0.45), 1.0)
    gradient = u.pick(("none", "none", "vertical", "horizontal"))
    background = (_hsv(hue, sat, val), _hsv(hue, sat, val_end if gradient != "none" else val))

    smiling = smile == 1
    eye_y = u(-0.18, -0.08)
    eye_h = u(0.08, 0.1)
    iris_r = eye_h * u(0.8, 0.95)
    nose_shade = u(0.72, 0.8)
    draft = FaceParams(
        hair=hair,
        smile=smile,
        skin=skin,
        centre=(0.0, 0.0),
        scale=u(0.28, 0.33),
        roll=u(-0.3, 0.3),
        aspect=u(0.74, 0.86),
        gradient=gradient,
        background=background,
        skin_rgb=_rgb(skin_f),
        ear_rgb=_rgb([c * 0.9 for c in skin_f]),
        hair_rgb=_rgb(hair_f),
        brow_rgb=_rgb([c * 0.85 for c in hair_f]),
        nose_rgb=_rgb([c * nose_shade for c in skin_f]),
        mouth_rgb=_rgb([c + u(-15, 15) for c in (175.0, 45.0, 60.0)]),
        sclera_rgb=_rgb([c + u(-8, 8) for c in (242.0, 240.0, 235.0)]),
        iris_rgb=_rgb(iris_f),
        pupil_rgb=_rgb([c + u(-6, 6) for c in (18.0, 18.0, 22.0)]),
        eye_dx=u(0.30, 0.36),
        eye_y=eye_y,
        eye_w=u(0.14, 0.17),
        eye_h=eye_h,
        iris_r=iris_r,
        pupil_r=iris_r * u(0.4, 0.55),
        brow_dy=u(0.16, 0.2),
        brow_len=u(0.11, 0.15),
        brow_thick=u(0.022, 0.032),
        brow_arch=u(0.0, 0.04),
        brow_tilt=u(-0.03, 0.04),
        nose_y=u(0.14, 0.24),
        nose_w=u(0.07, 0.1),
        nose_len=u(0.18, 0.26),
        mouth_y=u(0.46, 0.56),
        # Smiles are wide open crescents, neutral mouths narrow flat lenses: tellable at 32 px.
        mouth_w=u(0.3, 0.38) if smiling else u(0.2, 0.27),
        mouth_curve=u(0.11, 0.17) if smiling else u(-0.015, 0.015),
        lip_upper=u(0.025, 0.035) if smiling else u(0.045, 0.06),
        lip_lower=u(0.1, 0.14) if smiling else u(0.045, 0.06),
        ear_y=eye_y + u(0.02, 0.1),
        ear_w=u(0.08, 0.12),
        ear_h=u(0.15, 0.2),
        hair_width=u(0.14, 0.22) if hair == 2 else u(0.04, 0.08),
        hair_height=u(0.08, 0.14),
        hair_length=u(0.85, 1.15),
        fringe_y=u(-0.78, -0.64),
        fringe_tilt=u(-0.08, 0.08),
        fringe_bow=u(0.0, 0.1),
    )
    return _place_in_frame(draft, offset=(u(-0.06, 0.06), u(-0.06, 0.06)))


class _Uniforms:
    """Hands out uniforms from one vectorised draw: a Generator call per number costs ~20x more."""

    # A face uses about 60; a fixed count keeps the stream independent of the face drawn.
    _COUNT = 80

    def __init__(self, rng: np.random.Generator) -> None:
        self._values = rng.random(self._COUNT).tolist()
        self._next = 0

    def __call__(self, low: float, high: float) -> float:
        value = self._values[self._next]
        self._next += 1
        return low + (high - low) * value

    def choice(self, count: int) -> int:
        return min(int(self(0.0, count)), count - 1)

    def pick(self, options: Sequence):
        return options[self.choice(len(options))]


def render_faces(indices: Sequence[int] | np.ndarray, resolution: int, seed: int) -> FaceBatch:
    """Render faces ``indices`` of dataset ``seed`` at ``resolution`` x ``resolution`` pixels."""
    resolution = _check_resolution(resolution)
    _check_seed(seed)
    index_array = np.asarray(indices)
    if index_array.size == 0:
        index_array = index_array.astype(np.int64).reshape(0)
    if index_array.ndim != 1 or not np.issubdtype(index_array.dtype, np.integer):
        raise ValueError(
            f"indices must be a 1-D sequence of integers, got shape {index_array.shape} and dtype {index_array.dtype}"
        )
    if (index_array < 0).any():
        raise ValueError(f"indices must be non-negative, got {int(index_array.min())}; face numbers start at 0")

    n = len(index_array)
    images = np.empty((n, resolution, resolution, 3), dtype=np.uint8)
    keypoints = np.empty((n, len(KEYPOINT_NAMES), 2), dtype=np.float32)
    attributes = np.empty((n, len(ATTRIBUTES)), dtype=np.int64)
    for row, index in enumerate(index_array.tolist()):
        params = sample_face_params(seed, index)
        images[row], keypoints[row] = _render_one(params, resolution)
        attributes[row] = params.attributes
    return FaceBatch(images, keypoints, attributes, attributes_to_labels(attributes))


def iter_faces(num_images: int, resolution: int, seed: int, chunk_size: int = 1024) -> Iterator[FaceBatch]:
    """Yield faces ``0 .. num_images - 1`` in batches of at most ``chunk_size``.

    Arguments are checked on the call, not on the first ``next``.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    resolution = _check_resolution(resolution)
    _check_seed(seed)
    starts = range(0, num_images, chunk_size)
    return (render_faces(np.arange(start, min(start + chunk_size, num_images)), resolution, seed) for start in starts)


def attributes_to_labels(attributes: np.ndarray) -> np.ndarray:
    """Combine attribute columns ``(N, len(ATTRIBUTES))`` into mixed-radix class labels ``(N,)``."""
    labels = np.zeros(len(attributes), dtype=np.int64)
    for column, values in enumerate(ATTRIBUTES.values()):
        labels = labels * len(values) + attributes[:, column]
    return labels


def face_keypoints(params: FaceParams) -> np.ndarray:
    """Keypoints of one face in the face frame, ``(K, 2)`` in ``KEYPOINT_NAMES`` order."""
    p = params
    a = p.aspect
    left_eye, right_eye = -p.eye_dx, p.eye_dx
    brow_y = p.eye_y - p.brow_dy - p.brow_arch
    cheek_x = a * np.sqrt(1.0 - _CHEEK_Y**2)
    corner_y = p.mouth_y - p.mouth_curve
    return np.array(
        [
            (left_eye, p.eye_y),
            (right_eye, p.eye_y),
            (left_eye - p.eye_w, p.eye_y),
            (left_eye + p.eye_w, p.eye_y),
            (right_eye - p.eye_w, p.eye_y),
            (right_eye + p.eye_w, p.eye_y),
            (left_eye, brow_y),
            (right_eye, brow_y),
            (0.0, p.nose_y),
            (-p.mouth_w, corner_y),
            (p.mouth_w, corner_y),
            (0.0, p.mouth_y + (p.lip_lower - p.lip_upper) / 2),
            (0.0, 1.0),
            (-cheek_x, _CHEEK_Y),
            (cheek_x, _CHEEK_Y),
            (0.0, _FOREHEAD_Y),
        ]
    )


def _render_one(params: FaceParams, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    size = resolution * _SUPERSAMPLE
    layers = _face_layers(params)
    # One transform for all polygons and keypoints keeps them consistent by construction.
    face_points = np.concatenate([points for points, _ in layers] + [face_keypoints(params)])
    image_points = params.to_image(face_points)

    canvas = _background(params, size)
    draw = ImageDraw.Draw(canvas)
    pixel_points = image_points * size
    start = 0
    for points, colour in layers:
        stop = start + len(points)
        draw.polygon(pixel_points[start:stop].ravel().tolist(), fill=colour)
        start = stop
    small = canvas.reduce(_SUPERSAMPLE)  # exact box average, several times faster than resize
    return np.asarray(small), image_points[start:]


def _face_layers(p: FaceParams) -> list[tuple[np.ndarray, RGB]]:
    """Filled polygons in the face frame, in painting order (later ones cover earlier ones)."""
    layers = _outer_layers(p)
    if p.hair > 0:

        def fringe_limit(x: np.ndarray) -> np.ndarray:
            across = x / p.aspect
            return p.fringe_y + p.fringe_tilt * across + p.fringe_bow * across**2

        layers.append((_ellipse_cap(p.aspect, 1.0, fringe_limit), p.hair_rgb))

    nose_top = (0.0, p.nose_y - p.nose_len)
    nose_base = [(0.9 * p.nose_w, p.nose_y + 0.01), (-0.9 * p.nose_w, p.nose_y + 0.01)]
    layers.append((np.array([nose_top, *nose_base]), p.nose_rgb))
    layers.append((_ellipse(0.0, p.nose_y, p.nose_w, 0.055, 24), p.nose_rgb))

    layers.append((_mouth(p), p.mouth_rgb))

    for side in (-1.0, 1.0):
        x = side * p.eye_dx
        layers.append((_ellipse(x, p.eye_y, p.eye_w, p.eye_h, 32), p.sclera_rgb))
        layers.append((_ellipse(x, p.eye_y, p.iris_r, p.iris_r, 24), p.iris_rgb))
        layers.append((_ellipse(x, p.eye_y, p.pupil_r, p.pupil_r, 16), p.pupil_rgb))
        layers.append((_brow(p, side), p.brow_rgb))
    return layers


def _outer_layers(p: FaceParams) -> list[tuple[np.ndarray, RGB]]:
    """Ears, back hair and head: together they reach the face's outermost extent."""
    a = p.aspect
    layers = [(_ellipse(side * 0.97 * a, p.ear_y, p.ear_w, p.ear_h, 24), p.ear_rgb) for side in (-1.0, 1.0)]
    hair_rx, hair_ry = a + p.hair_width, 1.0 + p.hair_height
    if p.hair == 1:
        # Cut above the ears so short hair reads as a cap, not as long hair.
        layers.append((_ellipse_cap(hair_rx, hair_ry, lambda x: np.full_like(x, -0.3)), p.hair_rgb))
    elif p.hair == 2:
        layers.append((_ellipse_cap(hair_rx, hair_ry, np.zeros_like), p.hair_rgb))
        inner = 0.45 * a
        for side in (-1.0, 1.0):
            curtain = [
                (side * hair_rx, 0.0),
                (side * (hair_rx + 0.04), p.hair_length),
                (side * inner, p.hair_length),
                (side * inner, 0.0),
            ]
            layers.append((np.array(curtain), p.hair_rgb))
    layers.append((_ellipse(0.0, 0.0, a, 1.0, 64), p.skin_rgb))
    return layers


def _mouth(p: FaceParams) -> np.ndarray:
    # The centre line rises towards the corners by mouth_curve; the lips taper to pointed corners.
    t = _MOUTH_T
    x = p.mouth_w * t
    centre_line = p.mouth_y - p.mouth_curve * t**2
    bulge = 1.0 - t**2
    upper = np.stack([x, centre_line - p.lip_upper * bulge], axis=1)
    lower = np.stack([x, centre_line + p.lip_lower * bulge], axis=1)
    return np.concatenate([upper, lower[-2:0:-1]])


def _brow(p: FaceParams, side: float) -> np.ndarray:
    t = _BROW_T
    x = side * p.eye_dx + p.brow_len * t
    outwardness = side * t  # +1 at the end nearer the ear
    centre_line = p.eye_y - p.brow_dy - p.brow_arch * (1.0 - t**2) - p.brow_tilt * outwardness
    half = p.brow_thick * (1.0 - 0.4 * t**2)
    upper = np.stack([x, centre_line - half], axis=1)
    lower = np.stack([x, centre_line + half], axis=1)
    return np.concatenate([upper, lower[::-1]])


def _place_in_frame(draft: FaceParams, offset: tuple[float, float]) -> FaceParams:
    """Fix scale and centre so the whole face, hair included, stays inside the margins."""
    outline = np.concatenate([points for points, _ in _outer_layers(draft)])
    extent = _similarity(outline, (0.0, 0.0), draft.scale, draft.roll)
    low, high = extent.min(axis=0), extent.max(axis=0)
    room = 1.0 - 2.0 * _MARGIN
    shrink = min(1.0, room / float((high - low).max()))
    low, high = low * shrink, high * shrink
    nominal = np.array([0.5, 0.52]) + offset
    centre = np.clip(nominal, _MARGIN - low, 1.0 - _MARGIN - high)
    return dataclasses.replace(draft, scale=draft.scale * shrink, centre=(float(centre[0]), float(centre[1])))


def _similarity(points: np.ndarray, centre: tuple[float, float], scale: float, roll: float) -> np.ndarray:
    cos, sin = np.cos(roll), np.sin(roll)
    linear = scale * np.array([[cos, -sin], [sin, cos]])
    return points @ linear.T + np.asarray(centre)


def _background(p: FaceParams, size: int) -> Image.Image:
    start, end = p.background
    if p.gradient == "none":
        return Image.new("RGB", (size, size), start)
    ramp = np.linspace(start, end, size).round().astype(np.uint8)
    # A one-pixel-thick ramp stretched with NEAREST is far cheaper than a full gradient array.
    if p.gradient == "vertical":
        strip = Image.fromarray(ramp[:, None, :])
    else:
        strip = Image.fromarray(ramp[None, :, :])
    return strip.resize((size, size), Image.Resampling.NEAREST)


_MOUTH_T = np.linspace(-1.0, 1.0, 25)
_BROW_T = np.linspace(-1.0, 1.0, 13)
_CAP_COS = np.cos(np.linspace(np.pi, 2.0 * np.pi, 33))
_CAP_SIN = np.sin(np.linspace(np.pi, 2.0 * np.pi, 33))
_UNIT_CIRCLES: dict[int, np.ndarray] = {}


def _ellipse(cx: float, cy: float, rx: float, ry: float, vertices: int) -> np.ndarray:
    circle = _UNIT_CIRCLES.get(vertices)
    if circle is None:
        angle = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
        circle = _UNIT_CIRCLES.setdefault(vertices, np.stack([np.cos(angle), np.sin(angle)], 1))
    return circle * (rx, ry) + (cx, cy)


def _ellipse_cap(rx: float, ry: float, limit_y) -> np.ndarray:
    """Part of the origin-centred ellipse above the curve ``y = limit_y(x)`` (limit below 0)."""
    x = rx * _CAP_COS
    top = ry * _CAP_SIN
    bottom = np.maximum(limit_y(x), top)
    return np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])


def _hsv(hue: float, sat: float, val: float) -> RGB:
    return _rgb([255.0 * c for c in colorsys.hsv_to_rgb(hue, sat, val)])


def _rgb(colour: Sequence[float]) -> RGB:
    r, g, b = (min(max(round(c), 0), 255) for c in colour)
    return (r, g, b)


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or resolution not in SUPPORTED_RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r} is not supported; choose one of {SUPPORTED_RESOLUTIONS}")
    return int(resolution)


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
