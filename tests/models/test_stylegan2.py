"""StyleGAN2 generator: closed forms of its parts, interface, paper-size cost on the meta device."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.coords import Grid
from pipeline.models.stylegan2 import (
    EqualizedLinear,
    StyleGAN2Generator,
    StyleGAN2Spec,
    blur_kernel,
    downsample2d,
    modulate_weight,
    modulated_conv2d,
    upsample2d,
)

TINY = dict(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)


def tiny(**kw) -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(StyleGAN2Spec(**{**TINY, **kw}))


def test_blur_kernel_is_normalised_outer_product_of_1331():
    k = blur_kernel()
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert k.shape == (4, 4)
    assert torch.allclose(k.sum(), torch.tensor(1.0))
    assert torch.allclose(k, torch.outer(taps, taps) / 64)
    assert torch.linalg.matrix_rank(k) == 1


def test_resampling_keeps_a_constant_image_and_halves_or_doubles_size():
    x = torch.full((1, 2, 8, 8), 3.0)
    up, down = upsample2d(x, blur_kernel()), downsample2d(x, blur_kernel())
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.tensor(3.0))  # gain 4 undoes the zero insertion
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(3.0))


def test_equalized_linear_scales_weights_at_run_time():
    layer = EqualizedLinear(64, 8, bias_init=0.5, lr_multiplier=0.01)
    x = torch.randn(5, 64)
    expected = x @ (layer.weight * 0.01 / 8.0).t() + 0.5
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # stored N(0, 1/lr^2) so the effective weight is N(0, 1/in) whatever the lr multiplier
    big = EqualizedLinear(400, 400, lr_multiplier=0.01)
    eff = big.weight * big.weight_gain
    assert abs(eff.std().item() * math.sqrt(400) - 1.0) < 0.05


def _demodulated(weight, style):
    w = weight * style[None, :, None, None]
    return w / w.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_equals_per_sample_conv_loop(fused):
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, weight, styles, demodulate=True, fused=fused)
    for n in range(3):
        ref = F.conv2d(x[n : n + 1], _demodulated(weight, styles[n]), padding=1)
        assert torch.allclose(out[n : n + 1], ref, atol=1e-5)
    no_demod = modulated_conv2d(x, weight, styles, demodulate=False, fused=fused)
    ref0 = F.conv2d(x[:1], weight * styles[0][None, :, None, None], padding=1)
    assert torch.allclose(no_demod[:1], ref0, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_upsampling_modulated_conv_equals_zero_insertion_conv_then_blur(fused):
    torch.manual_seed(2)
    x, weight, styles = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3), torch.randn(2, 3)
    k = blur_kernel()
    out = modulated_conv2d(x, weight, styles, demodulate=True, up=True, kernel=k, fused=fused)
    assert out.shape == (2, 5, 8, 8)
    for n in range(2):
        z = torch.zeros(1, 3, 7, 7)
        z[..., ::2, ::2] = x[n : n + 1]
        y = F.conv2d(F.pad(z, [2, 2, 2, 2]), _demodulated(weight, styles[n]))  # 'full' correlation: 9x9
        y = F.conv2d(F.pad(y, [1, 1, 1, 1]), (4 * k).expand(5, 1, 4, 4), groups=5)
        assert torch.allclose(out[n : n + 1], y, atol=1e-5)


def test_unfused_gradients_equal_fused_gradients():
    # Training uses the unfused form: its gradients w.r.t. input, weight and styles must match too.
    torch.manual_seed(3)
    k = blur_kernel()
    for up in (False, True):
        grads = []
        for fused in (True, False):
            x, weight, styles = (
                t.clone().requires_grad_(True)
                for t in (torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3), torch.randn(2, 3))
            )
            modulated_conv2d(x, weight, styles, up=up, kernel=k, fused=fused).square().sum().backward()
            grads.append([x.grad, weight.grad, styles.grad])
            torch.manual_seed(3)
        for a, b in zip(*grads, strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_demodulation_gives_unit_norm_filters():
    w = modulate_weight(torch.randn(6, 4, 3, 3), torch.randn(2, 4) * 3, demodulate=True)
    assert torch.allclose(w.square().sum(dim=[2, 3, 4]), torch.ones(2, 6), atol=1e-5)


def test_forward_backward_shapes_and_gradients():
    G = tiny()
    img = G(torch.randn(3, 16))
    assert img.shape == (3, 3, 32, 32)
    img.square().mean().backward()
    groups = G.param_groups()
    assert all(p.grad is not None for p in groups["mapping"])
    assert G.blocks[-1].conv1.weight.grad is not None and G.blocks[0].const.grad is not None
    ids = [id(p) for ps in groups.values() for p in ps]
    assert sorted(ids) == sorted(id(p) for p in G.parameters())


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_batch_equals_each_image_alone(noise_mode):
    G = tiny().eval()
    w = G.mapping(torch.randn(4, 16))
    batch = G.synthesize(w, noise_mode=noise_mode)
    single = torch.cat([G.synthesize(w[i : i + 1], noise_mode=noise_mode) for i in range(4)])
    assert torch.allclose(batch, single, atol=1e-5)


def test_random_noise_changes_the_image_once_its_strength_is_nonzero():
    G = tiny().eval()
    for b in G.blocks:
        b.conv1.noise_strength.data.fill_(0.5)
    w = G.mapping(torch.randn(1, 16))
    assert not torch.allclose(G.synthesize(w, noise_mode="random"), G.synthesize(w, noise_mode="random"))
    assert torch.equal(G.synthesize(w, noise_mode="const"), G.synthesize(w, noise_mode="const"))


def test_style_mixing_changes_output_only_when_enabled():
    z = torch.randn(2, 16)
    out = {}
    for prob in (0.0, 1.0):
        G = tiny(style_mixing_prob=prob, noise_mode="none").train()
        torch.manual_seed(5)
        out[prob, "train"] = G(z)
        out[prob, "eval"] = G.eval()(z, clamp=False)
    assert not torch.allclose(out[1.0, "train"], out[0.0, "train"])
    assert torch.allclose(out[0.0, "train"], out[0.0, "eval"], atol=1e-6)
    assert torch.allclose(out[1.0, "eval"], out[0.0, "eval"], atol=1e-6)


def test_truncation_pulls_w_towards_tracked_mean():
    G = tiny().train()
    assert torch.all(G.mapping_network.w_avg == 0)
    G.mapping(torch.randn(8, 16))
    assert G.mapping_network.w_avg.abs().sum() > 0  # tracked in training mode
    G.eval()
    avg = G.mapping_network.w_avg.clone()
    z = torch.randn(3, 16)
    assert torch.allclose(G.mapping(z, truncation_psi=0.0), avg.expand(3, -1))
    half = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, avg + 0.5 * (G.mapping(z) - avg), atol=1e-6)
    assert torch.equal(G.mapping_network.w_avg, avg)  # eval mode does not update it


def test_output_is_raw_in_training_and_clamped_for_sampling():
    G = tiny(noise_mode="none", style_mixing_prob=0.0)
    G.blocks[-1].torgb.bias.data.fill_(3.0)  # push pixels outside [-1, 1]
    z = torch.randn(2, 16)
    raw = G.eval()(z, clamp=False)
    assert raw.abs().max() > 1
    assert torch.equal(G.eval()(z), raw.clamp(-1, 1))
    assert torch.equal(G.train()(z, clamp=False), G.train()(z))


def test_synthesize_accepts_only_its_own_pixel_grid():
    G = tiny(noise_mode="none").eval()
    w = torch.randn(1, 16)
    assert torch.equal(G.synthesize(w, grid=Grid(32)), G.synthesize(w))
    for grid in (Grid(64), Grid(32, -0.3, 1.3)):
        with pytest.raises(ValueError, match="fixed 32x32 pixel grid"):
            G.synthesize(w, grid=grid)


@pytest.mark.parametrize("resolution", [24, 8, 2048, 100])
def test_bad_resolution_names_the_value(resolution):
    with pytest.raises(ValueError, match=str(resolution)):
        StyleGAN2Spec(resolution=resolution)


def test_paper_size_matches_table1_on_meta():
    with torch.device("meta"):
        G = StyleGAN2Generator(StyleGAN2Spec(resolution=256))
    params = sum(p.numel() for p in G.parameters())
    assert abs(params / 30.03e6 - 1) < 0.08
    assert abs(G.macs_paper() / 84.36e9 - 1) < 0.03
    assert G.num_ws == 14
    # Fig. 9: a lower resolution costs the full image (generate, then downsample)
    assert G.macs_paper(64) == G.macs_paper(256)
    with pytest.raises(ValueError, match="512"):
        G.macs_paper(512)


def test_1024_builds_on_meta_with_config_f_channels():
    with torch.device("meta"):
        G = StyleGAN2Generator(StyleGAN2Spec(resolution=1024))
    assert [b.out_channels for b in G.blocks] == [512] * 5 + [256, 128, 64, 32]
    assert G.num_ws == 18
    assert G.macs_paper() > G.macs_paper(256) * 0 + 1e11
