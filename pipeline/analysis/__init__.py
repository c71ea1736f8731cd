"""Analyses of trained generators: latent projection (`projection`), keypoint extractors (`keypoints`)
and the keypoint prediction loss of Table 3 (`kpl`).

Pretrained weights (VGG16, LPIPS, FAN, the face detector) are found by `locate_weights`, in the
order the design fixes: an explicit path, the torch hub cache, then a download only where the
caller allows one; otherwise a `WeightsError` names the file, its URL and where to put it.
"""

from __future__ import annotations

from pathlib import Path


class WeightsError(FileNotFoundError):
    """Pretrained weights that cannot be found; the message says which file, from where, and where to put it."""


def hub_checkpoints_dir() -> Path:
    """torch's hub cache for checkpoints: $TORCH_HOME/hub/checkpoints (~/.cache/torch/... by default)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def locate_weights(what: str, filename: str, url: str, path: str | Path | None = None, allow_download: bool = False) -> Path:
    """The local file holding `what`'s weights: `path` if given, else `filename` in the torch hub cache,
    else (only with `allow_download`) downloaded there from `url`."""
    if path is not None:
        path = Path(path)
        if path.is_file():
            return path
        raise WeightsError(
            f"{what} weights: '{path}' does not exist. Download {url} and save it as '{path}', "
            f"or remove the path setting to use the torch hub cache ({hub_checkpoints_dir() / filename})."
        )
    cached = hub_checkpoints_dir() / filename
    if cached.is_file():
        return cached
    if allow_download:
        import torch.hub

        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=True)
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
