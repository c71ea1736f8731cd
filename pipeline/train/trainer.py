"""One training step of the paper's recipe: a D step (logistic loss + R1 on reals), then a G step
(non-saturating loss), Adam with per-group learning rates, then the G EMA update.

The step sees this process's share of the global batch; gradients are averaged over processes
before each optimiser step, and the losses are scaled so that the result equals one process
running the whole global batch (as long as D does not couple the samples of a batch)."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pipeline.train.distributed import DistContext, average_gradients, mean_over_ranks
from pipeline.train.ema import ema_beta, make_ema, update_ema
from pipeline.train.losses import (
    d_fake_loss,
    d_real_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    path_lengths,
    r1_grad_sq,
    r1_penalty,
)
from pipeline.train.options import TrainConfig

D_STATS = ("loss_d_fake", "loss_d_real", "r1_grad_sq", "r1_penalty", "grad_norm_d")
G_STATS = ("loss_g", "grad_norm_g")
PL_STATS = ("pl_length", "pl_penalty")  # G statistics of runs with path-length regularisation
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN or infinite; raised before the optimiser step that would spread it."""


def generator_param_groups(generator: nn.Module, lr: Mapping[str, float]) -> list[dict]:
    """Adam parameter groups from generator.param_groups(), each with its learning rate from `lr`.

    Every parameter must sit in exactly one group: one left out would silently never train."""
    groups = generator.param_groups()
    missing = [name for name in groups if name not in lr]
    if missing:
        raise ValueError(
            f"generator parameter group(s) {', '.join(map(repr, missing))} have no learning rate in train.lr "
            f"(it has: {', '.join(sorted(lr))}); add e.g. train.lr.{missing[0]}: 0.0005"
        )
    seen: dict[int, str] = {}
    for name, params in groups.items():
        for p in params:
            if id(p) in seen:
                raise ValueError(
                    f"a generator parameter of shape {tuple(p.shape)} is in both groups {seen[id(p)]!r} and {name!r}"
                )
            seen[id(p)] = name
    left_out = [n for n, p in generator.named_parameters() if id(p) not in seen]
    if left_out:
        raise ValueError(
            f"generator parameters in no group of param_groups(): {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}"
        )
    return [{"params": params, "lr": lr[name], "name": name} for name, params in groups.items() if params]


def grad_norm(params: list[nn.Parameter]) -> Tensor:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class GANTrainer:
    """G, D, G_ema, their optimisers and loss scalers; `step()` runs one iteration of the recipe."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        options: TrainConfig,
        ctx: DistContext,
        per_rank: int,
        rounds: int = 1,
    ):
        if options.mixed_precision != "off" and ctx.device.type != "cuda":
            raise ValueError(
                f"train.mixed_precision {options.mixed_precision!r} needs a CUDA device (running on {ctx.device}); set it to 'off'"
            )
        self.options, self.ctx = options, ctx
        self.per_rank, self.chunk = per_rank, per_rank // rounds
        self.G = generator.to(ctx.device).train()
        self.D = discriminator.to(ctx.device).train()
        self.G_ema = make_ema(self.G)
        # A discriminator that takes `segments` evaluates fakes and reals in one pass (see d_step).
        self.joint_d_pass = "segments" in inspect.signature(self.D.forward).parameters
        # fused: one kernel for all parameters instead of ~10 small ops per tensor (same update).
        adam = dict(betas=options.betas, eps=options.eps, fused=True)
        self.opt_g = torch.optim.Adam(generator_param_groups(self.G, options.lr), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=options.lr["d"], **adam)
        fp16 = options.mixed_precision == "fp16"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        self.amp_dtype = AMP_DTYPES.get(options.mixed_precision)
        if options.pl_weight > 0 and not hasattr(self.G, "broadcast_ws"):
            raise ValueError(
                f"train.pl_weight {options.pl_weight}: path-length regularisation needs per-layer styles "
                f"(a StyleGAN2-style generator), and {type(generator).__name__} has none; set pl_weight: 0 for this row"
            )
        self.pl_mean = torch.zeros((), device=ctx.device)  # running mean of path lengths (StyleGAN2's pl_mean)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def step(
        self, reals: Tensor, z_d: Tensor, z_g: Tensor, step: int, images_seen: int | None = None
    ) -> dict[str, float]:
        """One D step and one G step on this process's share; returns statistics averaged over ranks.

        images_seen: real images of all processes shown before this step (the loop's counter, which
        a resumed run restores); it sets the EMA ramp-up. None: step * total_batch."""
        do_r1 = self.options.r1_gamma > 0 and step % self.options.r1_interval == 0
        stats = self.d_step(reals, z_d, do_r1, step)
        stats.update(self.g_step(z_g, step, images_seen))
        return stats

    def d_step(self, reals: Tensor, z: Tensor, do_r1: bool, step: int) -> dict[str, float]:
        opt = self.options
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        sums = torch.zeros(4, device=self.ctx.device)
        for reals_c, z_c in zip(reals.split(self.chunk), z.split(self.chunk), strict=True):
            with torch.no_grad(), self._autocast():
                fakes = self.G(z_c)
            reals_c = reals_c.detach().requires_grad_(do_r1)
            if do_r1 or not self.joint_d_pass:
                # Separate passes: R1's double backward then runs through the reals' graph only.
                with self._autocast():
                    fake_logits = self.D(fakes)
                    real_logits = self.D(reals_c)
            else:
                # One pass over [fakes; reals] (minibatch-stddev kept within each half): the same
                # logits as two passes with half the number of small kernels.
                with self._autocast():
                    fake_logits, real_logits = self.D(torch.cat([fakes, reals_c]), segments=2).chunk(2)
            loss_fake = d_fake_loss(fake_logits.float())
            loss_real = d_real_loss(real_logits.float())
            total = loss_fake.sum() + loss_real.sum()
            grad_sq = penalty = torch.zeros(1, device=self.ctx.device)
            if do_r1:
                scale = self.scaler_d.get_scale() if self.scaler_d.is_enabled() else 1.0
                grad_sq = r1_grad_sq(real_logits, reals_c, scale)
                penalty = r1_penalty(grad_sq, opt.r1_gamma, opt.r1_factor, opt.r1_interval)
                total = total + penalty.sum()
            self.scaler_d.scale(total / self.per_rank).backward()
            parts = (loss_fake.sum(), loss_real.sum(), grad_sq.sum(), penalty.sum())
            sums += torch.stack([p.detach().float() for p in parts]) / self.per_rank
        return self._apply(self.D, self.opt_d, self.scaler_d, sums, D_STATS, "D", step)

    def g_step(self, z: Tensor, step: int, images_seen: int | None = None) -> dict[str, float]:
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        sums = torch.zeros(1, device=self.ctx.device)
        for z_c in z.split(self.chunk):
            with self._autocast():
                logits = self.D(self.G(z_c))
            loss = g_nonsaturating_loss(logits.float()).sum()
            self.scaler_g.scale(loss / self.per_rank).backward()
            sums += loss.detach().float() / self.per_rank
        names = G_STATS
        if self.options.pl_weight > 0:
            names = (*G_STATS[:-1], *PL_STATS, G_STATS[-1])  # _apply appends the gradient norm after the sums
            pl = (
                self._path_length_step(z)
                if step % self.options.pl_interval == 0
                else torch.zeros(2, device=sums.device)
            )
            sums = torch.cat([sums, pl])
        stats = self._apply(self.G, self.opt_g, self.scaler_g, sums, names, "G", step)
        update_ema(self.G_ema, self.G, self.ema_beta(step, images_seen))
        return stats

    def ema_beta(self, step: int, images_seen: int | None = None) -> float:
        """The EMA coefficient of `step`: train.ema, or its ramped value under train.ema_rampup."""
        opt = self.options
        shown = step * opt.total_batch if images_seen is None else images_seen
        return ema_beta(opt.ema, opt.total_batch, shown, opt.ema_rampup)

    def _path_length_step(self, z: Tensor) -> Tensor:
        """StyleGAN2's lazy path-length term on a smaller batch; its gradient joins the G step's.
        Returns (mean path length over ranks, penalty) for the statistics."""
        opt = self.options
        n = max(1, self.chunk // opt.pl_batch_shrink)
        with self._autocast():
            ws = self.G.broadcast_ws(self.G.mapping(z[:n]))
            images = self.G.synthesize(ws)
        noise = torch.randn_like(images, dtype=torch.float32)
        lengths = path_lengths(images, ws, noise)
        # One running mean for all processes (StyleGAN2 keeps one per process), so N ranks train as one.
        mean_length = mean_over_ranks(lengths.detach().mean().reshape(1), self.ctx)[0]
        self.pl_mean.copy_(self.pl_mean.lerp(mean_length, opt.pl_decay))
        penalty = path_length_penalty(lengths, self.pl_mean, opt.pl_weight, opt.pl_interval).mean()
        self.scaler_g.scale(penalty).backward()
        return torch.stack([mean_length, penalty.detach().float()])

    def _apply(
        self,
        model: nn.Module,
        optimiser: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        sums: Tensor,
        names: tuple[str, ...],
        phase: str,
        step: int,
    ) -> dict[str, float]:
        params = [p for p in model.parameters() if p.grad is not None]
        average_gradients(params, self.ctx)
        scaler.unscale_(optimiser)
        values = mean_over_ranks(torch.cat([sums, grad_norm(params).reshape(1).to(sums.device)]), self.ctx).tolist()
        stats = dict(zip(names, values, strict=True))
        # Under fp16 an overflowing scaled gradient (which R1 is made of) is routine: the scaler skips
        # that step and lowers its scale, so only the losses, computed in fp32 from the logits, are checked.
        checked = {k: v for k, v in stats.items() if not (scaler.is_enabled() and k.startswith(("grad_norm", "r1_")))}
        bad = {k: v for k, v in checked.items() if not math.isfinite(v)}
        if bad:
            shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
            raise TrainingDiverged(f"the {phase} step at step {step} gave a non-finite {shown}")
        scaler.step(optimiser)
        scaler.update()
        return stats

    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "pl_mean": self.pl_mean.detach().cpu(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if "pl_mean" in state:  # states written before path-length regularisation existed have none
            self.pl_mean.copy_(state["pl_mean"].to(self.pl_mean.device))
        if self.scaler_g.is_enabled():
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
