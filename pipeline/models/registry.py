"""Build any generator or the discriminator from its settings alone.

`parse_generator_spec(dict)` validates a params.yaml mapping into the typed spec of its `kind`;
`build_generator(spec)` constructs the module. Under `with torch.device("meta"):` a paper-size
generator is built without allocating memory (used by the cost counter).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter
from torch import nn

from pipeline.models.discriminator import Discriminator, DiscriminatorSpec
from pipeline.models.generators import HyperINRGenerator, LatentINRGenerator
from pipeline.models.inr import BlockConfig, MultiScaleINR, SingleScaleINR
from pipeline.models.inr_sg2 import INRStyleGAN2Generator
from pipeline.models.latent_inr import LatentINR
from pipeline.models.specs import SPEC_BY_KIND, GeneratorSpec
from pipeline.models.stylegan2 import StyleGAN2Generator

GENERATOR_KINDS: tuple[str, ...] = tuple(SPEC_BY_KIND)
_GENERATOR_SPEC = TypeAdapter(GeneratorSpec)


def parse_generator_spec(settings: Mapping[str, Any] | BaseModel) -> BaseModel:
    """A generator spec from a mapping with a `kind` key (a spec passes through unchanged)."""
    if isinstance(settings, BaseModel):
        kind = getattr(settings, "kind", None)
        if kind not in GENERATOR_KINDS:
            raise ValueError(f"unknown generator kind {kind!r}; allowed: {', '.join(GENERATOR_KINDS)}")
        return settings
    if not isinstance(settings, Mapping):
        raise ValueError(f"generator settings must be a mapping with a `kind` key, got {type(settings).__name__}")
    kind = settings.get("kind")
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"unknown generator kind {kind!r}; allowed: {', '.join(GENERATOR_KINDS)}")
    return _GENERATOR_SPEC.validate_python(dict(settings))


def build_generator(spec: Mapping[str, Any] | BaseModel) -> nn.Module:
    """The generator a spec (or a mapping with `kind`) describes, on the current default device."""
    spec = parse_generator_spec(spec)
    if spec.kind == "stylegan2":
        return StyleGAN2Generator(spec)
    if spec.kind == "inr_gan_sg2":
        return INRStyleGAN2Generator(spec)
    if spec.kind == "latent_inr":
        decoder = LatentINR(spec.resolution, spec.hyper_dim, spec.width, spec.n_layers, spec.skip_input)
        return LatentINRGenerator(decoder, spec.z_dim, spec.hyper_residual)
    return HyperINRGenerator(_generated_decoder(spec), spec.z_dim, spec.hyper_dim, spec.hyper_residual)


def _generated_decoder(spec: BaseModel) -> SingleScaleINR | MultiScaleINR:
    """The INR whose parameters the hypernetwork generates, for rows hyper_inr .. inr_gan."""
    if spec.kind == "hyper_inr":
        return SingleScaleINR(
            spec.resolution, spec.width, spec.n_layers, embedding="coords", layer="dense", skip_coords=spec.skip_coords
        )
    if spec.kind == "hyper_fourier":
        return SingleScaleINR(
            spec.resolution,
            spec.width,
            spec.n_layers,
            "fourier",
            spec.n_freqs,
            spec.fourier_scale,
            layer="dense",
            skip_coords=spec.skip_coords,
        )
    if spec.kind == "hyper_fmm":
        return SingleScaleINR(
            spec.resolution,
            spec.width,
            spec.n_layers,
            "fourier",
            spec.n_freqs,
            spec.fourier_scale,
            "fmm",
            spec.rank,
            spec.fmm_activation,
            spec.skip_coords,
        )
    if spec.kind == "inr_gan":
        blocks = [BlockConfig(**b.model_dump()) for b in spec.blocks]
        return MultiScaleINR(blocks, spec.rank, spec.fmm_activation, spec.upsampling, spec.fourier_scale)
    raise ValueError(f"no INR decoder for generator kind {spec.kind!r}")  # pragma: no cover


def build_discriminator(spec: Mapping[str, Any] | DiscriminatorSpec | None = None) -> nn.Module:
    """StyleGAN2's residual discriminator (config-e size by default)."""
    if spec is None:
        spec = DiscriminatorSpec()
    elif not isinstance(spec, DiscriminatorSpec):
        if not isinstance(spec, Mapping):
            raise ValueError(f"discriminator settings must be a mapping, got {type(spec).__name__}")
        spec = DiscriminatorSpec.model_validate(dict(spec))
    return Discriminator(spec)
