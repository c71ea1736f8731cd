"""Every generator row through the registry at tiny size: interface, forward + backward, [-1, 1]
outputs, batch = per-image, parameter-space rendering, and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.coords import Grid
from pipeline.models.registry import GENERATOR_KINDS, build_discriminator, build_generator, parse_generator_spec
from pipeline.models.specs import INRGANSpec, paper_spec

HYPER = dict(z_dim=8, hyper_dim=16, hyper_residual=1)
TINY_INR_GAN_BLOCKS = [
    dict(resolution=8, width=8, n_freqs=4, n_layers=2, to_rgb=False),
    dict(resolution=16, width=8, n_freqs=2, n_layers=2, to_rgb=True),
]
TINY_INR_ROWS = {
    "latent_inr": dict(kind="latent_inr", resolution=8, width=8, n_layers=3, **HYPER),
    "hyper_inr": dict(kind="hyper_inr", resolution=8, width=8, n_layers=3, **HYPER),
    "hyper_fourier": dict(kind="hyper_fourier", resolution=8, width=8, n_layers=3, n_freqs=4, **HYPER),
    "hyper_fmm": dict(kind="hyper_fmm", resolution=8, width=8, n_layers=3, n_freqs=4, rank=4, **HYPER),
    "inr_gan": dict(kind="inr_gan", resolution=16, blocks=TINY_INR_GAN_BLOCKS, rank=4, **HYPER),
    "inr_gan_identity_fmm": dict(
        kind="inr_gan", resolution=16, blocks=TINY_INR_GAN_BLOCKS, rank=4, fmm_activation="identity", **HYPER
    ),
    "inr_gan_bilinear": dict(
        kind="inr_gan", resolution=16, blocks=TINY_INR_GAN_BLOCKS, rank=1, upsampling="bilinear", **HYPER
    ),
}
TINY_OTHER_ROWS = {
    "stylegan2": dict(
        kind="stylegan2", resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=16
    ),
    "inr_gan_sg2": dict(
        kind="inr_gan_sg2",
        resolution=16,
        z_dim=8,
        w_dim=8,
        channel_base=128,
        channel_max=16,
        random_fourier_features=4,
        const_channels=4,
        const_channels_high=2,
        fmm_rank=2,
    ),
}


def _build(settings: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(settings)


@pytest.mark.parametrize("row", list(TINY_INR_ROWS) + list(TINY_OTHER_ROWS))
def test_every_row_builds_and_runs_forward_and_backward(row):
    settings = {**TINY_INR_ROWS, **TINY_OTHER_ROWS}[row]
    g = _build(settings)
    z = torch.randn(2, g.z_dim)
    out = g(z)
    assert out.shape == (2, 3, g.resolution, g.resolution)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in g.parameters() if p.requires_grad]
    assert grads and any(gr is not None and gr.abs().sum() > 0 for gr in grads)
    assert g.macs_paper() > 0
    groups = g.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(g.parameters()))  # groups partition the parameters


@pytest.mark.parametrize("row", list(TINY_INR_ROWS))
def test_inr_rows_interface_and_every_parameter_gets_a_gradient(row):
    g = _build(TINY_INR_ROWS[row])
    z = torch.randn(3, g.z_dim)
    w = g.mapping(z)
    assert w.shape == (3, g.w_dim) == (3, 16)
    params = g.inr_params(w)
    assert params.shape == (3, g.n_ext)
    assert torch.allclose(g.render(params, Grid(g.resolution)), g(z), atol=1e-6)
    g.synthesize(w).sum().backward()
    assert all(p.grad is not None for p in g.parameters()), "a parameter does not reach the image"
    assert set(g.param_groups()) == {"inr", "hyper"}


@pytest.mark.parametrize("row", list(TINY_INR_ROWS))
def test_outputs_stay_in_minus_one_one_even_for_extreme_latents(row):
    g = _build(TINY_INR_ROWS[row])
    out = g(torch.randn(4, g.z_dim) * 100)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("row", list(TINY_INR_ROWS))
def test_batch_output_equals_per_image_outputs(row):
    g = _build(TINY_INR_ROWS[row])
    z = torch.randn(4, g.z_dim)
    batch = g(z)
    single = torch.cat([g(z[i : i + 1]) for i in range(4)])
    assert torch.allclose(batch, single, atol=1e-5)


@pytest.mark.parametrize("row", list(TINY_INR_ROWS))
def test_coordinate_rows_render_any_grid_and_interpolate_in_parameter_space(row):
    g = _build(TINY_INR_ROWS[row])
    p = g.inr_params(g.mapping(torch.randn(2, g.z_dim)))
    mid = g.render(0.5 * (p[:1] + p[1:]), Grid(g.resolution))
    assert mid.shape == (1, 3, g.resolution, g.resolution)
    assert (
        g.synthesize(g.mapping(torch.randn(1, g.z_dim)), Grid(2 * g.resolution, -0.5, 1.5)).shape[-1]
        == 2 * g.resolution
    )
    assert g.synthesize(g.mapping(torch.randn(1, g.z_dim)), g.resolution // 2).shape[-1] == g.resolution // 2


def test_registry_knows_every_kind():
    assert set(GENERATOR_KINDS) == {
        "latent_inr",
        "hyper_inr",
        "hyper_fourier",
        "hyper_fmm",
        "inr_gan",
        "inr_gan_sg2",
        "stylegan2",
    }
    for kind in ("latent_inr", "hyper_fmm", "inr_gan"):
        assert parse_generator_spec({"kind": kind, "resolution": 128}).kind == kind


def test_discriminator_builds_from_a_mapping():
    d = build_discriminator({"resolution": 16, "channel_base": 128, "channel_max": 16})
    assert d(torch.randn(4, 3, 16, 16)).shape[0] == 4


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"kind": "vae"}, r"unknown generator kind 'vae'.*inr_gan"),
        ({"resolution": 8}, r"unknown generator kind None"),
        ({**TINY_INR_ROWS["hyper_fmm"], "rank": 9}, r"rank 9 .*rank <= 8"),
        ({**TINY_INR_ROWS["inr_gan"], "rank": 5}, r"rank 5 .*rank <= 4"),
        ({"kind": "inr_gan", "resolution": 512}, r"no block configuration for resolution 512.*\[128, 256, 1024\]"),
        ({**TINY_INR_ROWS["inr_gan"], "resolution": 32}, r"resolution 32 has no block.*\[8, 16\]"),
        ({**TINY_INR_ROWS["hyper_inr"], "resolution": 100}, r"resolution 100 .*power of two"),
        ({**TINY_INR_ROWS["hyper_inr"], "widht": 8}, r"widht"),
        ({**TINY_INR_ROWS["inr_gan"], "upsampling": "bicubic"}, r"bicubic"),
        ({**TINY_INR_ROWS["hyper_fmm"], "fmm_activation": "tanh"}, r"tanh"),
    ],
)
def test_bad_settings_fail_with_a_message_naming_the_value(settings, match):
    with pytest.raises(ValueError, match=match):
        build_generator(settings)


def test_block_resolutions_must_double():
    blocks = [dict(TINY_INR_GAN_BLOCKS[0], resolution=4), TINY_INR_GAN_BLOCKS[1]]
    with pytest.raises(ValueError, match=r"double.*\[4, 16\]"):
        INRGANSpec(resolution=16, blocks=blocks)


def test_paper_spec_rejects_unknown_rows_and_resolutions():
    with pytest.raises(ValueError, match="'t2_sg2'"):
        paper_spec("t2_sg2", 256)
    with pytest.raises(ValueError, match="512"):
        paper_spec("inr_gan", 512)
