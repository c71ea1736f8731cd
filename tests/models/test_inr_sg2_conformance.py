"""The inr_gan_sg2 generator against the authors' StyleGAN2-ADA code: their outputs, our forward.

tests/fixtures/inr_gan_sg2_authors.pt holds, for configs/inr-gan.yml and inr-gan-bil.yml of
universome/inr-gan (commit 5c498e6) shrunk to 32 px, the weights of a generator built by their
code in our parameter names, z, and what their code computed: every block's features and image so
far, and the final image. docs/conformance.md says how it was made and the 256 px numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.inr_sg2 import INRStyleGAN2Generator
from pipeline.models.registry import parse_generator_spec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "inr_gan_sg2_authors.pt"
TOLERANCE = 1e-5  # issue 13's goal; measured: 0 on the features, <= 1.9e-6 on the images


@pytest.fixture(scope="module")
def authors() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("config", ["inr-gan", "inr-gan-bil"])
def test_every_block_and_the_image_match_the_authors_code(authors, config):
    case = authors[config]
    G = INRStyleGAN2Generator(parse_generator_spec(case["spec"])).eval()
    G.load_state_dict(case["state_dict"])  # strict: the same parameters, in our names
    features, images = [], []

    def keep(block, _inputs, outputs):
        x, y = outputs
        up = images and block.resolution > images[-1].shape[-1]
        images.append(y if not images else (G.upsample(images[-1]) if up else images[-1]) + y)
        features.append(x)

    hooks = [b.register_forward_hook(keep) for b in G.blocks]
    with torch.no_grad():
        image = G(case["z"], clamp=False)
    for h in hooks:
        h.remove()
    assert len(features) == len(case["block_features"]) == len(G.blocks)
    for k, (ours, theirs) in enumerate(zip(features, case["block_features"])):
        assert (ours - theirs).abs().max() <= TOLERANCE, f"block {k} features"
    for k, (ours, theirs) in enumerate(zip(images, case["block_images"])):
        assert (ours - theirs).abs().max() <= TOLERANCE, f"block {k} image"
    assert (image - case["image"]).abs().max() <= TOLERANCE


def test_our_fixed_basis_is_the_authors_before_any_copy(authors):
    """The log-spaced frequencies are constants, not weights: our constructor must give theirs."""
    case = authors["inr-gan"]
    G = INRStyleGAN2Generator(parse_generator_spec(case["spec"]))
    for k, block in enumerate(G.blocks):
        if block.embedding is None:
            continue
        ours = block.embedding.frequencies
        random = G.spec.random_fourier_features // 2 if block.resolution in G.spec.random_fourier_resolutions else 0
        fixed = ours.shape[0] - random
        assert fixed > 0 and torch.equal(ours[:fixed], case["state_dict"][f"blocks.{k}.embedding.frequencies"][:fixed])
