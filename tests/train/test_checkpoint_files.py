"""Checkpoint files as files: equal payloads give equal bytes (issue #15 item 14), and a format-1
checkpoint that lacks keys is named with the keys it lacks (item 13), not a KeyError."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.checkpoint import TRAINING_STATE, CheckpointError, load_checkpoint, save_checkpoint
from pipeline.train.loop import train

from .toy import ToyDiscriminator, ToyGenerator, ToyImages, toy_options


def test_equal_payloads_give_equal_bytes_whatever_the_path(tmp_path):
    # torch.save given a path names the zip records after it (here the random temporary name).
    payload = {"G_ema": {"w": torch.arange(6.0).view(2, 3)}, "step": 3, "info": {"row": "toy"}}
    save_checkpoint(tmp_path / "a.pt", payload)
    save_checkpoint(tmp_path / "sub" / "other-name.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "other-name.pt").read_bytes()
    assert load_checkpoint(tmp_path / "sub" / "other-name.pt")["G_ema"]["w"].equal(payload["G_ema"]["w"])


def test_a_training_state_missing_keys_is_named_and_left_alone(tmp_path):
    run = tmp_path / "run"
    train(toy_options(iterations=2), ToyGenerator, ToyDiscriminator, ToyImages(), run, progress=False)
    state = load_checkpoint(run / TRAINING_STATE)
    del state["options"], state["sampler"], state["format"]
    save_checkpoint(run / TRAINING_STATE, state)
    before = (run / TRAINING_STATE).read_bytes()
    with pytest.raises(
        CheckpointError, match=r"checkpoint '.*training-state.pt' lacks 'options', 'sampler' \(it holds .*'models'.*\)"
    ):
        train(toy_options(iterations=4), ToyGenerator, ToyDiscriminator, ToyImages(), run, progress=False)
    assert (run / TRAINING_STATE).read_bytes() == before


def test_required_keys_are_checked_for_any_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "snap.pt", {"step": 1})
    with pytest.raises(CheckpointError, match=r"'.*snap.pt' lacks 'G_ema' \(it holds 'format', 'step'\)"):
        load_checkpoint(tmp_path / "snap.pt", required=("G_ema", "step"))
