"""INR decoder inside StyleGAN2 (Table 2): row-normalised FMM, embeddings, grids, variants."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.coords import Grid
from pipeline.models.inr_sg2 import CoordinateEmbedding, INRStyleGAN2Generator, INRStyleGAN2Spec, RowNormFMM

TINY = dict(
    resolution=16,
    z_dim=16,
    w_dim=16,
    channel_base=128,
    channel_max=16,
    fmm_rank=2,
    const_channels=4,
    const_channels_high=4,
    random_fourier_features=4,
    random_fourier_resolutions=(16,),
)


def tiny(**kw) -> INRStyleGAN2Generator:
    torch.manual_seed(0)
    return INRStyleGAN2Generator(INRStyleGAN2Spec(**{**TINY, **kw}))


def test_fmm_weight_equals_closed_form_with_unit_rows():
    torch.manual_seed(1)
    layer = RowNormFMM(6, 5, w_dim=8, rank=3)
    w = torch.randn(2, 8)
    ab = w @ (layer.affine.weight * layer.affine.weight_gain).t() + layer.affine.bias
    a, b = ab[:, :15].reshape(2, 5, 3), ab[:, 15:].reshape(2, 3, 6)
    expected = layer.weight * (1 + a @ b / math.sqrt(3))
    expected = expected / expected.norm(dim=2, keepdim=True)
    got = layer.modulated_weight(w)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got.norm(dim=2), torch.ones(2, 5), atol=1e-5)


def test_fmm_layer_is_a_per_pixel_matmul():
    torch.manual_seed(2)
    layer = RowNormFMM(4, 3, w_dim=8, rank=2)
    layer.bias.data.normal_()
    x, w = torch.randn(2, 4, 3, 3), torch.randn(2, 8)
    out = layer(x, w)
    wn = layer.modulated_weight(w)
    for n in range(2):
        ref = torch.einsum("oi,ihw->ohw", wn[n], x[n]) + layer.bias[:, None, None]
        assert torch.allclose(out[n], torch.nn.functional.leaky_relu(ref, 0.2) * math.sqrt(2), atol=1e-5)


def test_rank_larger_than_layer_is_rejected():
    with pytest.raises(ValueError, match="rank 7"):
        RowNormFMM(6, 5, w_dim=8, rank=7)


def test_fixed_basis_is_sin_cos_of_log_spaced_frequencies_on_centred_coordinates_with_y_up():
    emb = CoordinateEmbedding(8, diagonal=True, num_random=0, const_channels=0, seed=0, fourier_scale=1.0)
    assert emb.num_channels == 2 * 4 * 3  # sin + cos, 4 directions, 3 frequencies each
    e = emb(Grid(8))
    x = 2 * torch.arange(8) / 8 - 1  # [-1, 1) along the columns
    y = x.flip(0)  # and along the rows, the top row holding the largest value
    assert torch.allclose(e[1, :, 0], torch.sin(math.pi * y), atol=1e-5)  # (0, 1) direction, 2^1 pi / 2
    assert torch.allclose(e[12 + 3, 0], torch.cos(math.pi / 2 * x), atol=1e-5)  # (1, 0) direction, 2^0 pi / 2
    diag = math.pi / 4 * (y[:, None] - x[None, :])  # (-1, 1) / 2 direction, 2^0 pi / 2
    assert torch.allclose(e[6], torch.sin(diag), atol=1e-5)
    flat = CoordinateEmbedding(128, diagonal=False, num_random=64, const_channels=5, seed=0, fourier_scale=3.0)
    assert flat.num_channels == 2 * 2 * 7 + 64 + 5
    assert 2.0 < flat.frequencies[-32:].std() < 4.0  # Gaussian frequencies of std fourier_scale


def test_learned_constant_is_exact_on_the_native_grid_and_interpolated_elsewhere():
    emb = CoordinateEmbedding(8, diagonal=False, num_random=0, const_channels=2, seed=0, fourier_scale=1.0)
    assert torch.equal(emb.sample_const(Grid(8)), emb.const)
    dense = emb.sample_const(Grid(16))
    assert torch.allclose(dense[:, ::2, ::2], emb.const, atol=1e-5)  # even points are the native ones
    assert torch.allclose(dense[:, 1, 1], emb.const[:, :2, :2].mean(dim=(1, 2)), atol=1e-5)


@pytest.mark.parametrize(
    "resolution, blocks",
    [(16, [8, 8, 16]), (32, [16, 16, 16, 32]), (64, [32, 32, 32, 32, 64]), (256, [32, 32, 32, 32, 64, 128, 256])],
)
def test_stylegan2_blocks_up_to_the_input_resolution_run_at_it(resolution, blocks):
    assert INRStyleGAN2Spec(resolution=resolution).block_resolutions() == blocks


def test_forward_backward_and_shapes():
    G = tiny()
    assert [b.num_layers for b in G.blocks] == [1, 2, 2]
    assert [b.embedding is not None for b in G.blocks] == [True, False, True]
    img = G(torch.randn(3, 16))
    assert img.shape == (3, 3, 16, 16)
    img.square().mean().backward()
    assert G.blocks[0].layers[0].affine.weight.grad is not None and G.blocks[-1].embedding.const.grad is not None
    groups = G.param_groups()
    assert sorted(id(p) for ps in groups.values() for p in ps) == sorted(id(p) for p in G.parameters())


def test_extra_layer_at_listed_resolutions():
    G = tiny(extra_layer_resolutions=(16,))
    assert [b.num_layers for b in G.blocks] == [1, 2, 3]
    assert G.num_ws == 7


def test_batch_equals_each_image_alone():
    G = tiny().eval()
    w = G.mapping(torch.randn(4, 16))
    single = torch.cat([G.synthesize(w[i : i + 1]) for i in range(4)])
    assert torch.allclose(G.synthesize(w), single, atol=1e-5)


def test_bilinear_and_nearest_variants_differ():
    a = tiny(upsampling="nearest").eval()
    b = tiny(upsampling="bilinear").eval()
    b.load_state_dict(a.state_dict())
    w = a.mapping(torch.randn(2, 16))
    assert not torch.allclose(a.synthesize(w), b.synthesize(w))


def test_nearest_upsampling_keeps_pixels_independent():
    G = tiny(const_channels=0, const_channels_high=0).eval()
    ws = G.broadcast_ws(G.mapping(torch.randn(1, 16)))
    x, _ = G.blocks[0](None, ws[:, :2], Grid(8))
    low, _ = G.blocks[1](x, ws[:, 1:4], Grid(8))
    x = G.upsample(low)
    x[:, :, 0:2, 0:2] += 1.0  # the four children of low-resolution pixel (0, 0)
    _, base = G.blocks[2](G.upsample(low), ws[:, 3:], Grid(16))
    _, changed = G.blocks[2](x, ws[:, 3:], Grid(16))
    diff = (base - changed).abs().sum(dim=1)[0]
    assert diff[0:2, 0:2].min() > 0 and torch.count_nonzero(diff) == 4


def test_instance_norm_divides_every_later_layer_input_by_its_std_over_pixels():
    G = tiny(instance_norm=True).eval()
    block = G.blocks[-1]
    ws = G.broadcast_ws(G.mapping(torch.randn(2, 16)))[:, :3]
    x = torch.randn(2, block.in_channels, 16, 16)
    out, _ = block(x, ws, Grid(16))
    h = block.layers[0](torch.cat([x, block.embedding(Grid(16))[None].expand(2, -1, -1, -1)], dim=1), ws[:, 0])
    h = h / (h.std(dim=[2, 3], keepdim=True, unbiased=True) + 1e-8)
    assert torch.allclose(out, block.layers[1](h, ws[:, 1]), atol=1e-5)
    plain = tiny().eval()
    plain.load_state_dict(G.state_dict())
    assert not torch.allclose(plain.blocks[-1](x, ws, Grid(16))[0], out)


def test_style_mixing_changes_output_only_when_enabled():
    z = torch.randn(2, 16)
    out = {}
    for prob in (0.0, 1.0):
        G = tiny(style_mixing_prob=prob).train()
        torch.manual_seed(5)
        out[prob, "train"] = G(z)
        out[prob, "eval"] = G.eval()(z, clamp=False)
    assert not torch.allclose(out[1.0, "train"], out[0.0, "train"])
    assert torch.allclose(out[0.0, "train"], out[0.0, "eval"], atol=1e-6)
    assert torch.allclose(out[1.0, "eval"], out[0.0, "eval"], atol=1e-6)


def test_output_clamped_in_eval_mode():
    G = tiny().eval()
    G.blocks[-1].torgb.bias.data.fill_(3.0)
    z = torch.randn(2, 16)
    raw = G(z, clamp=False)
    assert raw.abs().max() > 1 and torch.equal(G(z), raw.clamp(-1, 1))


def test_any_grid_default_denser_sparser_wider():
    G = tiny().eval()
    w = G.mapping(torch.randn(2, 16))
    assert torch.equal(G.synthesize(w, Grid(16)), G.synthesize(w))
    assert G.synthesize(w, Grid(32)).shape == (2, 3, 32, 32)
    assert G.synthesize(w, Grid(8)).shape == (2, 3, 8, 8)
    wide = G.synthesize(w, Grid(16, -0.3, 1.3))
    assert wide.shape == (2, 3, 16, 16) and not torch.allclose(wide, G.synthesize(w))
    assert G.synthesize(w, Grid(12)).shape == (2, 3, 12, 12)  # blocks at 6 and 12
    with pytest.raises(ValueError, match="grid resolution 9"):
        G.synthesize(w, Grid(9))


@pytest.mark.parametrize("resolution", [12, 8, 2048])
def test_bad_resolution_names_the_value(resolution):
    with pytest.raises(ValueError, match=str(resolution)):
        INRStyleGAN2Spec(resolution=resolution)


def test_bad_input_resolution_and_odd_fourier_count_are_rejected():
    with pytest.raises(ValueError, match="input_resolution 24"):
        INRStyleGAN2Spec(resolution=64, input_resolution=24)
    with pytest.raises(ValueError, match="random_fourier_features 5"):
        INRStyleGAN2Spec(random_fourier_features=5)


def test_paper_sizes_build_on_meta_and_sparser_grids_cost_less():
    with torch.device("meta"):
        G256 = INRStyleGAN2Generator(INRStyleGAN2Spec(resolution=256))
        G1024 = INRStyleGAN2Generator(INRStyleGAN2Spec(resolution=1024, upsampling="bilinear"))
    assert G256.spec.block_resolutions() == [32, 32, 32, 32, 64, 128, 256]
    assert [b.num_layers for b in G256.blocks] == [1, 2, 2, 2, 2, 3, 3]
    assert G256.num_ws == 16  # as the authors' 256 px generator
    assert [b.out_channels for b in G256.blocks] == [512] * 5 + [256, 128]  # channel_base 32768 at 4 .. 256
    channels = [b.embedding.num_channels if b.embedding is not None else 0 for b in G256.blocks]
    # sin + cos of 20 / 24 fixed frequencies + const 128 at 32 / 64; of 14 / 16 fixed + 32 random + const 64 above
    assert channels == [40 + 128, 0, 0, 0, 48 + 128, 28 + 64 + 64, 32 + 64 + 64]
    assert G256.macs_paper(128) < G256.macs_paper() < G1024.macs_paper()
    assert G1024.macs_paper() > 0
