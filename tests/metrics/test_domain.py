"""The domain feature network: accurate on held-out synthetic faces, deterministic, saved and loaded,
and its Frechet distance orders real < slightly blurred < noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import DatasetConfig
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import prepare_dataset
from pipeline.io import sha256_file
from pipeline.metrics.domain import DomainFeatures, load_domain_net, save_domain_net, train_domain_net
from pipeline.metrics.frechet import frechet_distance_stats
from pipeline.metrics.inception import nhwc_to_nchw, summarize
from pipeline.metrics.options import DomainNetConfig

FAST = DomainNetConfig(width=12, epochs=8, batch=64, lr=0.01, holdout_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("faces") / "faces32"
    prepare_dataset(DatasetConfig(source="synthetic_faces", resolution=32, num_images=4000, seed=0), out)
    return PreparedDataset(out)


@pytest.fixture(scope="module")
def trained(faces):
    return train_domain_net(faces.images, faces.labels, faces.num_classes, FAST)


def test_held_out_accuracy_above_90_percent(faces, trained):
    net, report = trained
    assert faces.num_classes == 18
    assert report.holdout_images == 400 and report.train_images == 3600
    print(f"domain network held-out accuracy {report.holdout_accuracy:.3f} in {report.seconds:.1f} s")
    assert report.holdout_accuracy > 0.9


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="replicate"), k, groups=3).round().clamp(0, 255).to(torch.uint8)


def test_fd_domain_orders_real_blurred_noise(faces, trained):
    ext = DomainFeatures(trained[0])
    images = nhwc_to_nchw(np.asarray(faces.images[:2000]))
    a, b = images[:1000], images[1000:]
    noise = torch.randint(0, 256, b.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = summarize(a.split(250), ext).stats
    fd = {
        name: frechet_distance_stats(ref, summarize(x.split(250), ext).stats)
        for name, x in (("real", b), ("blurred", _blur(b)), ("noise", noise))
    }
    print("fd_domain:", {k: round(v, 4) for k, v in fd.items()})
    assert fd["real"] < fd["blurred"] < fd["noise"]
    assert fd["blurred"] > 2 * fd["real"]


def test_training_is_deterministic_and_weights_round_trip(faces, tmp_path):
    cfg = DomainNetConfig(width=4, epochs=1, batch=32, seed=3)
    images, labels = faces.images[:256], faces.labels[:256]
    net1, r1 = train_domain_net(images, labels, 18, cfg)
    net2, r2 = train_domain_net(images, labels, 18, cfg)
    for (k, v1), v2 in zip(net1.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(v1, v2), k
    path = tmp_path / "net.pt"
    save_domain_net(path, net1)
    ext = DomainFeatures.load(path)
    x = nhwc_to_nchw(np.asarray(images[:8]))
    assert torch.allclose(ext(x)[0], DomainFeatures(net1)(x)[0])
    assert len(ext.weights_sha256) == 64
    # The weights' hash, not the file's: the same network saved elsewhere (another clone's temporary name,
    # another torch version's zip layout) names the same weights.
    assert ext.weights_sha256 == DomainFeatures(net1).weights_sha256 != sha256_file(path)
    other = tmp_path / "elsewhere" / "other.pt"
    save_domain_net(other, net1, {"note": "saved with other info"})
    assert DomainFeatures.load(other).weights_sha256 == ext.weights_sha256
    other.unlink()
    other.parent.rmdir()
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # no temporary left beside it
    with pytest.raises(ValueError, match="trained on 32 px"):
        ext(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match="pipeline reference"):
        load_domain_net(tmp_path / "absent.pt")


def test_datasets_without_classes_are_refused(faces):
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_domain_net(faces.images[:64], np.zeros(64, np.int64), 1, DomainNetConfig(epochs=1))


def test_training_runs_on_one_thread_whatever_the_process_has(faces):
    # The domain network is every fd_domain's yardstick: with 2 threads float sums run in another order
    # and training ends with another network, so it trains on one thread and gives the thread count back.
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = DomainNetConfig(width=4, epochs=1, batch=32, seed=3)
        train_domain_net(
            faces.images[:128], faces.labels[:128], 18, cfg, progress=lambda *_: seen.append(torch.get_num_threads())
        )
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
