from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.analysis import WeightsError
from pipeline.analysis.projection import (
    PixelDomainLoss,
    ProjectionOptions,
    VGGFeatureDistance,
    latent_statistics,
    learning_rate,
    make_loss,
    noise_scale,
    project,
    save_projection_figure,
    vgg16_features,
)

from .toy import ToyGenerator

FAST = ProjectionOptions(steps=300, lr=0.1, num_mean_samples=2000, batch_size=2, loss="pixel_domain")


@pytest.mark.parametrize("space", ["w", "z"])
def test_projection_recovers_a_known_latent(space):
    G = ToyGenerator()
    z_true = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w_true = G.mapping(z_true)
        target = G.synthesize(w_true)
    result = project(G, target, space, PixelDomainLoss(), FAST, seed=1)
    truth = w_true if space == "w" else z_true
    assert result.latents.shape == truth.shape and result.reconstructions.shape == target.shape
    assert result.loss.shape == (3,)
    assert float(result.loss.max()) < 1e-5
    rel = (result.latents - truth).norm(dim=1) / truth.norm(dim=1)
    assert float(rel.max()) < 0.02, rel
    assert result.history[0] > 100 * result.history[-1]  # the mean start is far from the targets


def test_projection_leaves_the_generator_as_it_was():
    G = ToyGenerator().train()
    project(G, G(torch.zeros(1, 6)).detach(), "w", PixelDomainLoss(), ProjectionOptions(steps=3, num_mean_samples=10))
    assert G.training and all(p.requires_grad for p in G.parameters())


def test_projection_rejects_images_of_another_size():
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        project(ToyGenerator(), torch.zeros(1, 3, 16, 16), "w", PixelDomainLoss(), FAST)
    with pytest.raises(ValueError, match="latent space"):
        project(ToyGenerator(), torch.zeros(1, 3, 8, 8), "s", PixelDomainLoss(), FAST)


def test_schedule_follows_stylegan2():
    o = ProjectionOptions(steps=1000)
    assert learning_rate(0, o) == 0.0  # ramp-up starts at 0
    assert learning_rate(50, o) == pytest.approx(0.1)  # full after 5%
    assert learning_rate(500, o) == pytest.approx(0.1)
    assert learning_rate(875, o) == pytest.approx(0.05)  # half-way down the cosine ramp of the last 25%
    assert noise_scale(0, o, 2.0) == pytest.approx(0.1)
    assert noise_scale(375, o, 2.0) == pytest.approx(0.1 * 0.25)
    assert noise_scale(750, o, 2.0) == 0.0


def test_latent_statistics():
    G = ToyGenerator()
    mean, spread = latent_statistics(G, "z", 4000)
    assert torch.equal(mean, torch.zeros(6)) and spread == pytest.approx(math.sqrt(6), rel=0.05)
    mean_w, _ = latent_statistics(G, "w", 4000)
    assert float(mean_w.abs().sum()) > 0.1  # LeakyReLU moves the mean of w away from 0


def test_domain_feature_term_is_added():
    net = lambda x: x.mean((2, 3)) * 10  # noqa: E731
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    plain, with_features = PixelDomainLoss(), PixelDomainLoss(net, feature_weight=2.0)
    assert plain.name == "pixel" and with_features.name == "pixel_domain"
    assert torch.allclose(plain(b, plain.target_state(a)), torch.full((2,), 0.25))
    assert torch.allclose(with_features(b, with_features.target_state(a)), torch.full((2,), 0.25 + 2 * 25.0))


def _save_random_vgg(path):
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, path)


def test_vgg_losses_load_weights_from_paths(tmp_path):
    _save_random_vgg(tmp_path / "vgg.pth")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "lin.pth")
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    unweighted = make_loss(ProjectionOptions(loss="vgg_features", vgg_weights=tmp_path / "vgg.pth"))
    lpips = make_loss(
        ProjectionOptions(loss="lpips_vgg", vgg_weights=tmp_path / "vgg.pth", lpips_weights=tmp_path / "lin.pth")
    )
    assert isinstance(lpips, VGGFeatureDistance) and lpips.name == "lpips_vgg" and unweighted.name == "vgg_features"
    for loss in (unweighted, lpips):
        same, diff = loss(x, loss.target_state(x)), loss(y, loss.target_state(x))
        assert same.shape == (2,) and float(same.abs().max()) < 1e-6 and float(diff.min()) > 0
    # uniform lin weights of 1 make LPIPS the unweighted distance
    torch.save({k: torch.ones_like(v) for k, v in lin.items()}, tmp_path / "ones.pth")
    ones = make_loss(
        ProjectionOptions(loss="lpips_vgg", vgg_weights=tmp_path / "vgg.pth", lpips_weights=tmp_path / "ones.pth")
    )
    assert torch.allclose(ones(y, ones.target_state(x)), unweighted(y, unweighted.target_state(x)))


def test_missing_vgg_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        make_loss(ProjectionOptions(loss="vgg_features"))
    msg = str(err.value)
    assert (
        "vgg16-397923af.pth" in msg
        and "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
        and str(tmp_path / "torch") in msg
    )
    _save_random_vgg(tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match="lpips-vgg-v0.1.pth"):
        make_loss(ProjectionOptions(loss="lpips_vgg", vgg_weights=tmp_path / "vgg.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        make_loss(ProjectionOptions(loss="vgg_features", vgg_weights=tmp_path / "nowhere.pth"))


def test_figure(tmp_path):
    from PIL import Image

    t = torch.rand(4, 3, 8, 8) * 2 - 1
    save_projection_figure(tmp_path / "f.png", t, [t, -t], columns=8)
    # 4 columns (targets, then one row per reconstruction set: 3 rows) of 64 px tiles, 2 px gaps
    assert Image.open(tmp_path / "f.png").size == (4 * 66 + 2, 3 * 66 + 2)
    top_left = np.asarray(Image.open(tmp_path / "f.png"))[2:66, 2:66]
    assert np.array_equal(top_left[::8, ::8], ((t[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy())


def test_figure_rows_are_labelled(tmp_path, monkeypatch):
    from pipeline.analysis import projection

    seen = {}
    monkeypatch.setattr(projection, "save_grid", lambda path, images, n, **labels: seen.update(labels))
    t = torch.rand(4, 3, 8, 8) * 2 - 1
    save_projection_figure(tmp_path / "f.png", t, [t, -t], columns=8, labels=["Z", "W"], title="m")
    assert seen == {"title": "m", "row_labels": ["targets", "Z", "W"]}
