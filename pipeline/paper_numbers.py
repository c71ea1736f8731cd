"""The paper's reported numbers (Tables 1, 2, 4), and which paper row a generator spec reproduces.

Copied from the paper (../shared/docs/paper.md, section 4) so reports can put them beside ours;
None marks O/M (out of memory in the paper) and absent cells. Cost columns live in
pipeline.metrics.macs.PAPER_TABLE1_COST."""

from __future__ import annotations

from pydantic import BaseModel

OOM = "O/M"

TABLE1_LABELS = {
    "latent_inr": "latent-code conditioned INR",
    "hyper_inr": "+ hypernetwork-based decoder",
    "hyper_fourier": "+ Fourier embeddings",
    "hyper_fmm": "+ FMM",
    "inr_gan": "+ multi-scale INR (= INR-GAN)",
    "stylegan2": "StyleGAN2 generator",
}
# FID on LSUN Bedroom 128 / 256 and FFHQ 1024.
TABLE1_FID: dict[str, dict[int, float | str | None]] = {
    "latent_inr": {128: 229.9, 256: 253.3, 1024: OOM},
    "hyper_inr": {128: 28.83, 256: OOM, 1024: OOM},
    "hyper_fourier": {128: 23.07, 256: OOM, 1024: OOM},
    "hyper_fmm": {128: 11.51, 256: 15.68, 1024: OOM},
    "inr_gan": {128: 5.69, 256: 6.27, 1024: 16.32},
    "stylegan2": {128: None, 256: 2.65, 1024: 4.41},
}

TABLE2_LABELS = {
    "inr_gan_no_fmm_act": "INR-GAN without FMM activation",
    "inr_gan": "INR-GAN",
    "inr_gan_sg2": "+ StyleGAN2 architecture",
    "inr_gan_sg2_bilinear": "+ bilinear upsampling",
    "stylegan2": "StyleGAN2",
}
# (FID LSUN Churches 256, FID LSUN Bedrooms 256, generator img/s on one V100 in fp32)
TABLE2: dict[str, tuple[float, float, float]] = {
    "inr_gan_no_fmm_act": (10.35, 11.73, 267.3),
    "inr_gan": (7.12, 6.27, 267.1),
    "inr_gan_sg2": (5.09, 4.96, 265.1),
    "inr_gan_sg2_bilinear": (3.12, 3.41, 203.4),
    "stylegan2": (3.86, 2.65, 85.5),
}

# (LSUN-10 FID, LSUN-10 IS, MiniImageNet FID, MiniImageNet IS) after 300k iterations.
TABLE4: dict[str, tuple[float | str, float | str, float, float]] = {
    "latent_inr": (216.8, 1.0, 271.5, 1.03),
    "hyper_inr": (OOM, OOM, 112.9, 8.76),
    "hyper_fourier": (OOM, OOM, 102.8, 9.85),
    "hyper_fmm": (23.78, 2.48, 84.66, 9.32),
    "inr_gan": (12.47, 3.02, 59.63, 11.29),
    "stylegan2": (8.99, 3.18, 52.94, 12.32),
    "validation set": (0.42, 9.93, 0.39, 61.79),
}
TABLE4_LABELS = {
    **TABLE1_LABELS,
    "latent_inr": "basic INR decoder",
    "hyper_inr": "+ hypernetwork",
    "hyper_fourier": "+ Fourier embeddings",
}


def paper_row(generator: BaseModel, table: str = "") -> str:
    """The paper row a generator spec reproduces: a Table 1 kind, a Table 2 variant, or (for rows of
    the `fig8` table) the FMM rank ablation `inr_gan_rank<r>`."""
    kind = generator.kind
    if table == "fig8":
        return f"{kind}_rank{generator.rank}"
    if kind == "inr_gan":
        if generator.fmm_activation in ("identity", "centred"):
            return "inr_gan_no_fmm_act"
        if generator.upsampling == "bilinear":
            return "inr_gan_bilinear"
    if kind == "inr_gan_sg2" and generator.upsampling == "bilinear":
        return "inr_gan_sg2_bilinear"
    return kind
