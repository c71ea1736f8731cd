"""Stages `reference` and `score` on the micro profile: outputs, repeatability, UpsampledFID, the
curve over kept snapshots, and bad input (untrained row, wrong resolution, too few real images, a
curve row without kept snapshots) failing with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import Params
from pipeline.data.preview import LABEL_SIZE
from pipeline.headline import read_split
from pipeline.metrics.options import DomainNetConfig
from pipeline.metrics.scoring import MetricsInputError
from pipeline.models.registry import build_generator
from pipeline.train.checkpoint import CheckpointError, kept_snapshot_file, save_checkpoint
from pipeline.train.options import row_spec
from stages import paths, prepare, reference, score

TINY = dict(
    kind="inr_gan",
    resolution=32,
    z_dim=8,
    hyper_dim=16,
    hyper_residual=1,
    rank=2,
    blocks=[
        dict(resolution=16, width=8, n_freqs=4, n_layers=1),
        dict(resolution=32, width=8, n_freqs=2, n_layers=1, to_rgb=True),
    ],
)


def _params(micro: dict, **overrides) -> Params:
    micro = {**micro, "rows": {"toy": {"dataset": "faces32", "table": "test", "generator": TINY}}}
    micro["reference"] = {
        "features": "domain",
        "batch": 64,
        "domain": DomainNetConfig(width=4, epochs=1, batch=32).model_dump(),
    }
    micro["score"] = {"num_images": 24, "batch": 8, "upsampled": {"faces32": "faces64"}}
    for key, value in overrides.items():
        micro[key] = {**micro[key], **value}
    return Params.model_validate(micro)


def _snapshot(root: Path, params: Params, row: str = "toy", settings: dict = TINY) -> None:
    torch.manual_seed(0)
    g = build_generator(settings)
    # info: what the train stage records of the row a snapshot was trained as
    save_checkpoint(
        root / score.snapshot_file(row),
        {
            "G": g.state_dict(),
            "G_ema": g.state_dict(),
            "D": {},
            "info": row_spec(params, row),
            "step": 10,
            "kimg": 0.32,
        },
    )


def _kept_snapshot(root: Path, params: Params, step: int, seed: int, row: str = "toy", settings: dict = TINY) -> None:
    # The keys the training loop writes (tests/train/test_loop.py checks them there).
    torch.manual_seed(seed)
    g = build_generator(settings)
    save_checkpoint(
        kept_snapshot_file(root / score.snapshot_file(row).parent, step),
        {
            "G_ema": g.state_dict(),
            "options": {},
            "info": row_spec(params, row),
            "step": step,
            "kimg": step * 0.032,
        },
    )


@pytest.fixture
def study(project: Path, micro_dict: dict) -> tuple[Path, Params]:
    params = _params(micro_dict)
    for ds in ("faces32", "faces64"):
        prepare.run(params, ds)
        reference.run(params, ds)
    return project, params


def test_an_unchanged_reference_re_run_gives_the_same_files(study):
    # data/reference is a dep of every score: a file that differs only in a recorded training time made
    # DVC re-run all scores after an unchanged reference re-run.
    from pipeline.io import sha256_file

    root, params = study
    outputs = [root / reference.domain_net_file("faces32"), root / reference.reference_stats_file("faces32")]
    before = [sha256_file(p) for p in outputs]
    reference.run(params, "faces32")
    assert [sha256_file(p) for p in outputs] == before


def test_reference_then_score_writes_repeatable_metrics(study):
    root, params = study
    ref_file = root / reference.reference_metrics_file("faces32")
    ref = read_split(ref_file, paths.details(ref_file))
    assert ref["features"] == "domain" and ref["num_images"] == 128 and 0 <= ref["domain_holdout_accuracy"] <= 1
    assert (root / reference.reference_stats_file("faces32")).is_file() and (
        root / reference.domain_net_file("faces32")
    ).is_file()

    _snapshot(root, params)
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import resolve_tracking_uri, stage_run

    uri = resolve_tracking_uri(params.tracking.uri)
    with stage_run(uri, params.tracking.experiment, "train/toy", {"stage": "train"}) as train_run:
        train_run.log_metrics({"loss_g": 1.0}, step=320)
    first = score.run(params, "toy", progress=False)
    metrics_file = root / score.score_metrics_file("toy")
    written = read_split(metrics_file, paths.details(metrics_file))
    # The DVC metrics file holds the headline numbers only; options, hashes and counts are in the details file.
    assert set(json.loads(metrics_file.read_text())) == {
        "fd_domain",
        "is_domain",
        "kimg",
        *(f"fd_domain_up2x_{m}" for m in ("nearest", "bilinear", "bicubic", "grid")),
    }
    # The scores also on the row's training run, at images shown; the score run's grid is samples.png.
    client = MlflowClient(tracking_uri=uri)
    [fd] = client.get_metric_history(train_run.run_id, "fd_domain")
    assert (fd.step, fd.value) == (320, pytest.approx(first["fd_domain"]))
    exp_id = client.get_experiment_by_name(params.tracking.experiment).experiment_id
    [score_run] = client.search_runs([exp_id], "tags.stage = 'score'")
    assert (
        score_run.data.tags["table"] == "test"
        and client.get_metric_history(score_run.info.run_id, "fd_domain")[0].step == 320
    )
    assert "samples.png" in {a.path for a in client.list_artifacts(score_run.info.run_id)}
    for key in (
        "fd_domain",
        "is_domain",
        "fd_domain_up2x_nearest",
        "fd_domain_up2x_bilinear",
        "fd_domain_up2x_bicubic",
        "fd_domain_up2x_grid",
    ):
        assert written[key] == pytest.approx(first[key]) and written[key] == written[key]  # present, not NaN
    assert written["num_images"] == 24 and written["kimg"] == pytest.approx(0.32) and written["features"] == "domain"
    from PIL import Image

    grid = Image.open(root / paths.samples_png("toy"))
    # 6 x 6 samples of 32 px, enlarged to 64 px tiles with 2 px gaps, under a title band (row, kimg, seeds)
    assert grid.size == (6 * 66 + 2, 6 * 66 + 2 + LABEL_SIZE + 12)
    again = score.run(params, "toy", progress=False)  # same snapshot, same seeds: same numbers
    assert again["fd_domain"] == pytest.approx(first["fd_domain"], rel=1e-9)
    assert again["fd_domain_up2x_grid"] == pytest.approx(first["fd_domain_up2x_grid"], rel=1e-9)
    assert not [p for p in (root / "reports" / "metrics" / "score").iterdir() if p.name.startswith(".")]


def test_noisy_stylegan2_scores_repeat_exactly(study, micro_dict):
    # StyleGAN2 draws per-layer noise from the global RNG: scoring fixes it, whatever ran before.
    root, _ = study
    toy = dict(
        kind="stylegan2",
        resolution=32,
        z_dim=8,
        w_dim=8,
        mapping_layers=2,
        channel_base=128,
        channel_max=8,
        noise_mode="random",
    )
    base = _params(micro_dict).model_dump()
    params = Params.model_validate({**base, "rows": {"toy": {"dataset": "faces32", "table": "test", "generator": toy}}})
    torch.manual_seed(0)
    g = build_generator(toy)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)  # trained StyleGAN2s use their noise; at initialisation its strength is 0
    save_checkpoint(
        root / score.snapshot_file("toy"),
        {
            "G": g.state_dict(),
            "G_ema": g.state_dict(),
            "D": {},
            "info": row_spec(params, "toy"),
            "step": 10,
            "kimg": 0.32,
        },
    )
    first = score.run(params, "toy", progress=False)
    torch.manual_seed(12345)  # a different global RNG state before the second scoring
    again = score.run(params, "toy", progress=False)
    assert (
        again["fd_domain"] == first["fd_domain"] and again["fd_domain_up2x_bicubic"] == first["fd_domain_up2x_bicubic"]
    )


def test_untrained_row_fails_and_writes_nothing(study):
    root, params = study
    with pytest.raises(MetricsInputError, match=r"row 'toy' has not been trained.*pipeline train --row toy"):
        score.run(params, "toy", progress=False)
    assert not (root / score.score_metrics_file("toy")).exists()


def test_a_killed_scores_temporaries_are_removed_when_score_starts(study):
    """Issue #15 item 10: a SIGKILLed score left 0-byte temporaries inside git-tracked reports/; the next
    score removes them at start, even when it then fails, and leaves a live writer's temporaries alone."""
    root, _params_ = study
    metrics = root / score.score_metrics_file("toy")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = metrics.parent / f".{metrics.name}.{int(dead.stdout)}-abcd1234.tmp.json"
    live = metrics.parent / f".{metrics.name}.{os.getpid()}-efgh5678.tmp.json"
    stale.touch()
    live.touch()
    with pytest.raises(MetricsInputError):  # untrained: fails after clearing
        score.run(_params_, "toy", progress=False)
    assert not stale.exists() and live.exists()


def test_reference_resolution_mismatch_fails(study, micro_dict):
    root, params = study
    _snapshot(root, params)
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
    with pytest.raises(
        MetricsInputError, match=r"reference.num_images is 1000 but prepared dataset 'faces32' holds only 128"
    ):
        reference.run(_params(micro_dict, reference={"num_images": 1000}), "faces32")
    assert (root / reference.reference_stats_file("faces32")).read_bytes() == before
    assert not [p for p in (root / "data" / "reference").iterdir() if p.name.startswith(".")]


def test_missing_reference_names_the_command(project, micro_dict):
    params = _params(micro_dict)
    _snapshot(project, params)
    with pytest.raises(MetricsInputError, match=r"pipeline reference --dataset faces32"):
        score.run(params, "toy", progress=False)


def test_curve_scores_every_kept_snapshot_with_the_main_scores_seeds(study, micro_dict):
    root, _ = study
    params = _params(micro_dict, score={"upsampled": {}, "curve": {"rows": ["toy"], "num_images": 24}})
    _snapshot(root, params)  # G_ema of seed 0, step 10
    _kept_snapshot(root, params, step=5, seed=1)
    _kept_snapshot(root, params, step=10, seed=0)  # the last kept snapshot is the final G_ema
    result = score.run(params, "toy", progress=False)
    metrics_file = root / score.score_metrics_file("toy")
    written = read_split(metrics_file, paths.details(metrics_file))
    assert "curve" not in json.loads(metrics_file.read_text())  # curves are details, not DVC metrics
    assert [(p["step"], p["kimg"]) for p in written["curve"]] == [(5, pytest.approx(0.16)), (10, pytest.approx(0.32))]
    # curve.num_images = num_images: the last point is the main score, image for image
    assert written["curve"][-1]["fd"] == pytest.approx(written["fd_domain"], rel=1e-12) == result["fd_domain"]
    assert written["curve"][0]["fd"] != pytest.approx(written["fd_domain"])
    fewer = score.run(
        _params(micro_dict, score={"upsampled": {}, "curve": {"rows": "all", "num_images": 16}}), "toy", progress=False
    )
    assert [p["step"] for p in fewer["curve"]] == [5, 10] and fewer["curve"][-1]["fd"] != pytest.approx(
        result["fd_domain"]
    )

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd()}/mlruns.db")  # absolute: MLflow caches stores by URI
    run_id = client.search_runs(
        [client.get_experiment_by_name(params.tracking.experiment).experiment_id],
        "tags.stage = 'score'",
        order_by=["attributes.start_time ASC"],
    )[0].info.run_id
    history = client.get_metric_history(run_id, "curve_fd_domain")
    assert sorted((m.step, m.value) for m in history) == [
        (160, written["curve"][0]["fd"]),
        (320, written["curve"][1]["fd"]),
    ]


def test_curve_row_without_kept_snapshots_fails_naming_the_option(study, micro_dict):
    root, study_params = study
    _snapshot(root, study_params)
    params = _params(
        micro_dict, score={"curve": {"rows": ["toy"], "num_images": 8}}, train={"keep_snapshot_every": None}
    )
    with pytest.raises(
        MetricsInputError,
        match=r"score.curve lists row 'toy' but .*holds no kept snapshots: "
        r"train.keep_snapshot_every is not set.*pipeline train --row toy --no-resume",
    ):
        score.run(params, "toy", progress=False)
    trained_before = _params(
        micro_dict, score={"curve": {"rows": ["toy"], "num_images": 8}}
    )  # micro keeps every 2 steps
    with pytest.raises(MetricsInputError, match=r"trained before train.keep_snapshot_every \(2\) was set"):
        score.run(trained_before, "toy", progress=False)
    assert not (root / score.score_metrics_file("toy")).exists()


def test_snapshot_of_another_row_with_the_same_generator_is_refused(project, micro_dict):
    # Issue #15 item 2: only the generator settings were compared, so another dataset's (or another
    # seed's, or other training settings') snapshot was scored under this row's name.
    params = _params(micro_dict)
    metrics = project / score.score_metrics_file("toy")
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"fd_domain": 1.0}')
    other_dataset = Params.model_validate(
        {**params.model_dump(), "rows": {"toy": {"dataset": "faces32_test", "table": "test", "generator": TINY}}}
    )
    other_seed = _params(micro_dict, train={"seed": 7})
    other_gamma = _params(micro_dict, train={"r1_gamma": 0.5})
    for trained_as, expected in (
        (other_dataset, r"dataset: 'faces32_test' there, 'faces32' in params.yaml"),
        (other_seed, r"train.seed: 7 there, 0 in params.yaml"),
        (other_gamma, r"train.r1_gamma: 0.5 there, .* in params.yaml"),
    ):
        _snapshot(project, trained_as)
        with pytest.raises(
            MetricsInputError,
            match=r"snapshot 'runs/toy/network-snapshot.pt' is not row 'toy' as params.yaml defines it "
            rf"\(recorded row 'toy'; {expected}\); re-train the row \(`pipeline train --row toy --no-resume`\)",
        ):
            score.run(params, "toy", progress=False)
    # A snapshot that records no training options (not written by `pipeline train`) cannot be vouched for.
    save_checkpoint(
        project / score.snapshot_file("toy"), {"G_ema": build_generator(TINY).state_dict(), "info": {"generator": TINY}}
    )
    with pytest.raises(MetricsInputError, match=r"dataset: None there.*train: '\(not recorded\)' there"):
        score.run(params, "toy", progress=False)
    # Nor does a checkpoint without G_ema or info: named, not a KeyError.
    save_checkpoint(project / score.snapshot_file("toy"), {"step": 3})
    with pytest.raises(CheckpointError, match=r"checkpoint 'runs/toy/network-snapshot.pt' lacks 'G_ema', 'info'"):
        score.run(params, "toy", progress=False)
    assert metrics.read_text() == '{"fd_domain": 1.0}'
    # Changing only the training length (resumable) keeps the snapshot this row's.
    _snapshot(project, _params(micro_dict, train={"iterations": 40, "snapshot_every": 10}))
    generator, info = score.load_snapshot_generator(params, "toy", project)
    assert info["step"] == 10
