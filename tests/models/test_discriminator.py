"""StyleGAN2 residual discriminator: minibatch-stddev, equalised convs, sizes, shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.discriminator import Discriminator, DiscriminatorSpec, minibatch_stddev
from pipeline.models.stylegan2 import EqualizedConv2d

TINY = dict(channel_base=256, channel_max=16)


def tiny(resolution: int = 16) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(DiscriminatorSpec(resolution=resolution, **TINY))


def _direct_stddev(x: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    feat = torch.empty(x.shape[0])
    for members in groups:
        s = x[members].std(dim=0, unbiased=False)  # population std across the group, per value
        feat[members] = (s.square() + 1e-8).sqrt().mean()
    return feat


@pytest.mark.parametrize(
    "n, groups",
    [
        (8, [[0, 2, 4, 6], [1, 3, 5, 7]]),  # StyleGAN2: G = 4, M = 2, sample i in group i % M
        (4, [[0, 1, 2, 3]]),
        (6, [[0, 1, 2, 3, 4, 5]]),  # 6 // 4 = 1 group that takes the leftovers
        (9, [[0, 2, 4, 6, 8], [1, 3, 5, 7]]),
        (3, [[0, 1, 2]]),  # G = min(4, N)
        (1, [[0]]),
    ],
)
def test_minibatch_stddev_equals_direct_computation(n, groups):
    torch.manual_seed(n)
    x = torch.randn(n, 6, 4, 4)
    y = minibatch_stddev(x, group_size=4, num_features=1)
    assert y.shape == (n, 7, 4, 4)
    assert torch.equal(y[:, :6], x)
    expected = _direct_stddev(x, groups)
    assert torch.allclose(y[:, 6], expected[:, None, None].expand(n, 4, 4), atol=1e-6)


def test_minibatch_stddev_splits_channels_into_features():
    x = torch.randn(4, 6, 2, 2)
    y = minibatch_stddev(x, group_size=4, num_features=2)
    for f in range(2):
        expected = (x[:, 3 * f : 3 * f + 3].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[:, 6 + f], expected.expand(4, 2, 2), atol=1e-6)


def test_equalized_conv_scales_weights_at_run_time():
    conv = EqualizedConv2d(4, 3, 3, activation="lrelu")
    conv.bias.data.normal_()
    x = torch.randn(2, 4, 5, 5)
    ref = F.conv2d(x, conv.weight / math.sqrt(4 * 9), conv.bias, padding=1)
    assert torch.allclose(conv(x), F.leaky_relu(ref, 0.2) * math.sqrt(2), atol=1e-5)


def test_downsampling_conv_halves_size_and_blurs():
    conv = EqualizedConv2d(1, 1, 1, bias=False, down=2)
    conv.weight.data.fill_(1.0)
    x = torch.full((1, 1, 8, 8), 2.0)
    y = conv(x)
    assert y.shape == (1, 1, 4, 4)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.tensor(2.0))  # blur is normalised
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0
    assert conv(checker[None, None])[..., 1:-1, 1:-1].abs().max() < 1e-6  # Nyquist removed


def test_config_e_channels_at_1024_on_meta():
    with torch.device("meta"):
        D = Discriminator(DiscriminatorSpec(resolution=1024))
    ins = [b.conv0.weight.shape[0] for b in D.blocks]
    assert ins == [16, 32, 64, 128, 256, 512, 512, 512]  # 1024 .. 8
    assert D.from_rgb.weight.shape[0] == 16


@pytest.mark.parametrize("resolution", [16, 32])
@pytest.mark.parametrize("n", [1, 3, 5, 8])
def test_forward_backward_any_batch(resolution, n):
    D = tiny(resolution)
    x = torch.rand(n, 3, resolution, resolution, requires_grad=True) * 2 - 1
    logits = D(x)
    assert logits.shape == (n,)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)  # R1 needs the double backward
    (logits.sum() + grad.square().sum()).backward()
    assert all(p.grad is not None for p in D.parameters())


def test_an_image_only_affects_its_own_stddev_group():
    D = tiny()
    x = torch.randn(8, 3, 16, 16)
    y = x.clone()
    y[1] += 1.0
    a, b = D(x), D(y)
    assert torch.allclose(a[[0, 2, 4, 6]], b[[0, 2, 4, 6]])  # group of sample 0 untouched
    assert not torch.allclose(a[[3, 5, 7]], b[[3, 5, 7]])


def test_wrong_image_shape_is_rejected():
    with pytest.raises(ValueError, match="32"):
        tiny(16)(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize("resolution", [8, 48, 2048])
def test_bad_resolution_names_the_value(resolution):
    with pytest.raises(ValueError, match=str(resolution)):
        DiscriminatorSpec(resolution=resolution)
