"""The recipe's math against closed forms: logistic losses, R1 (both conventions, lazy), EMA; the options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.train.distributed import DistContext
from pipeline.train.ema import make_ema, update_ema
from pipeline.train.losses import d_fake_loss, d_real_loss, g_nonsaturating_loss, r1_grad_sq, r1_penalty
from pipeline.train.options import TrainConfig, changed_fields, resolve_train_config
from pipeline.train.trainer import GANTrainer, generator_param_groups

from .toy import ToyGenerator, toy_options


class LinearD(nn.Module):
    """D(x) = <a, x> + b: grad_x D = a for every image, so ||grad||^2 = ||a||^2 exactly."""

    def __init__(self, res: int = 8):
        super().__init__()
        self.a = nn.Parameter(torch.randn(3, res, res, generator=torch.Generator().manual_seed(0)))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (x * self.a).flatten(1).sum(1, keepdim=True) + self.b


def test_logistic_losses_match_their_definitions():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0])
    sig = torch.sigmoid(logits)
    torch.testing.assert_close(d_real_loss(logits), -torch.log(sig))
    torch.testing.assert_close(d_fake_loss(logits), -torch.log(1 - sig))
    torch.testing.assert_close(g_nonsaturating_loss(logits), -torch.log(sig))


@pytest.mark.parametrize("convention,factor", [("inr_gan", 1.0), ("stylegan2", 0.5)])
def test_r1_on_a_linear_discriminator_equals_the_closed_form(convention, factor):
    d = LinearD()
    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    grad_sq = r1_grad_sq(d(x), x)
    a_sq = d.a.detach().square().sum()
    torch.testing.assert_close(grad_sq, a_sq.expand(5))
    opts = TrainConfig(r1_convention=convention, r1_gamma=10.0)
    term = r1_penalty(grad_sq, opts.r1_gamma, opts.r1_factor).mean()
    torch.testing.assert_close(term, factor * 10.0 * a_sq)
    # The penalty's own gradient w.r.t. D's weights: d/da (c ||a||^2) = 2 c a.
    (g_a,) = torch.autograd.grad(term, d.a)
    torch.testing.assert_close(g_a, 2 * factor * 10.0 * d.a.detach())


def test_r1_of_a_quadratic_discriminator_is_per_sample():
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    logits = 0.3 * x.square().flatten(1).sum(1)  # grad = 0.6 x
    torch.testing.assert_close(r1_grad_sq(logits, x), 0.36 * x.detach().square().flatten(1).sum(1))


def test_lazy_r1_runs_every_interval_steps_scaled_by_it():
    def penalty_at(step, interval):
        torch.manual_seed(0)
        opts = toy_options(r1_interval=interval)
        t = GANTrainer(ToyGenerator(), LinearD(), opts, DistContext(), per_rank=4)
        reals = torch.rand(4, 3, 8, 8) * 2 - 1
        a_sq = t.D.a.detach().square().sum().item()
        return t.d_step(reals, torch.randn(4, 4), do_r1=step % interval == 0, step=step)["r1_penalty"], a_sq

    every, a_sq = penalty_at(0, 1)
    assert every == pytest.approx(10.0 * a_sq, rel=1e-5)
    lazy, _ = penalty_at(4, 4)
    assert lazy == pytest.approx(4 * 10.0 * a_sq, rel=1e-5)
    skipped, _ = penalty_at(5, 4)
    assert skipped == 0.0


def test_ema_update_matches_the_closed_form():
    g = nn.Linear(3, 2)
    g.register_buffer("w_avg", torch.zeros(2))
    ema = make_ema(g)
    e0 = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        g.w_avg.fill_(7.0)
    beta, k = 0.9, 5
    for _ in range(k):
        update_ema(ema, g, beta)
    for pe, p, p0 in zip(ema.parameters(), g.parameters(), e0):
        # Repeated averaging towards a constant target: p + beta^k (e0 - p).
        torch.testing.assert_close(pe, p.detach() + beta**k * (p0 - p.detach()))
    assert torch.equal(ema.w_avg, g.w_avg)
    assert not any(p.requires_grad for p in ema.parameters())


def test_defaults_are_the_papers_recipe():
    o = TrainConfig()
    assert (o.betas, o.eps, o.r1_gamma, o.r1_interval, o.ema, o.hflip) == ((0.0, 0.98), 1e-8, 10.0, 1, 0.999, True)
    assert o.lr["d"] == 0.003 and o.lr["inr"] == 0.0005 and o.lr["hyper"] == 1e-5
    assert o.r1_factor == 1.0 and o.total_steps == 800_000 and o.mixed_precision == "off"
    assert TrainConfig(mixed_precision=False).mixed_precision == "off"  # YAML's unquoted `off`


def test_row_override_merges_learning_rates_and_length():
    defaults = TrainConfig(kimg=10, total_batch=32)
    o = resolve_train_config(defaults, {"lr": {"hyper": 5e-5}, "iterations": 7})
    assert o.lr["hyper"] == 5e-5 and o.lr["d"] == 0.003 and o.total_steps == 7 and o.kimg is None
    assert resolve_train_config(defaults, {}).total_steps == round(10_000 / 32)
    with pytest.raises(ConfigError, match="rows.x.train.*\n.*lr_g: unknown key"):
        resolve_train_config(defaults, {"lr_g": 1.0}, where="rows.x.train")
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(iterations=5, kimg=1)


def test_unknown_generator_group_is_named():
    class Odd(ToyGenerator):
        def param_groups(self):
            return {"inr": list(self.inr.parameters()), "trunk": list(self.hyper.parameters())}

    with pytest.raises(ValueError, match="'trunk' have no learning rate in train.lr"):
        generator_param_groups(Odd(), TrainConfig().lr)

    class Partial(ToyGenerator):
        def param_groups(self):
            return {"inr": list(self.inr.parameters())}

    with pytest.raises(ValueError, match="in no group.*hyper.0.weight"):
        generator_param_groups(Partial(), TrainConfig().lr)
    groups = generator_param_groups(ToyGenerator(), {"d": 1.0, "inr": 0.1, "hyper": 0.01})
    assert {g["name"]: g["lr"] for g in groups} == {"inr": 0.1, "hyper": 0.01}


def test_batch_split_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="total_batch 10 is not divisible by the number of processes 4"):
        TrainConfig(total_batch=10).per_process(4)
    with pytest.raises(ConfigError, match="batch_per_gpu 3 does not divide the 8"):
        TrainConfig(total_batch=16, batch_per_gpu=3).per_process(2)
    assert TrainConfig(total_batch=16, batch_per_gpu=2).per_process(2) == (8, 4)


def test_resume_compatibility_ignores_length_and_workers():
    old = toy_options().model_dump(mode="json")
    assert changed_fields(old, toy_options(iterations=100, num_workers=2, keep_snapshot_every=50)) == {}
    assert set(changed_fields(old, toy_options(r1_gamma=1.0))) == {"r1_gamma"}


def test_keep_snapshot_every_must_be_positive_or_unset():
    assert (
        TrainConfig().keep_snapshot_every is None
        and TrainConfig(keep_snapshot_every=3, snapshot_every=2).keep_snapshot_every == 3
    )
    with pytest.raises(ConfigError, match=r"keep_snapshot_every: Input should be greater than 0"):
        resolve_train_config({}, {"keep_snapshot_every": 0}, where="rows.x.train")


def test_mixed_precision_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GANTrainer(ToyGenerator(), LinearD(), toy_options(mixed_precision="bf16"), DistContext(), per_rank=4)
    assert math.isclose(TrainConfig(r1_convention="stylegan2").r1_factor, 0.5)


def test_path_lengths_of_a_linear_image_equal_the_closed_form():
    # image = sum_l ws[:, l] @ A_l, so d(image . y)/d ws[:, l] = A_l y and the length is sqrt(mean_l |A_l y|^2).
    from pipeline.train.losses import path_length_penalty, path_lengths

    torch.manual_seed(0)
    n, layers, d, h, w = 3, 2, 5, 4, 4
    A = torch.randn(layers, d, 3 * h * w)
    ws = torch.randn(n, layers, d, requires_grad=True)
    images = torch.einsum("nld,ldp->np", ws, A).view(n, 3, h, w)
    noise = torch.randn(n, 3, h, w)
    y = noise.flatten(1) / math.sqrt(h * w)
    expected = torch.einsum("ldp,np->nld", A, y).square().sum(2).mean(1).sqrt()
    lengths = path_lengths(images, ws, noise)
    assert torch.allclose(lengths, expected, rtol=1e-5)
    assert torch.allclose(
        path_length_penalty(lengths, torch.tensor(1.0), weight=2.0, interval=4), (expected - 1) ** 2 * 8
    )


def test_path_length_regularisation_trains_g_and_resumes_its_running_mean():
    from .toy import StyledToyGenerator, ToyDiscriminator

    ctx = DistContext(device=torch.device("cpu"))
    opts = toy_options(pl_weight=2.0, pl_interval=2, pl_batch_shrink=2)
    reals, z = torch.rand(8, 3, 8, 8) * 2 - 1, torch.randn(2, 8, 4)

    def trained(options):
        torch.manual_seed(0)
        t = GANTrainer(StyledToyGenerator(), ToyDiscriminator(), options, ctx, per_rank=8)
        return t, t.step(reals, z[0], z[1], step=0)

    trainer, stats = trained(opts)
    assert stats["pl_length"] > 0 and float(trainer.pl_mean) == pytest.approx(
        0.01 * stats["pl_length"]
    )  # decay 0.01 from 0
    assert stats["pl_penalty"] == pytest.approx(
        2.0 * 2 * (stats["pl_length"] - float(trainer.pl_mean)) ** 2, rel=0.3
    )  # ~ (mean - a)^2
    plain, plain_stats = trained(toy_options())
    assert "pl_length" not in plain_stats
    assert not torch.allclose(trainer.G.inr.weight, plain.G.inr.weight)  # the penalty's gradient reached G
    assert trainer.step(reals, z[0], z[1], step=1)["pl_penalty"] == 0.0  # lazy: not on odd steps
    state = trainer.state_dict()
    again = GANTrainer(StyledToyGenerator(), ToyDiscriminator(), opts, ctx, per_rank=8)
    again.load_state_dict(state)
    assert float(again.pl_mean) == float(trainer.pl_mean) > 0
    with pytest.raises(ValueError, match="pl_weight 2.0: path-length regularisation needs per-layer styles"):
        GANTrainer(ToyGenerator(), ToyDiscriminator(), opts, ctx, per_rank=8)


def test_path_length_regularisation_on_a_stylegan2_generator():
    from pipeline.models.registry import build_discriminator, build_generator

    torch.manual_seed(0)
    G = build_generator(
        dict(kind="stylegan2", resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)
    )
    D = build_discriminator({"resolution": 16, "channel_base": 64, "channel_max": 8})
    trainer = GANTrainer(
        G, D, toy_options(pl_weight=2.0, r1_convention="stylegan2"), DistContext(device=torch.device("cpu")), per_rank=4
    )
    stats = trainer.step(torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 8), torch.randn(4, 8), step=0)
    assert stats["pl_length"] > 0 and math.isfinite(stats["pl_penalty"]) and math.isfinite(stats["grad_norm_g"])


def test_plots_file_gains_the_path_length_columns():
    import csv
    import io

    from pipeline.train.loop import PLOT_COLUMNS, write_plots

    rows = [{**{k: 1.0 for k in PLOT_COLUMNS}, "step": 1, "pl_length": 0.5, "pl_penalty": 0.1}]
    out = Path(__import__("tempfile").mkdtemp()) / "plots.csv"
    write_plots(out, rows)
    header = next(csv.reader(io.StringIO(out.read_text())))
    assert header == [*PLOT_COLUMNS, "pl_length", "pl_penalty"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"eps": math.inf}, r"eps: Input should be a finite number, got inf"),  # trained nothing: Adam's steps were 0
        ({"kimg": math.inf}, r"kimg: Input should be a finite number, got inf"),  # an OverflowError from --dry-run
        ({"kimg": 1e306}, r"kimg: 1e\+306 is too large"),
        ({"lr": {"d": math.inf}}, r"lr.d: Input should be a finite number, got inf"),
        ({"betas": [0.0, math.nan]}, r"betas.1: Input should be a finite number, got nan"),
        ({"r1_gamma": math.inf}, r"r1_gamma: Input should be a finite number, got inf"),
        ({"iterations": True}, r"iterations: expected a number, got the boolean True \(YAML reads"),  # was one step
        ({"snapshot_every": False}, r"snapshot_every: expected a number, got the boolean False"),
        ({"lr": {"d": True}}, r"lr: expected a number, got the boolean \{'d': True\}"),
        ({"ema": True}, r"ema: expected a number, got the boolean True"),
        ({"hflip": 1}, r"hflip: Input should be a valid boolean, got 1"),
    ],
)
def test_non_finite_numbers_and_yaml_booleans_are_named(override, expected):
    # Issue #15 items 5 and 13.
    with pytest.raises(ConfigError, match=rf"invalid training options in rows.x.train:\n  {expected}"):
        resolve_train_config({}, override, where="rows.x.train")


def test_yaml_off_still_means_no_mixed_precision_and_plain_numbers_still_pass():
    options = resolve_train_config({}, {"mixed_precision": False, "hflip": False, "r1_gamma": 1, "kimg": 2})
    assert (
        options.mixed_precision == "off"
        and options.hflip is False
        and options.r1_gamma == 1.0
        and options.total_steps == 31
    )


def test_dry_run_with_infinite_kimg_is_a_named_error(project: Path):
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    data = yaml.safe_load(Path("params.yaml").read_text())
    data["train"]["kimg"] = math.inf
    data["train"].pop("iterations", None)
    Path("params.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["train", "--row", "inr_gan", "--dry-run"])
    assert isinstance(result.exception, ConfigError) and "kimg: Input should be a finite number, got inf" in str(
        result.exception
    )
