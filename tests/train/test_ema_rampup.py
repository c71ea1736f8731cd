"""train.ema_rampup: StyleGAN2-ADA's EMA ramp-up against its closed form, None as the fixed beta, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import ConfigError
from pipeline.train.checkpoint import TRAINING_STATE, load_checkpoint
from pipeline.train.distributed import DistContext
from pipeline.train.ema import ema_beta, make_ema, update_ema
from pipeline.train.loop import train
from pipeline.train.options import TrainConfig, changed_fields, resolve_train_config, settings_fingerprint
from pipeline.train.trainer import GANTrainer

from .toy import ToyDiscriminator, ToyGenerator, ToyImages, toy_options


def closed_form(beta: float, batch: int, images: int, rampup: float) -> float:
    # StyleGAN2-ADA's training_loop.py, with ema_kimg * 1000 replaced by the half-life `beta` means.
    half_life = batch * math.log(0.5) / math.log(beta)
    return 0.5 ** (batch / max(min(half_life, images * rampup), 1e-8))


def test_ramped_beta_matches_the_closed_form_early_and_is_ema_late():
    # The authors' 256 px rows: batch 64, half-life 20 kimg, ramp 0.05 -> beta_k = 0.5 ** (20 / k) while ramped.
    beta, batch, rampup = 0.5 ** (64 / 20_000), 64, 0.05
    assert ema_beta(beta, batch, 0, rampup) == 0.0  # step 0: G_ema becomes G
    for k in (1, 2, 10, 100, 1000, 6000):
        got = ema_beta(beta, batch, k * batch, rampup)
        assert got == pytest.approx(closed_form(beta, batch, k * batch, rampup), rel=1e-12)
        assert got == pytest.approx(0.5 ** (20 / k), rel=1e-9)
        assert got < beta
    # The ramp ends at 20 kimg / 0.05 = 400 kimg (step 6250): from there on, exactly the configured beta.
    for k in (6250, 6251, 100_000, 800_000):
        assert ema_beta(beta, batch, k * batch, rampup) == beta
    # Monotone: the half-life only grows.
    betas = [ema_beta(beta, batch, k * batch, rampup) for k in range(0, 7000, 50)]
    assert betas == sorted(betas)


def test_no_rampup_is_the_configured_beta_at_every_step():
    for images in (0, 8, 64_000, 10**9):
        assert ema_beta(0.999, 64, images, None) == 0.999
    assert ema_beta(0.0, 64, 640, 0.05) == 0.0  # half-life 0 stays 0 (no log of 0)
    with pytest.raises(ValueError, match=r"positive, got -0.1; give e.g. 0.05"):
        ema_beta(0.999, 64, 640, -0.1)


def _reference_run(options: TrainConfig, steps: int, betas):
    """A trainer's G_ema after `steps` steps, and the same average recomputed from its G after each
    step with the coefficients `betas(k)`: the two must agree bit for bit."""
    torch.manual_seed(0)
    trainer = GANTrainer(ToyGenerator(), ToyDiscriminator(), options, DistContext(), per_rank=options.total_batch)
    reference = make_ema(trainer.G)
    gen = torch.Generator().manual_seed(1)
    for k in range(steps):
        reals = torch.rand(options.total_batch, 3, 8, 8, generator=gen) * 2 - 1
        z = torch.randn(2, options.total_batch, 4, generator=gen)
        trainer.step(reals, z[0], z[1], step=k)
        update_ema(reference, trainer.G, betas(k))
    return trainer.G_ema, reference


def test_trainer_without_rampup_averages_with_the_fixed_ema():
    # Fails if None changed anything: a ramp at step 0 would copy G into G_ema (beta 0).
    options = toy_options(ema=0.9)
    assert options.ema_rampup is None
    ema, reference = _reference_run(options, 4, lambda k: 0.9)
    for a, b in zip(ema.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_trainer_with_rampup_follows_the_ramp_then_the_fixed_ema():
    # batch 8, ema 0.9: half-life 52.6 images; ramp 2: min(52.6, 16 k) -> ramped at steps 0-3, 0.9 from step 4.
    options = toy_options(ema=0.9, ema_rampup=2.0)
    expected = [0.0, 0.5 ** (8 / 16), 0.5 ** (8 / 32), 0.5 ** (8 / 48), 0.9, 0.9]
    trainer = GANTrainer(ToyGenerator(), ToyDiscriminator(), options, DistContext(), per_rank=8)
    assert [trainer.ema_beta(k) for k in range(6)] == pytest.approx(expected, rel=1e-12)
    assert trainer.ema_beta(5) == 0.9 and trainer.ema_beta(0, images_seen=48) == trainer.ema_beta(6)
    ema, reference = _reference_run(options, 6, lambda k: expected[k])
    for a, b in zip(ema.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    fixed, _ = _reference_run(toy_options(ema=0.9), 6, lambda k: 0.9)
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), fixed.state_dict().values()))


def _g_ema(run_dir):
    return load_checkpoint(run_dir / TRAINING_STATE)["models"]["G_ema"]


@pytest.mark.parametrize("rampup", [None, 2.0])
def test_a_run_resumed_inside_the_ramp_ends_where_an_uninterrupted_one_does(tmp_path, rampup):
    # Stopped after step 2 (images 16) while the ramp is on: the resumed run must take the images shown
    # from the training state, not count from 0 (that would copy G into G_ema at step 2 again).
    whole = toy_options(ema=0.9, ema_rampup=rampup)
    train(whole, ToyGenerator, ToyDiscriminator, ToyImages(), tmp_path / "whole", progress=False)
    first = toy_options(ema=0.9, ema_rampup=rampup, iterations=2)
    train(first, ToyGenerator, ToyDiscriminator, ToyImages(), tmp_path / "resumed", progress=False)
    summary = train(whole, ToyGenerator, ToyDiscriminator, ToyImages(), tmp_path / "resumed", progress=False)
    assert summary.resumed_from == 2 and summary.images_seen == 48
    a, b = _g_ema(tmp_path / "whole"), _g_ema(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "value,message",
    [
        (0, "must be positive .*got 0"),
        (-0.05, "must be positive .*got -0.05"),
        (True, "boolean True"),
        (float("inf"), "finite number"),
    ],
)
def test_bad_rampups_are_refused_with_the_value(value, message):
    with pytest.raises(ConfigError, match=rf"ema_rampup: .*{message}"):
        resolve_train_config({}, {"ema_rampup": value}, where="rows.x.train")


def test_rampup_changes_a_rows_identity_and_none_keeps_the_earlier_one():
    plain, ramped = TrainConfig(), TrainConfig(ema_rampup=0.05)
    assert plain.ema_rampup is None and ramped.ema_rampup == 0.05
    # Records written before the option existed carry the hash of the options without it.
    before = {k: v for k, v in plain.model_dump(mode="json").items() if k != "ema_rampup"}
    import hashlib
    import json

    from pipeline.train.options import RESUMABLE_CHANGES

    train_part = {k: v for k, v in before.items() if k not in RESUMABLE_CHANGES and k != "seed"}
    text = json.dumps({"dataset": "d", "generator": {}, "train": train_part}, sort_keys=True)
    assert settings_fingerprint("d", {}, plain) == hashlib.sha256(text.encode()).hexdigest()
    assert settings_fingerprint("d", {}, ramped) != settings_fingerprint("d", {}, plain)
    # A checkpoint of either kind refuses to resume under the other; one written before the option, under None.
    assert changed_fields(plain.model_dump(mode="json"), ramped) == {"ema_rampup": (None, 0.05)}
    assert changed_fields(ramped.model_dump(mode="json"), plain) == {"ema_rampup": (0.05, None)}
    assert changed_fields(before, plain) == {}


def test_paper_profile_ramps_only_the_rows_of_the_authors_released_recipe():
    # inr_gan_sg2 rows follow the authors' StyleGAN2-ADA `cfg: auto` (ramp 0.05); the paper-text rows
    # (EMA 0.999 each step) and the StyleGAN2 rows (config-f: no ramp) keep the fixed beta.
    from pathlib import Path

    from pipeline.config import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "profiles" / "paper.yaml")
    trained = {name: row for name, row in params.rows.items() if row.released is None}
    ramps = {name: params.train_options(name).ema_rampup for name in trained}
    ramped = {name for name, ramp in ramps.items() if ramp is not None}
    assert ramped == {name for name, row in trained.items() if row.generator.kind == "inr_gan_sg2"} != set()
    assert {ramps[name] for name in ramped} == {0.05}
