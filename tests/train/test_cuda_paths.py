"""The CUDA-only paths: mixed-precision training steps, pinned loading, bf16 generator benchmark, NCCL.

They have never run on the CPU machines this project is developed on; `make gpu-check` runs them on a GPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from pipeline.config import load_params
from pipeline.metrics.throughput import benchmark_generators
from pipeline.train.benchmark import benchmark_training
from pipeline.train.distributed import DistContext
from pipeline.train.loop import train
from pipeline.train.options import TrainConfig
from stages.train import model_factories

from .toy import ToyDiscriminator, ToyGenerator, ToyImages, toy_options

REPO = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda", 0)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False); `make gpu-check` runs these on a GPU",
    ),
]


def _micro_models(row: str, precision: str):
    params = load_params(REPO / "profiles" / "micro.yaml")
    options = params.train_options(row)
    options = TrainConfig.model_validate({**options.model_dump(), "mixed_precision": precision, "device": "cuda"})
    make_g, make_d = model_factories(params.row(row).generator, options, params.row(row).generator.resolution)
    return make_g(), make_d(), options


@pytest.mark.parametrize("row", ["inr_gan", "stylegan2"])
@pytest.mark.parametrize("precision", ["off", "bf16", "fp16"])
def test_training_steps_on_cuda_update_every_model_with_finite_weights(row, precision):
    torch.manual_seed(0)
    generator, discriminator, options = _micro_models(row, precision)
    before = [p.detach().clone() for p in generator.parameters()]
    result = benchmark_training(generator, discriminator, options, batch=4, steps=2, warmup=1, device="cuda")
    assert result["images_per_s"] > 0 and result["peak_memory_gib"] > 0
    assert result["mixed_precision"] == precision
    after = list(generator.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a.detach().cpu().to(b.device)) for b, a in zip(before, after, strict=True))


def test_one_fp32_step_on_cuda_matches_the_cpu_step():
    """The device path changes where the step runs, not what it computes (to float tolerance)."""
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        g, d = ToyGenerator(), ToyDiscriminator()
        benchmark_training(g, d, toy_options(), batch=4, steps=1, warmup=0, device=device)
        results[device] = torch.cat([p.detach().cpu().flatten() for p in g.parameters()])
    torch.testing.assert_close(results["cuda"], results["cpu"], atol=1e-4, rtol=1e-4)


def test_training_with_pinned_loading_on_cuda_writes_its_outputs(tmp_path):
    ctx = DistContext(device=CUDA)
    summary = train(
        toy_options(), ToyGenerator, ToyDiscriminator, ToyImages(), tmp_path / "run", ctx=ctx, progress=False
    )
    assert summary.step == 6 and (tmp_path / "run" / "network-snapshot.pt").exists()


def test_bf16_generator_benchmark_runs_and_gives_finite_images():
    generator, _, _ = _micro_models("inr_gan", "off")
    generator = generator.to(CUDA).eval()
    records = benchmark_generators(
        [("inr_gan", generator)], generator.resolution, batch=8, device=CUDA, dtype="bf16", repeats=2, iters=1
    )
    assert records[0]["img_per_s"] > 0 and records[0]["dtype"] == "bf16"
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        images = generator(torch.randn(4, generator.z_dim, device=CUDA))
    assert torch.isfinite(images.float()).all()


def test_nccl_all_reduce_in_a_world_of_one():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        x = torch.full((8,), 3.0, device=CUDA)
        dist.all_reduce(x)
        assert torch.equal(x.cpu(), torch.full((8,), 3.0))
    finally:
        dist.destroy_process_group()
