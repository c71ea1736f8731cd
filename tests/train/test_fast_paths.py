"""The faster forms of the training step compute what the plain forms compute, values and gradients.

Each test builds the previous form explicitly (two discriminator passes, a concatenated INR input,
the per-tensor Adam loop) and compares; a wrong rewrite (halves swapped, weight columns split at the
wrong place, another optimiser rule) fails here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.discriminator import Discriminator, DiscriminatorSpec
from pipeline.models.fmm import FMMLinear
from pipeline.models.inr import skip_layer
from pipeline.models.layers import GeneratedLinear
from pipeline.train.distributed import DistContext
from pipeline.train.losses import d_fake_loss, d_real_loss
from pipeline.train.options import TrainConfig
from pipeline.train.trainer import GANTrainer


class Generator16(nn.Module):
    """A 16 x 16 generator with the trainer's interface (the smallest discriminator is at 16 px)."""

    z_dim, resolution = 4, 16

    def __init__(self):
        super().__init__()
        self.hyper = nn.Linear(4, 8)
        self.inr = nn.Linear(8, 3 * 16 * 16)

    def forward(self, z):
        return torch.tanh(self.inr(torch.relu(self.hyper(z)))).view(-1, 3, 16, 16)

    def param_groups(self):
        return {"inr": list(self.inr.parameters()), "hyper": list(self.hyper.parameters())}


def _tiny_d(resolution: int = 16) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(DiscriminatorSpec(resolution=resolution, channel_base=256, channel_max=16))


def test_one_segmented_pass_equals_two_discriminator_passes():
    d = _tiny_d()
    torch.manual_seed(1)
    fakes, reals = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    fakes.requires_grad_(True)
    reals.requires_grad_(True)
    joint = d(torch.cat([fakes, reals]), segments=2)
    (F.softplus(joint[:8]).sum() + F.softplus(-joint[8:]).sum()).backward()
    grads = [p.grad.clone() for p in d.parameters()] + [fakes.grad.clone(), reals.grad.clone()]
    d.zero_grad()
    fakes.grad = reals.grad = None
    apart = torch.cat([d(fakes), d(reals)])
    (F.softplus(apart[:8]).sum() + F.softplus(-apart[8:]).sum()).backward()
    torch.testing.assert_close(joint, apart, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, [p.grad for p in d.parameters()] + [fakes.grad, reals.grad], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_without_segments_the_minibatch_stddev_mixes_the_halves():
    # The test above would pass trivially if minibatch-stddev did nothing: show that it couples samples.
    d = _tiny_d()
    torch.manual_seed(2)
    fakes, reals = torch.randn(8, 3, 16, 16), 3 * torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        mixed = d(torch.cat([fakes, reals]))
        apart = torch.cat([d(fakes), d(reals)])
    assert not torch.allclose(mixed, apart, atol=1e-4)


def test_segments_must_split_the_batch_evenly():
    with pytest.raises(ValueError, match="7 images cannot be split into 2"):
        _tiny_d()(torch.zeros(7, 3, 16, 16), segments=2)


def test_channels_last_discriminator_gives_the_nchw_values_and_input_gradient():
    # R1 differentiates D with respect to its input: the layout change must not alter that gradient.
    d = _tiny_d()
    torch.manual_seed(3)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    (g_new,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)

    # Reference: the same network evaluated layer by layer on NCHW tensors.
    def plain(img):
        h = d.from_rgb(img.contiguous())
        for block in d.blocks:
            h = block(h.contiguous())
        from pipeline.models.discriminator import minibatch_stddev

        h = d.conv(minibatch_stddev(h.contiguous(), d.spec.mbstd_group_size, d.spec.mbstd_num_features).contiguous())
        return d.out(d.fc(h.flatten(1))).squeeze(1)

    x2 = x.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(plain(x2).sum(), x2, create_graph=True)
    torch.testing.assert_close(d(x), plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-4, atol=1e-6)
    # and the R1 term's own gradient (the double backward) with respect to D's weights
    w_new = torch.autograd.grad(g_new.square().sum(), d.from_rgb.weight)[0]
    w_ref = torch.autograd.grad(g_ref.square().sum(), d.from_rgb.weight)[0]
    torch.testing.assert_close(w_new, w_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["fmm", "dense"])
@pytest.mark.parametrize("with_e", [True, False])
def test_skip_layer_equals_relu_of_the_concatenated_input(kind, with_e):
    torch.manual_seed(4)
    c_h, c_e, n_out, n, p = 6, 4, 5, 3, 7
    n_in = c_h + (c_e if with_e else 0)
    layer = FMMLinear(n_in, n_out, rank=2) if kind == "fmm" else GeneratedLinear(n_in, n_out)
    h, e, raw = (torch.randn(*s, requires_grad=True) for s in [(n, c_h, p), (n, c_e, p), (n, layer.n_ext)])
    new = skip_layer(layer, h * 1.0, e if with_e else None, raw)
    ref = torch.relu(layer(torch.cat([h, e], dim=1) if with_e else h, raw))
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)
    up = torch.randn_like(ref)
    inputs = [h, raw, *([e] if with_e else [])] + list(layer.parameters())
    g_new = torch.autograd.grad((new * up).sum(), inputs)
    g_ref = torch.autograd.grad((ref * up).sum(), inputs)
    for a, b in zip(g_new, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_skip_layer_with_e_is_not_symmetric_in_h_and_e():
    # Guards the column split: W [h; e] puts h's columns first; swapping the halves changes the output.
    torch.manual_seed(5)
    layer = GeneratedLinear(8, 3)
    h, e, raw = torch.randn(2, 4, 5), torch.randn(2, 4, 5), torch.randn(2, layer.n_ext)
    assert not torch.allclose(skip_layer(layer, h, e, raw), skip_layer(layer, e, h, raw))


def _options(**kw) -> TrainConfig:
    return TrainConfig(
        total_batch=4, iterations=3, r1_gamma=1.0, lr={"d": 0.01, "inr": 0.01, "hyper": 0.01}, device="cpu", **kw
    )


def test_fused_adam_updates_equal_the_per_tensor_adam():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    twin = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    twin.load_state_dict(model.state_dict())
    trainer = GANTrainer(Generator16(), _tiny_d(), _options(), DistContext(device=torch.device("cpu")), per_rank=4)
    assert all(g.get("fused") for g in trainer.opt_d.param_groups + trainer.opt_g.param_groups)
    fused = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.0, 0.98), eps=1e-8, fused=True)
    loop = torch.optim.Adam(twin.parameters(), lr=0.01, betas=(0.0, 0.98), eps=1e-8, foreach=False)
    for step in range(5):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(step))
        for m, opt in ((model, fused), (twin, loop)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("do_r1", [False, True])
def test_d_step_gradients_equal_two_separate_passes(do_r1):
    # The trainer's D step (one pass over [fakes; reals] without R1) against the loss written out.
    torch.manual_seed(7)
    opts = _options()
    trainer = GANTrainer(Generator16(), _tiny_d(), opts, DistContext(device=torch.device("cpu")), per_rank=4)
    assert trainer.joint_d_pass  # the discriminator takes segments: the one-pass form is the one under test
    reals, z = torch.randn(4, 3, 16, 16), torch.randn(4, trainer.G.z_dim)
    d_ref = _tiny_d()
    d_ref.load_state_dict(trainer.D.state_dict())
    with torch.no_grad():
        fakes = trainer.G(z)
    x = reals.clone().requires_grad_(do_r1)
    real_logits = d_ref(x)
    loss = (d_fake_loss(d_ref(fakes)).sum() + d_real_loss(real_logits).sum()) / 4
    if do_r1:
        (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
        loss = loss + opts.r1_gamma * grad.square().flatten(1).sum(1).sum() / 4
    loss.backward()
    expected = [p.grad.clone() for p in d_ref.parameters()]
    trainer.opt_d.step = lambda *a, **k: None  # keep the gradients, skip the update
    trainer.d_step(reals, z, do_r1, step=0)
    for a, b in zip([p.grad for p in trainer.D.parameters()], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pad", [(1, 2), (2, 2), (0, 0)])
def test_fir_filter_and_its_derivatives_equal_the_padded_depthwise_conv(pad):
    # Values, first and second derivatives (R1's double backward) against the plain F.pad + conv2d.
    from pipeline.models.stylegan2 import fir_filter

    torch.manual_seed(8)
    k = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0]], dtype=torch.float64)  # not symmetric: flips would show
    weight = k[None, None].expand(3, 1, 2, 3)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    plain = lambda t: F.conv2d(F.pad(t, [pad[0], pad[1], pad[0], pad[1]]), weight, groups=3)  # noqa: E731
    torch.testing.assert_close(fir_filter(x, weight, pad), plain(x))
    up = torch.randn_like(plain(x))
    (g_new,) = torch.autograd.grad((fir_filter(x, weight, pad) * up).sum(), x, create_graph=True)
    (g_ref,) = torch.autograd.grad((plain(x) * up).sum(), x, create_graph=True)
    torch.testing.assert_close(g_new, g_ref)
    v = torch.randn_like(x)
    (gg_new,) = torch.autograd.grad((g_new * v).sum() + (fir_filter(x, weight, pad) ** 2).sum(), x)
    (gg_ref,) = torch.autograd.grad((g_ref * v).sum() + (plain(x) ** 2).sum(), x)
    torch.testing.assert_close(gg_new, gg_ref)
    assert torch.autograd.gradgradcheck(lambda t: fir_filter(t, weight, pad), (x,))


def test_discriminator_r1_gradients_equal_the_plain_filters():
    # The whole discriminator: R1's penalty gradient w.r.t. D's weights with the custom filter and with
    # autograd's generic convolution (the previous form).
    import pipeline.models.stylegan2 as sg

    d = _tiny_d()
    torch.manual_seed(9)
    x = torch.randn(4, 3, 16, 16)

    def r1_weight_grads():
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(d(xx).sum(), xx, create_graph=True)
        grads = torch.autograd.grad(
            g.square().sum(), list(d.parameters()), allow_unused=True
        )  # biases of the head: none
        return [torch.zeros(()) if gr is None else gr for gr in grads]

    new = r1_weight_grads()
    original = sg.fir_filter
    sg.fir_filter = lambda t, w, pad: F.conv2d(F.pad(t, [pad[0], pad[1], pad[0], pad[1]]), w, groups=t.shape[1])
    try:
        ref = r1_weight_grads()
    finally:
        sg.fir_filter = original
    for a, b in zip(new, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_batched_synthesis_layer_equals_the_step_by_step_single_image_form(up, noise_mode):
    # A batch takes the fused demodulation/noise/bias/gain form; one image the plain sequence
    # (modulated conv, + noise, + bias, lrelu, x sqrt 2). Values and gradients must agree.
    from pipeline.models.stylegan2 import SynthesisLayer

    torch.manual_seed(10)
    layer = SynthesisLayer(4, 5, w_dim=6, resolution=8 if up else 4, up=up)
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x, w = torch.randn(3, 4, 4, 4, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    batched = layer(x, w, noise_mode)
    up_grad = torch.randn_like(batched)
    inputs = [x, w, *(p for name, p in layer.named_parameters() if noise_mode != "none" or name != "noise_strength")]
    g_batched = torch.autograd.grad((batched * up_grad).sum(), inputs)
    single = torch.cat([layer(x[i : i + 1], w[i : i + 1], noise_mode) for i in range(3)])
    g_single = torch.autograd.grad((single * up_grad).sum(), inputs)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_batched, g_single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
