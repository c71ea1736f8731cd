"""Row 1 of Table 1: a latent-code conditioned INR with shared weights and input [x, y, w].

Every image uses the same MLP; it differs only through w, the hypernetwork trunk's output (the
W space), appended to each pixel's coordinates. As in the other rows, every layer after the first
also sees the input again: layer l takes concat[h, x, y, w].

The w columns of each layer's weight multiply the same vector at every pixel of an image, so they
are applied once per image as a per-image bias (W_w w + b) instead of being concatenated to every
pixel. The function is the same as the concatenation (tests check it); memory stays O(P * width).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.coords import Grid
from pipeline.models.inr import to_image


class LatentINR(nn.Module):
    """Shared-weight MLP on [x, y, w]: n_layers x (Linear + ReLU) -> Linear to RGB -> tanh."""

    def __init__(self, resolution: int, w_dim: int, width: int = 512, n_layers: int = 6, skip_input: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"an INR needs n_layers >= 1, got {n_layers}")
        self.resolution, self.w_dim, self.width, self.skip_input = resolution, w_dim, width, skip_input
        self.in_dim = 2 + w_dim
        # Column order of each weight: [h (layers after the first), x, y, w].
        dims = [self.in_dim] + [width + (self.in_dim if skip_input else 0)] * (n_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(d, width) for d in dims)
        self.to_rgb = nn.Linear(width, 3)

    def _input_part(self, layer: nn.Linear, h_cols: int, coords: Tensor, w: Tensor) -> Tensor:
        """The [x, y, w] columns of `layer` applied to every pixel: (N, width, P)."""
        weight = layer.weight
        w_xy, w_w = weight[:, h_cols : h_cols + 2], weight[:, h_cols + 2 :]
        per_image = torch.addmm(layer.bias, w, w_w.t())  # (N, width): once per image
        return (w_xy @ coords.t()).unsqueeze(0) + per_image.unsqueeze(2)

    def render(self, w: Tensor, grid: Grid) -> Tensor:
        if w.dim() != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"expected w of shape (N, {self.w_dim}), got {tuple(w.shape)}")
        coords = grid.coords(w.device, w.dtype)  # (P, 2)
        h = torch.relu(self._input_part(self.layers[0], 0, coords, w))
        for layer in self.layers[1:]:
            out = layer.weight[:, : self.width] @ h  # shared weight, all images and pixels at once
            out = out + (self._input_part(layer, self.width, coords, w) if self.skip_input else layer.bias[:, None])
            h = torch.relu(out)
        rgb = self.to_rgb.weight @ h + self.to_rgb.bias[:, None]
        return to_image(rgb, grid.resolution)

    def macs_paper(self, resolution: int | None = None) -> int:
        """Paper convention: in x out of the main path per pixel ([x, y, w] -> width, then width x width)."""
        s = self.resolution if resolution is None else resolution
        per_pixel = self.in_dim * self.width + (len(self.layers) - 1) * self.width**2
        return per_pixel * s * s
