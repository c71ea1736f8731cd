"""Analyses of trained generators: latent projection (`projection`), keypoint extractors (`keypoints`)
and the keypoint prediction loss of Table 3 (`kpl`).

Pretrained weights (VGG16, LPIPS, FAN, the face detector) are found by `locate_weights`, in the
order the design fixes: an explicit path, the torch hub cache, then a download only where the
caller allows one; otherwise a `WeightsError` names the file, its URL and where to put it. Every
loader unpickles them with weights_only=True (tensors, no code). Where the published file name carries
the first digits of its sha256 (torch hub's convention, e.g. vgg16-397923af.pth), a download must
match them or is discarded, and a file found under that name that does not match is warned about
(not refused: it cannot run code, and tests and users substitute their own state dicts).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from pipeline.io import sha256_file

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's HASH_REGEX, at least 6 digits


class WeightsError(FileNotFoundError):
    """Pretrained weights that cannot be found; the message says which file, from where, and where to put it."""


def hub_checkpoints_dir() -> Path:
    """torch's hub cache for checkpoints: $TORCH_HOME/hub/checkpoints (~/.cache/torch/... by default)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_prefix_in_name(filename: str) -> str | None:
    """The sha256 prefix a published weights file name carries ('vgg16-397923af.pth' -> '397923af'), if any."""
    match = _HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def _warn_if_hash_differs(what: str, path: Path, url: str) -> Path:
    prefix = sha256_prefix_in_name(path.name)
    if prefix is not None:
        digest = sha256_file(path)
        if not digest.startswith(prefix):
            warnings.warn(
                f"{what} weights '{path}' have sha256 {digest[:16]}..., not the {prefix}... their name promises: not the "
                f"file published at {url}; results computed with them are not comparable. Download it again if that is "
                f"not intended.",
                stacklevel=3,
            )
    return path


def locate_weights(
    what: str, filename: str, url: str, path: str | Path | None = None, allow_download: bool = False
) -> Path:
    """The local file holding `what`'s weights: `path` if given, else `filename` in the torch hub cache,
    else (only with `allow_download`) downloaded there from `url`, checked against the sha256 prefix
    `filename` carries. A found file whose name carries a prefix its content does not match is warned about."""
    if path is not None:
        path = Path(path)
        if path.is_file():
            return _warn_if_hash_differs(what, path, url)
        raise WeightsError(
            f"{what} weights: '{path}' does not exist. Download {url} and save it as '{path}', "
            f"or remove the path setting to use the torch hub cache ({hub_checkpoints_dir() / filename})."
        )
    cached = hub_checkpoints_dir() / filename
    if cached.is_file():
        return _warn_if_hash_differs(what, cached, url)
    if allow_download:
        import torch.hub

        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Written to a temporary file and renamed only when the hash matches the name's prefix.
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256_prefix_in_name(filename), progress=True)
        except Exception as err:  # noqa: BLE001 - any network failure leads to the same advice
            raise WeightsError(
                f"{what} weights: downloading {url} failed ({err}). Download it by hand and save it as '{cached}' "
                f"(the torch hub cache; set TORCH_HOME to move it) or pass its path in params.yaml."
            ) from None
        return cached
    raise WeightsError(
        f"{what} weights '{filename}' not found in the torch hub cache ({cached}). Download {url} and save it "
        f"there (set TORCH_HOME to move the cache), or set its path in params.yaml, or allow the download "
        f"(download: true) on a machine with internet access."
    )
