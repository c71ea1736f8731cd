"""The loop on toy models: outputs, data order, flips, NaN stop, bad input, corrupt checkpoints."""

from __future__ import annotations

import csv

import pytest
import torch

from pipeline.config import ConfigError
from pipeline.train.benchmark import benchmark_training
from pipeline.train.checkpoint import TRAINING_STATE, CheckpointError, kept_snapshot_files, load_checkpoint
from pipeline.train.loop import GlobalBatchSampler, TrainingInputError, sample_latents, step_randomness, train
from pipeline.train.trainer import GANTrainer, TrainingDiverged

from .toy import ToyDiscriminator, ToyGenerator, ToyImages, toy_options


def _train(tmp_path, data=None, **kw):
    opts = kw.pop("options", None) or toy_options()
    return train(opts, ToyGenerator, ToyDiscriminator, data or ToyImages(), tmp_path / "run", progress=False, **kw)


def test_outputs_snapshot_state_samples_and_plots(tmp_path):
    summary = _train(tmp_path, plots_path=tmp_path / "plots.csv", snapshot_info={"row": "toy"})
    run = tmp_path / "run"
    assert summary.step == 6 and summary.images_seen == 48 and summary.resumed_from is None
    snap = load_checkpoint(run / "network-snapshot.pt")
    assert {"G", "G_ema", "D", "options", "info", "step", "kimg"} <= set(snap) and snap["info"] == {"row": "toy"}
    state = load_checkpoint(run / TRAINING_STATE)
    assert state["step"] == 6 and state["images_seen"] == 48 and len(state["rng"]) == 1
    assert state["sampler"] == {"epoch": 1, "batch": 2, "batches_per_epoch": 4, "dataset_size": 32}
    assert {"opt_g", "opt_d", "G_ema"} <= set(state["models"])
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-0000002.png",
        "step-0000004.png",
        "step-0000006.png",
    ]
    rows = list(csv.DictReader((tmp_path / "plots.csv").open()))
    assert len(rows) == 6 and float(rows[-1]["kimg"]) == pytest.approx(0.048)
    assert {"loss_g", "loss_d_real", "loss_d_fake", "r1_penalty", "grad_norm_g", "grad_norm_d", "images_per_s"} <= set(
        rows[0]
    )
    assert all(float(r["r1_penalty"]) > 0 for r in rows)
    # `dvc repro -f` deletes the plots file and re-runs a finished row: resuming at the end writes it again.
    (tmp_path / "plots.csv").unlink()
    again = _train(tmp_path, plots_path=tmp_path / "plots.csv", snapshot_info={"row": "toy"})
    assert again.resumed_from == 6 and again.step == 6
    assert list(csv.DictReader((tmp_path / "plots.csv").open())) == rows


def test_kept_snapshots_at_their_steps_and_the_last(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, options=toy_options(iterations=7, keep_snapshot_every=3), snapshot_info={"row": "toy"})
    kept = kept_snapshot_files(run)
    assert list(kept) == [3, 6, 7] and [p.name for p in kept.values()] == [
        "snapshot-0000003.pt",
        "snapshot-0000006.pt",
        "snapshot-0000007.pt",
    ]
    last = load_checkpoint(kept[7])
    assert set(last) == {"format", "G_ema", "step", "kimg", "info", "options"} and last["info"] == {"row": "toy"}
    assert (
        last["step"] == 7
        and last["kimg"] == pytest.approx(0.056)
        and load_checkpoint(kept[3])["kimg"] == pytest.approx(0.024)
    )
    final = load_checkpoint(run / "network-snapshot.pt")["G_ema"]
    assert all(last["G_ema"][k].equal(final[k]) for k in final)  # the last kept snapshot is the scored generator
    assert not all(load_checkpoint(kept[3])["G_ema"][k].equal(final[k]) for k in final)


def test_starting_over_removes_the_kept_snapshots_of_the_earlier_run(tmp_path):
    run = tmp_path / "run"
    _train(tmp_path, options=toy_options(iterations=4, keep_snapshot_every=1))
    (run / "snapshots" / ".snapshot-0000005.pt.x.tmp.pt").write_bytes(b"")  # left by a SIGKILL mid-write
    _train(tmp_path, options=toy_options(iterations=4, keep_snapshot_every=2), resume=False)
    assert list(kept_snapshot_files(run)) == [2, 4] and len(list((run / "snapshots").iterdir())) == 2
    _train(tmp_path, options=toy_options(iterations=4, r1_gamma=1.0), restart_on_change=True)
    assert kept_snapshot_files(run) == {}


def test_global_batches_split_over_ranks_and_resume_mid_epoch():
    single = iter(GlobalBatchSampler(20, 8, 0, 1, seed=3))
    ranks = [iter(GlobalBatchSampler(20, 8, r, 2, seed=3)) for r in range(2)]
    batches = [next(single) for _ in range(5)]  # 2 batches per epoch: crosses two epoch boundaries
    for b in batches:
        parts = [next(r) for r in ranks]
        assert parts[0] == b[0::2] and parts[1] == b[1::2] and len(set(b)) == 8
    assert next(iter(GlobalBatchSampler(20, 8, 0, 1, seed=3, start_step=3))) == batches[3]
    assert sample_latents(range(5, 7), 4).equal(sample_latents(range(0, 9), 4)[5:7])


def test_hflip_mirrors_about_half_of_the_reals(tmp_path, monkeypatch):
    seen = []
    original = GANTrainer.step

    def spy(self, reals, z_d, z_g, step, **kwargs):
        seen.append(reals.clone())
        return original(self, reals, z_d, z_g, step, **kwargs)

    monkeypatch.setattr(GANTrainer, "step", spy)
    data = ToyImages()
    for hflip in (False, True):
        seen.clear()
        _train(tmp_path / str(hflip), data, options=toy_options(hflip=hflip, iterations=4))
        reals = torch.cat(seen)
        order = [i for t in range(4) for i in next(iter(GlobalBatchSampler(32, 8, 0, 1, 0, start_step=t)))]
        plain = data.images[order]
        flipped = (reals == plain.flip(-1)).flatten(1).all(1)
        assert ((reals == plain).flatten(1).all(1) | flipped).all()
        assert (flipped.sum().item() == 0) if not hflip else (8 <= flipped.sum().item() <= 24)
    z_d, z_g, flips = step_randomness(0, 5, 8, 4)
    assert not z_d.equal(z_g) and step_randomness(0, 5, 8, 4)[2].equal(flips)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # Fetch 1 is the shape check; steps 1-2 fetch 2..17, step 3 starts at fetch 18.
    with pytest.raises(
        TrainingDiverged, match=r"non-finite loss_d_real = nan.*last good checkpoint .*step 2\) is kept"
    ):
        _train(tmp_path, ToyImages(nan_from=20))
    state = load_checkpoint(tmp_path / "run" / TRAINING_STATE)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["models"]["G"].values())


def test_bad_input_stops_before_training(tmp_path):
    with pytest.raises(TrainingInputError, match="has 4 images, fewer than one global batch"):
        _train(tmp_path, ToyImages(n=4))

    class Big(ToyImages):
        def __getitem__(self, i):
            return torch.zeros(3, 16, 16), 0

    with pytest.raises(
        TrainingInputError,
        match=r"dataset 'faces' holds images of shape \(3, 16, 16\) but the generator makes \(3, 8, 8\)",
    ):
        _train(tmp_path, Big(), dataset_name="faces")
    with pytest.raises(ConfigError, match="not divisible by the number of processes 3"):
        from pipeline.train.distributed import DistContext

        _train(tmp_path, ctx=DistContext(world_size=3))
    assert not (tmp_path / "run" / TRAINING_STATE).exists()


def test_corrupt_checkpoint_stops_resume_and_is_never_overwritten(tmp_path):
    _train(tmp_path, options=toy_options(iterations=2))
    path = tmp_path / "run" / TRAINING_STATE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"'{path}' is corrupt.*left as it is"):
        _train(tmp_path, options=toy_options(iterations=4))
    assert path.read_bytes() == bytes(data)
    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated, as by a full disk
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        _train(tmp_path, options=toy_options(iterations=4))


def test_resume_refuses_changed_options_and_continues_longer_runs(tmp_path):
    _train(tmp_path, options=toy_options(iterations=2))
    with pytest.raises(TrainingInputError, match="configuration changed.*r1_gamma: 10.0 -> 1.0"):
        _train(tmp_path, options=toy_options(iterations=4, r1_gamma=1.0))
    with pytest.raises(TrainingInputError, match=r"configuration changed.*generator: None -> \{'width': 3\}"):
        _train(tmp_path, options=toy_options(iterations=4), identity={"generator": {"width": 3}})
    summary = _train(tmp_path, options=toy_options(iterations=4))
    assert summary.resumed_from == 2 and summary.step == 4
    restarted = _train(tmp_path, options=toy_options(iterations=4, r1_gamma=1.0), restart_on_change=True)
    assert (
        restarted.resumed_from is None
        and load_checkpoint(tmp_path / "run" / TRAINING_STATE)["options"]["r1_gamma"] == 1.0
    )


def test_benchmark_reports_images_per_second():
    result = benchmark_training(
        ToyGenerator(), ToyDiscriminator(), toy_options(), batch=4, steps=3, warmup=1, device="cpu"
    )
    assert result["images_per_s"] > 0 and result["device"] == "cpu" and result["step_s_q1"] <= result["step_s_q3"]
