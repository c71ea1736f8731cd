"""FID and IS through torch-fidelity's TensorFlow-exact Inception v3, and what every feature
extractor shares: uint8 quantisation, one pass that gathers Gaussian statistics and logits, IS.

Images are scored as uint8 (N, 3, H, W), the way real images are stored: a generator's [-1, 1]
output is quantised with round((x + 1) * 127.5) clamped to 0..255 before any extractor sees it, so
fakes and reals go through the same path (a float path would score differently, see style.md).

Inception weights (`weights-inception-2015-12-05-6726825d.pth`, torch-fidelity's conversion of the
TensorFlow 2015-12-05 graph) are found, in order: at the path from params, in the torch hub cache
(`$TORCH_HOME/hub/checkpoints/`), by a download into that cache. When none works, WeightsNotFound
names the file, its URL and where to put it. Whichever file is found must have the sha256 that its
published name begins with (6726825d), even when renamed: FID is only comparable with those weights.
It is unpickled only here, with weights_only=True (tensors, no code), and torch-fidelity is handed the
state dict: its own loader uses weights_only=False, which runs whatever code a crafted file holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from pipeline.io import load_state_dict, sha256_file
from pipeline.metrics.frechet import GaussianAccumulator, GaussianStats

INCEPTION_EXTRACTOR = "inception-v3-compat"  # torch-fidelity's registry name
# torch-fidelity's URL_INCEPTION_V3 (a test checks they agree); torch_fidelity itself is imported
# only where it is used, as it pulls in torchvision: ~1 s more start-up for every stage and command.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]
INCEPTION_SHA256_PREFIX = "6726825d"  # the torch hub convention: the file name ends with its hash's first digits
INCEPTION_FEATURES = "2048"  # pool3, the FID layer
INCEPTION_FEATURE_DIMS = {"64": 64, "192": 192, "768": 768, "2048": 2048}
INCEPTION_LOGITS = "logits_unbiased"  # fc without bias, the IS layer (as torch-fidelity and TF do)
IS_SPLITS = 10


class WeightsNotFound(FileNotFoundError):
    """Feature-extractor weights could not be found or downloaded; the message says where to put them."""


class FeatureExtractor(Protocol):
    """What the scoring code needs of a feature network (Inception or the domain CNN)."""

    kind: str  # "inception" or "domain": stored with reference statistics
    fd_name: str  # metric name of the Frechet distance: "fid" or "fd_domain"
    is_name: str  # metric name of the inception-score formula: "is" or "is_domain"
    dim: int  # feature size
    weights_sha256: str

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 (N, 3, H, W) -> (features (N, dim), logits (N, classes)), float32 on the CPU."""
        ...


def quantize(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> uint8, exactly as real images are stored."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def nhwc_to_nchw(images: np.ndarray | Tensor) -> Tensor:
    """Prepared-dataset images (N, S, S, 3) uint8 -> (N, 3, S, S) uint8 tensor."""
    t = (
        torch.from_numpy(np.array(images, copy=True)) if isinstance(images, np.ndarray) else images
    )  # memory maps are read-only
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, S, S, 3), got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()


@dataclass
class FeatureSummary:
    """Gaussian statistics of the features and all logits of one image set."""

    stats: GaussianStats
    logits: Tensor  # (N, classes) float32


def summarize(
    batches: Iterable[Tensor], extractor: FeatureExtractor, progress: Callable[[int], None] | None = None
) -> FeatureSummary:
    """Run uint8 (N, 3, H, W) batches through `extractor`; `progress(images_done)` after each batch."""
    acc = GaussianAccumulator(extractor.dim)
    logits: list[Tensor] = []
    for images in batches:
        if images.dtype != torch.uint8:
            raise ValueError(f"feature extractors take uint8 images (use quantize()), got {images.dtype}")
        feats, lg = extractor(images)
        acc.update(feats)
        logits.append(lg.float().cpu())
        if progress is not None:
            progress(acc.count)
    return FeatureSummary(acc.stats(), torch.cat(logits))


def inception_score(logits: Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))), torch-fidelity's implementation."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    n = logits.shape[0]
    out = isc_features_to_metric(logits.double().cpu(), splits=max(1, min(splits, n)), shuffle=True, rng_seed=2020)
    return out["inception_score_mean"], out["inception_score_std"]


def resolve_inception_weights(
    path: str | Path | None = None, hub_dir: str | Path | None = None, download: bool = True
) -> Path:
    """The Inception weights file: `path` if given (it must exist), else the torch hub cache, else a
    download into the cache. Raises WeightsNotFound with the file name, URL and target folder."""
    cache = Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints"
    target = cache / INCEPTION_FILE
    advice = (
        f"download {INCEPTION_URL} and either put it at {target} or set reference.inception_weights "
        "in params.yaml to its path (offline, use the default profile's domain features instead: reference.features: domain)"
    )
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFound(f"Inception weights '{path}' (reference.inception_weights) do not exist; {advice}")
        return _checked(path, f"replace it with {INCEPTION_FILE} from {INCEPTION_URL}")
    if target.is_file():
        return _checked(target, "delete it: the next run downloads it again")
    if not download:
        raise WeightsNotFound(
            f"Inception weights {INCEPTION_FILE} are not in the torch hub cache and downloads are off; {advice}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    try:
        # download_url_to_file writes a temporary file and renames it only when the hash matches.
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), hash_prefix=INCEPTION_SHA256_PREFIX, progress=True)
    except Exception as err:  # noqa: BLE001 - any network or disk failure means the same to the user
        raise WeightsNotFound(f"could not download Inception weights {INCEPTION_FILE} ({err}); {advice}") from None
    return target


def _checked(path: Path, remedy: str) -> Path:
    digest = sha256_file(path)
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise WeightsNotFound(
            f"Inception weights '{path}' have sha256 {digest[:16]}..., not {INCEPTION_SHA256_PREFIX}... of {INCEPTION_FILE}: "
            f"another or a damaged file (FID is only comparable with the published weights), refused; {remedy}"
        )
    return path


@contextmanager
def _fidelity_state_dict(state: dict[str, Tensor]) -> Iterator[None]:
    # torch-fidelity's Inception loads a weights path with torch.load(weights_only=False) and, without
    # a path, fetches its state dict through load_state_dict_from_url: substitute the verified dict there.
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        fe.load_state_dict_from_url = original


class InceptionFeatures:
    """torch-fidelity's 'inception-v3-compat' extractor: pool3 features (2048) and unbiased logits (1008).

    It resizes every input to 299 x 299 with TensorFlow 1.x's bilinear rule, so any resolution works.
    `features` picks another of torch-fidelity's layers (64, 192, 768); FID is defined on 2048, the
    smaller ones only serve tests, where a 2048 x 2048 matrix square root takes minutes on one core."""

    kind = "inception"
    fd_name = "fid"
    is_name = "is"

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu", features: str = INCEPTION_FEATURES):
        from torch_fidelity.utils import create_feature_extractor

        if features not in INCEPTION_FEATURE_DIMS:
            raise ValueError(f"Inception feature layer {features!r} is not one of {', '.join(INCEPTION_FEATURE_DIMS)}")
        self.dim = INCEPTION_FEATURE_DIMS[features]
        self.device = torch.device(device)
        self.weights = Path(weights)
        self.weights_sha256 = sha256_file(self.weights)
        remedy = f"Replace it with {INCEPTION_FILE} from {INCEPTION_URL}."
        state = load_state_dict(self.weights, "Inception state dict", remedy, WeightsNotFound)
        try:
            with _fidelity_state_dict(state):
                self.model = create_feature_extractor(
                    INCEPTION_EXTRACTOR,
                    [features, INCEPTION_LOGITS],
                    cuda=False,
                    feature_extractor_weights_path=None,
                    verbose=False,
                ).to(self.device)
        except (RuntimeError, ValueError) as err:  # keys or shapes that are not torch-fidelity's Inception
            raise WeightsNotFound(f"'{self.weights}' is not a usable Inception state dict ({err}); {remedy}") from None

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        feats, logits = self.model(images.to(self.device))
        return feats.float().cpu(), logits.float().cpu()
