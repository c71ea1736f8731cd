"""GAN losses of the paper's recipe: the non-saturating logistic loss and the R1 penalty on reals.

Every function returns per-sample values (N,); the caller averages, so the same code serves one
process, gradient accumulation and data parallelism."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def d_fake_loss(fake_logits: Tensor) -> Tensor:
    """The fake half of D's logistic loss: -log(1 - sigmoid(D(G(z)))) = softplus(D(G(z)))."""
    return F.softplus(fake_logits).flatten()


def d_real_loss(real_logits: Tensor) -> Tensor:
    """The real half of D's logistic loss: -log sigmoid(D(x)) = softplus(-D(x))."""
    return F.softplus(-real_logits).flatten()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """G's non-saturating loss: -log sigmoid(D(G(z))) = softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).flatten()


def r1_grad_sq(real_logits: Tensor, reals: Tensor, scale: float = 1.0) -> Tensor:
    """||grad_x D(x)||^2 per real image (N,), differentiable (for the penalty's own gradient).

    The gradient of sum(D(x)) gives every sample's own gradient as long as D does not couple the
    samples of a batch (minibatch-stddev does, weakly; StyleGAN2 makes the same approximation).
    `scale` multiplies the logits before differentiation and divides the result, for fp16 loss
    scaling; it cancels exactly otherwise."""
    (grad,) = torch.autograd.grad(real_logits.float().sum() * scale, reals, create_graph=True)
    grad = grad.float() / scale
    return grad.square().flatten(1).sum(1)


def r1_penalty(grad_sq: Tensor, gamma: float, factor: float = 1.0, interval: int = 1) -> Tensor:
    """The R1 term per sample: factor * gamma * ||grad||^2, times `interval` for the lazy variant.

    factor 1 is the INR-GAN authors' convention, 0.5 StyleGAN2's (see TrainConfig.r1_convention)."""
    return grad_sq * (factor * gamma * interval)


def path_lengths(images: Tensor, ws: Tensor, noise: Tensor) -> Tensor:
    """StyleGAN2's path length per image (N,), differentiable: |J_w^T y| with y = noise / sqrt(H W),
    the Jacobian of the image with respect to its per-layer styles ws (N, L, D), the squared norm summed
    over D, averaged over L, then the square root (StyleGAN2's pl_lengths)."""
    h, w = images.shape[-2:]
    (grad,) = torch.autograd.grad((images.float() * noise / (h * w) ** 0.5).sum(), ws, create_graph=True)
    return grad.float().square().sum(2).mean(1).sqrt()


def path_length_penalty(lengths: Tensor, target: Tensor, weight: float, interval: int = 1) -> Tensor:
    """(|J^T y| - a)^2 per image times weight (StyleGAN2: 2), times `interval` for the lazy variant;
    a is the running mean of the lengths (StyleGAN2's pl_mean)."""
    return (lengths - target).square() * (weight * interval)
