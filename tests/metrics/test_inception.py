"""The torch-fidelity Inception path end to end with random (kaiming) weights written by the test,
quantisation, and where the weights come from (nothing is downloaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pipeline.metrics.inception as inception
from pipeline.metrics.frechet import frechet_distance_stats
from pipeline.metrics.inception import (
    INCEPTION_FILE,
    INCEPTION_URL,
    InceptionFeatures,
    WeightsNotFound,
    inception_score,
    quantize,
    resolve_inception_weights,
    summarize,
)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """A randomly initialised state dict of torch-fidelity's Inception, built without any download."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    mp = pytest.MonkeyPatch()
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    try:
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("weights") / INCEPTION_FILE
    torch.save(model.state_dict(), path)
    return path


def test_identical_sets_score_zero_and_different_sets_more(random_weights):
    # The whole network runs (the logits come last); the Frechet distance uses the 64-channel layer
    # because 2048-d statistics take tens of seconds on one shared core.
    ext = InceptionFeatures(random_weights, features="64")
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 3, 4, 4, generator=g), size=16, mode="bilinear")
    a = quantize(smooth * 2 - 1)
    b = quantize(torch.rand(6, 3, 16, 16, generator=g) * 2 - 1)
    sa, sb = summarize([a[:2], a[2:]], ext), summarize([b], ext)
    assert sa.logits.shape == (6, 1008) and sa.stats.mu.shape == (64,)
    assert sa.stats.sigma.diagonal().mean() > 0  # features are not degenerate
    same = frechet_distance_stats(sa.stats, sa.stats)
    diff = frechet_distance_stats(sa.stats, sb.stats)
    assert abs(same) < 1e-3 * diff
    assert diff > 0
    mean, std = inception_score(sa.logits)
    assert mean >= 1.0 and np.isfinite(std)


def test_default_layer_is_pool3_with_2048_features(random_weights):
    feats, logits = InceptionFeatures(random_weights)(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)


def test_quantize_matches_real_image_storage():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0])
    assert quantize(x).tolist() == [0, 0, 0, 128, 191, 255, 255]
    real = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(quantize(real.float() / 127.5 - 1), real)  # a real image survives the round trip


def test_weights_from_path_then_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "INCEPTION_SHA256_PREFIX", hashlib.sha256(b"x").hexdigest()[:8])
    given = tmp_path / "mine.pth"
    given.write_bytes(b"x")
    assert resolve_inception_weights(given, hub_dir=tmp_path / "hub", download=False) == given
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_inception_weights(None, hub_dir=tmp_path / "hub", download=False) == cached


def test_missing_weights_name_file_url_and_place(tmp_path):
    with pytest.raises(WeightsNotFound) as err:
        resolve_inception_weights(tmp_path / "nope.pth", hub_dir=tmp_path / "hub")
    assert "nope.pth" in str(err.value) and INCEPTION_URL in str(err.value)
    with pytest.raises(WeightsNotFound) as err:
        resolve_inception_weights(None, hub_dir=tmp_path / "hub", download=False)
    assert INCEPTION_FILE in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)


def test_failed_download_explains_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "INCEPTION_URL", (tmp_path / "absent.pth").as_uri())  # a local URL: no network
    with pytest.raises(WeightsNotFound, match="could not download"):
        resolve_inception_weights(None, hub_dir=tmp_path / "hub", download=True)
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []


def test_a_file_that_is_not_a_state_dict_is_reported(tmp_path):
    bad = tmp_path / INCEPTION_FILE
    torch.save({"fc.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsNotFound, match="not a usable Inception state dict"):
        InceptionFeatures(bad)


def test_weights_url_is_torch_fidelitys():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert INCEPTION_URL == URL_INCEPTION_V3


class _Payload:
    """Pickles as a call of exec that writes `marker`: what a crafted weights file can hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


def test_crafted_weights_are_refused_without_running_their_payload(tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran.txt"
    crafted = tmp_path / INCEPTION_FILE
    torch.save({"fc.weight": _Payload(marker)}, crafted)
    with pytest.raises(WeightsNotFound) as err:
        InceptionFeatures(crafted)
    assert not marker.exists(), "the crafted file's payload ran"
    assert "refused without running anything" in str(err.value) and str(crafted) in str(err.value)
    # On any path, even one that passes the hash check, only weights_only=True touches the file.
    monkeypatch.setattr(inception, "INCEPTION_SHA256_PREFIX", inception.sha256_file(crafted)[:8])
    with pytest.raises(WeightsNotFound):
        InceptionFeatures(resolve_inception_weights(crafted, hub_dir=tmp_path / "hub", download=False))
    assert not marker.exists()


def test_weights_with_another_sha256_are_refused_given_or_cached(tmp_path, random_weights):
    with pytest.raises(WeightsNotFound, match=r"not 6726825d.*refused; replace it with") as err:
        resolve_inception_weights(random_weights, hub_dir=tmp_path / "hub", download=False)
    assert str(random_weights) in str(err.value)
    cached = tmp_path / "hub" / "checkpoints" / INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(random_weights.read_bytes())
    with pytest.raises(WeightsNotFound, match=r"not 6726825d.*delete it"):
        resolve_inception_weights(None, hub_dir=tmp_path / "hub", download=False)


def test_a_download_with_another_sha256_is_discarded(tmp_path, monkeypatch, random_weights):
    monkeypatch.setattr(inception, "INCEPTION_URL", random_weights.as_uri())  # a local URL: no network
    with pytest.raises(WeightsNotFound, match="could not download"):
        resolve_inception_weights(None, hub_dir=tmp_path / "hub", download=True)
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []


def test_torch_fidelity_never_unpickles_the_weights_file(random_weights, monkeypatch):
    calls = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or original(*a, **k))
    InceptionFeatures(random_weights, features="64")
    assert calls == [True]
