"""Stages `reference` and `score` on the micro profile: outputs, repeatability, UpsampledFID, and
bad input (untrained row, wrong resolution, too few real images) failing with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.config import Params
from pipeline.metrics.domain import DomainNetConfig
from pipeline.metrics.scoring import MetricsInputError, ReferenceConfig, ScoreConfig
from pipeline.models.registry import build_generator
from pipeline.train.checkpoint import save_checkpoint
from stages import prepare, reference, score

TINY = dict(kind="inr_gan", resolution=32, z_dim=8, hyper_dim=16, hyper_residual=1, rank=2,
            blocks=[dict(resolution=16, width=8, n_freqs=4, n_layers=1), dict(resolution=32, width=8, n_freqs=2, n_layers=1, to_rgb=True)])


class StudyParams(Params):
    """params.yaml with the sections the lead adds to pipeline.config.Params."""

    reference: ReferenceConfig = ReferenceConfig()
    score: ScoreConfig = ScoreConfig()


def _params(micro: dict, **overrides) -> StudyParams:
    micro = {**micro, "rows": {"toy": {"dataset": "faces32", "table": "test", "generator": TINY}}}
    micro["reference"] = {"features": "domain", "batch": 64, "domain": DomainNetConfig(width=4, epochs=1, batch=32).model_dump()}
    micro["score"] = {"num_images": 24, "batch": 8, "upsampled": {"faces32": "faces64"}}
    for key, value in overrides.items():
        micro[key] = {**micro[key], **value}
    return StudyParams.model_validate(micro)


def _snapshot(root: Path, row: str, settings: dict) -> None:
    torch.manual_seed(0)
    g = build_generator(settings)
    save_checkpoint(root / score.snapshot_file(row), {"G": g.state_dict(), "G_ema": g.state_dict(), "D": {},
                                                      "info": {"generator": settings}, "step": 10, "kimg": 0.32})


@pytest.fixture
def study(project: Path, micro_dict: dict) -> tuple[Path, StudyParams]:
    params = _params(micro_dict)
    for ds in ("faces32", "faces64"):
        prepare.run(params, ds)
        reference.run(params, ds)
    return project, params


def test_reference_then_score_writes_repeatable_metrics(study):
    root, params = study
    ref = json.loads((root / reference.reference_metrics_file("faces32")).read_text())
    assert ref["features"] == "domain" and ref["num_images"] == 128 and 0 <= ref["domain_holdout_accuracy"] <= 1
    assert (root / reference.reference_stats_file("faces32")).is_file() and (root / reference.domain_net_file("faces32")).is_file()

    _snapshot(root, "toy", TINY)
    first = score.run(params, "toy", progress=False)
    written = json.loads((root / score.score_metrics_file("toy")).read_text())
    for key in ("fd_domain", "is_domain", "fd_domain_up2x_nearest", "fd_domain_up2x_bilinear", "fd_domain_up2x_bicubic", "fd_domain_up2x_grid"):
        assert written[key] == pytest.approx(first[key]) and written[key] == written[key]  # present, not NaN
    assert written["num_images"] == 24 and written["kimg"] == pytest.approx(0.32) and written["features"] == "domain"
    from PIL import Image

    from stages import paths

    grid = Image.open(root / paths.samples_png("toy"))
    assert grid.size == (6 * 66 + 2, 6 * 66 + 2)  # 6 x 6 samples of 32 px, enlarged to 64 px tiles with 2 px gaps
    again = score.run(params, "toy", progress=False)  # same snapshot, same seeds: same numbers
    assert again["fd_domain"] == pytest.approx(first["fd_domain"], rel=1e-9)
    assert again["fd_domain_up2x_grid"] == pytest.approx(first["fd_domain_up2x_grid"], rel=1e-9)
    assert not [p for p in (root / "reports" / "metrics" / "score").iterdir() if p.name.startswith(".")]


def test_untrained_row_fails_and_writes_nothing(study):
    root, params = study
    with pytest.raises(MetricsInputError, match=r"row 'toy' has not been trained.*pipeline train --row toy"):
        score.run(params, "toy", progress=False)
    assert not (root / score.score_metrics_file("toy")).exists()


def test_reference_resolution_mismatch_fails(study, micro_dict):
    root, params = study
    _snapshot(root, "toy", TINY)
    wrong_2x = _params(micro_dict, score={"upsampled": {"faces32": "faces32"}})
    with pytest.raises(MetricsInputError, match=r"32 px images but UpsampledFID of row 'toy'.*needs 64 px"):
        score.run(wrong_2x, "toy", progress=False)
    # a stale reference (the dataset was re-prepared at another resolution since)
    stale = root / reference.reference_stats_file("faces32")
    stale.write_bytes((root / reference.reference_stats_file("faces64")).read_bytes())
    with pytest.raises(MetricsInputError, match=r"faces32.*64 px images but row 'toy' needs 32 px"):
        score.run(params, "toy", progress=False)
    assert not (root / score.score_metrics_file("toy")).exists()


def test_too_few_real_images_fails_and_keeps_old_reference(study, micro_dict):
    root, _ = study
    before = (root / reference.reference_stats_file("faces32")).read_bytes()
    with pytest.raises(MetricsInputError, match=r"reference.num_images is 1000 but prepared dataset 'faces32' holds only 128"):
        reference.run(_params(micro_dict, reference={"num_images": 1000}), "faces32")
    assert (root / reference.reference_stats_file("faces32")).read_bytes() == before
    assert not [p for p in (root / "data" / "reference").iterdir() if p.name.startswith(".")]


def test_missing_reference_names_the_command(project, micro_dict):
    params = _params(micro_dict)
    _snapshot(project, "toy", TINY)
    with pytest.raises(MetricsInputError, match=r"pipeline reference --dataset faces32"):
        score.run(params, "toy", progress=False)
