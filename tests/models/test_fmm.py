"""FMM: W = W_s * act(A B) for random tensors (every activation), and its two limiting cases."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.fmm import FMMLinear
from pipeline.models.layers import GeneratedLinear


def _split(raw: torch.Tensor, n_out: int, n_in: int, r: int):
    """The documented layout of an FMM layer's raw parameters: A, then B, then bias."""
    n = raw.shape[0]
    a = raw[:, : n_out * r].reshape(n, n_out, r)
    b = raw[:, n_out * r : n_out * r + r * n_in].reshape(n, r, n_in)
    return a, b, raw[:, n_out * r + r * n_in :]


@pytest.mark.parametrize(
    "activation,act",
    [
        ("sigmoid2", lambda x: 2 * torch.sigmoid(x)),
        ("sigmoid", torch.sigmoid),
        ("identity", lambda x: x),
        ("centred", lambda x: 1 + x / 3**0.5),  # rank 3
    ],
)
def test_fmm_weight_is_shared_matrix_times_activated_low_rank_product(activation, act):
    torch.manual_seed(0)
    n_in, n_out, r, n = 6, 5, 3, 4
    layer = FMMLinear(n_in, n_out, rank=r, activation=activation)
    raw = torch.randn(n, layer.n_ext)
    assert layer.n_ext == r * (n_in + n_out) + n_out
    a, b, bias = _split(raw, n_out, n_in, r)
    w, got_bias = layer.weight_and_bias(raw)
    assert torch.allclose(w, layer.weight * act(a @ b), atol=1e-6)
    assert torch.allclose(got_bias, layer.bias_std * bias)
    x = torch.randn(n, n_in, 9)
    expected = torch.stack([w[i] @ x[i] + got_bias[i, :, None] for i in range(n)])
    assert torch.allclose(layer(x, raw), expected, atol=1e-5)


def test_full_rank_identity_fmm_is_a_plain_hypernetwork_layer():
    """Identity activation, W_s = 1 and rank = min(n_in, n_out): A B can be any matrix, so FMM
    produces exactly the weight a plain hypernetwork layer would be given (here from an SVD)."""
    torch.manual_seed(0)
    n_in, n_out = 5, 4
    layer = FMMLinear(n_in, n_out, rank=min(n_in, n_out), activation="identity")
    with torch.no_grad():
        layer.weight.fill_(1.0)
    target = torch.randn(n_out, n_in)
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    raw = torch.cat([(u * s).reshape(-1), vh.reshape(-1), torch.zeros(n_out)]).unsqueeze(0)
    w, _ = layer.weight_and_bias(raw)
    assert torch.allclose(w[0], target, atol=1e-5)

    plain = GeneratedLinear(n_in, n_out, weight_std=1.0)
    plain_raw = torch.cat([target.reshape(-1), torch.zeros(n_out)]).unsqueeze(0)
    x = torch.randn(1, n_in, 7)
    assert torch.allclose(layer(x, raw), plain(x, plain_raw), atol=1e-5)


def test_rank_one_fmm_is_squeeze_and_excitation():
    """Rank 1, sigmoid activation, B = 1: W x = sigmoid(a) * (W_s x), i.e. SE's per-channel gate on
    the shared layer's output. With identity activation and any b: a * (W_s (b * x))."""
    torch.manual_seed(0)
    n_in, n_out, n = 6, 4, 2
    x = torch.randn(n, n_in, 10)
    a = torch.randn(n, n_out)

    se = FMMLinear(n_in, n_out, rank=1, activation="sigmoid")
    raw = torch.cat([a, torch.ones(n, n_in), torch.zeros(n, n_out)], dim=1)
    gated = torch.sigmoid(a)[:, :, None] * (se.weight @ x)
    assert torch.allclose(se(x, raw), gated, atol=1e-5)

    scale = FMMLinear(n_in, n_out, rank=1, activation="identity")
    b = torch.randn(n, n_in)
    raw = torch.cat([a, b, torch.zeros(n, n_out)], dim=1)
    scaled = a[:, :, None] * (scale.weight @ (b[:, :, None] * x))
    assert torch.allclose(scale(x, raw), scaled, atol=1e-5)


def test_generated_linear_uses_scaled_raw_weights():
    torch.manual_seed(0)
    layer = GeneratedLinear(3, 2, weight_std=0.5, bias_std=0.1)
    raw = torch.randn(2, layer.n_ext)
    x = torch.randn(2, 3, 4)
    w = 0.5 * raw[:, :6].reshape(2, 2, 3)
    b = 0.1 * raw[:, 6:]
    assert torch.allclose(layer(x, raw), w @ x + b[:, :, None], atol=1e-6)


def test_fmm_rejects_rank_larger_than_the_layer_and_unknown_activation():
    with pytest.raises(ValueError, match=r"rank 5 .*4 -> 8.*1 \.\. 4"):
        FMMLinear(4, 8, rank=5)
    with pytest.raises(ValueError, match="'tanh'.*sigmoid2"):
        FMMLinear(4, 8, rank=2, activation="tanh")
