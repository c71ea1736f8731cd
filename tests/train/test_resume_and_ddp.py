"""Exactness of the engine: a SIGKILLed run resumed ends where an uninterrupted one does, and two
gloo processes train the same parameters as one process with the same total batch.

Children are forked (torch is already imported, so no second start-up); each trains toy models.
The toy D has no batch coupling: with minibatch-stddev, a per-process batch forms its own groups,
so N processes would match 1 process only up to that layer's grouping (as in StyleGAN2)."""

from __future__ import annotations

import multiprocessing as mp
import socket

import torch

from pipeline.train.checkpoint import TRAINING_STATE, kept_snapshot_files, load_checkpoint
from pipeline.train.distributed import init_from_env, shutdown
from pipeline.train.loop import train

from .toy import NoisyToyGenerator, ToyDiscriminator, ToyGenerator, ToyImages, toy_options

FORK = mp.get_context("fork")


def _run(run_dir, options=None, data=None, ctx=None, generator=ToyGenerator):
    kwargs = {"ctx": ctx} if ctx is not None else {}
    return train(
        options or toy_options(), generator, ToyDiscriminator, data or ToyImages(), run_dir, progress=False, **kwargs
    )


def _killed_child(run_dir, kill_at, options=None):
    _run(run_dir, options, data=ToyImages(kill_at=kill_at), generator=NoisyToyGenerator)


def _rank_child(rank, world, port, run_dir, options):
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    ctx = init_from_env(env, "cpu", timeout_s=60)
    try:
        _run(run_dir, options, ctx=ctx)
    finally:
        shutdown(ctx)


def _models(run_dir):
    return load_checkpoint(run_dir / TRAINING_STATE)["models"]


def _assert_same_models(a, b, exact, atol=1e-6):
    for net in ("G", "D", "G_ema"):
        for key in a[net]:
            if exact:
                assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
            else:
                torch.testing.assert_close(a[net][key], b[net][key], rtol=1e-5, atol=atol, msg=f"{net}.{key} differs")


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    _run(tmp_path / "whole", generator=NoisyToyGenerator)
    # Fetch 1 is the shape check, each step fetches 8 images: fetch 30 dies inside step 4,
    # after the checkpoint of step 2.
    child = FORK.Process(target=_killed_child, args=(tmp_path / "killed", 30))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    assert load_checkpoint(tmp_path / "killed" / TRAINING_STATE)["step"] == 2
    summary = _run(tmp_path / "killed", generator=NoisyToyGenerator)  # the same command again
    assert summary.resumed_from == 2 and summary.step == 6
    whole, resumed = (
        load_checkpoint(tmp_path / "whole" / TRAINING_STATE),
        load_checkpoint(tmp_path / "killed" / TRAINING_STATE),
    )
    _assert_same_models(whole["models"], resumed["models"], exact=True)
    assert whole["models"]["opt_g"]["state"][0]["exp_avg_sq"].equal(
        resumed["models"]["opt_g"]["state"][0]["exp_avg_sq"]
    )
    assert [r["loss_g"] for r in whole["log"]] == [r["loss_g"] for r in resumed["log"]]
    assert resumed["images_seen"] == whole["images_seen"] == 48


def test_kept_snapshots_of_a_sigkilled_and_resumed_run_match_the_uninterrupted_ones(tmp_path):
    options = toy_options(keep_snapshot_every=1)
    _run(tmp_path / "whole", options, generator=NoisyToyGenerator)
    # As above, the child dies inside step 4: kept snapshots 1-3 are written, the training state is of step 2.
    child = FORK.Process(target=_killed_child, args=(tmp_path / "killed", 30, options))
    child.start()
    child.join(120)
    assert child.exitcode == -9 and list(kept_snapshot_files(tmp_path / "killed")) == [1, 2, 3]
    summary = _run(tmp_path / "killed", options, generator=NoisyToyGenerator)
    assert summary.resumed_from == 2
    whole, resumed = kept_snapshot_files(tmp_path / "whole"), kept_snapshot_files(tmp_path / "killed")
    assert list(whole) == list(resumed) == [1, 2, 3, 4, 5, 6]
    for step in whole:
        a, b = load_checkpoint(whole[step]), load_checkpoint(resumed[step])
        assert a["kimg"] == b["kimg"] == step * 8 / 1000
        assert all(a["G_ema"][k].equal(b["G_ema"][k]) for k in a["G_ema"]), f"kept snapshot of step {step} differs"
    _assert_same_models(_models(tmp_path / "whole"), _models(tmp_path / "killed"), exact=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(run_dir, options) -> list[int | None]:
    """Train in 2 forked gloo processes on this CPU; their exit codes."""
    port = _free_port()
    children = [FORK.Process(target=_rank_child, args=(r, 2, port, run_dir, options)) for r in range(2)]
    for c in children:
        c.start()
    for c in children:
        c.join(120)
    return [c.exitcode for c in children]


def test_two_gloo_processes_equal_one_process_with_the_same_total_batch(tmp_path):
    options = toy_options(iterations=4)
    _run(tmp_path / "one", options)
    assert _run_two_ranks(tmp_path / "two", options) == [0, 0]
    one, two = load_checkpoint(tmp_path / "one" / TRAINING_STATE), load_checkpoint(tmp_path / "two" / TRAINING_STATE)
    assert len(two["rng"]) == 2 and two["step"] == one["step"] == 4
    _assert_same_models(one["models"], two["models"], exact=False)


def test_gradient_accumulation_equals_the_whole_batch(tmp_path):
    _run(tmp_path / "whole", toy_options(iterations=3))
    _run(tmp_path / "acc", toy_options(iterations=3, batch_per_gpu=2))
    _assert_same_models(_models(tmp_path / "whole"), _models(tmp_path / "acc"), exact=False)


def test_resume_with_another_process_count_continues(tmp_path):
    options = toy_options(iterations=2)
    assert _run_two_ranks(tmp_path / "run", options) == [0, 0]
    summary = _run(tmp_path / "run", toy_options(iterations=4))
    assert summary.resumed_from == 2 and summary.step == 4


def _killed_mid_checkpoint_child(run_dir, kill_at_step):
    """Trains until the training state of `kill_at_step` is being written, then dies with half of its
    bytes on disk (what a SIGKILL or a power cut during torch.save leaves)."""
    import io
    import os
    import signal

    import pipeline.train.checkpoint as checkpoint

    real_save = checkpoint.torch.save

    def half_then_die(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == kill_at_step and "models" in obj:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    checkpoint.torch.save = half_then_die
    _run(run_dir, generator=NoisyToyGenerator)


def test_sigkill_while_the_training_state_is_written_keeps_the_last_one_and_resumes_exactly(tmp_path):
    # Issue #15: the kill that matters is the one during a checkpoint write. The half-written file is a
    # temporary; the training state of step 2 stays whole, and the resumed run ends where an
    # uninterrupted one does.
    _run(tmp_path / "whole", generator=NoisyToyGenerator)
    child = FORK.Process(target=_killed_mid_checkpoint_child, args=(tmp_path / "killed", 4))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    leftovers = [p.name for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]
    assert any(".tmp" in name for name in leftovers), leftovers  # the half-written temporary is there...
    assert load_checkpoint(tmp_path / "killed" / TRAINING_STATE)["step"] == 2  # ...and the state it replaces is whole
    summary = _run(tmp_path / "killed", generator=NoisyToyGenerator)
    assert summary.resumed_from == 2 and summary.step == 6
    _assert_same_models(_models(tmp_path / "whole"), _models(tmp_path / "killed"), exact=True)
    assert not [p.name for p in (tmp_path / "killed").iterdir() if ".tmp" in p.name]  # removed by the resumed run
