"""Starting over (--no-resume, or --restart-on-change after a setting changed) keeps the earlier run's
outputs until the new run has its first checkpoint: a restart that fails or is SIGKILLed before that
leaves the row exactly as it was (issue #15 item 1: it used to delete the kept snapshots first, so the
row then resumed as "already trained" and score blamed keep_snapshot_every)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pipeline.train.checkpoint import TRAINING_STATE, kept_snapshot_files, load_checkpoint
from pipeline.train.loop import PREVIOUS_RUN_DIR, _recover_previous_run, train
from pipeline.train.trainer import TrainingDiverged

from .toy import ToyDiscriminator, ToyGenerator, ToyImages, toy_options

FORK = mp.get_context("fork")
# Every step keeps a G_ema snapshot; checkpoints every 2 steps.
OPTIONS = toy_options(iterations=4, keep_snapshot_every=1)


def _train(run: Path, data=None, options=OPTIONS, **kw):
    return train(
        options,
        ToyGenerator,
        ToyDiscriminator,
        data or ToyImages(),
        run,
        progress=False,
        options_record={"row": "toy"},
        **kw,
    )


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    run = tmp_path / "run"
    _train(run)
    before = _files(run)
    assert list(kept_snapshot_files(run)) == [1, 2, 3, 4] and "options.json" in before
    return run, before


@pytest.mark.parametrize(
    "how",
    [
        {"resume": False},
        {"restart_on_change": True, "options": toy_options(iterations=4, keep_snapshot_every=1, r1_gamma=1.0)},
    ],
)
def test_a_restart_that_fails_before_its_first_checkpoint_puts_the_earlier_run_back(finished, how):
    run, before = finished
    # Fetch 1 is the shape check, step 1 fetches 2..9: NaN images from fetch 3 diverge in step 1.
    with pytest.raises(
        TrainingDiverged, match=r"no checkpoint was written yet, and the earlier run's outputs were put back"
    ):
        _train(run, ToyImages(nan_from=3), **how)
    assert _files(run) == before and not (run / PREVIOUS_RUN_DIR).exists()
    # The row is the earlier run, whole: its curve is still there for score.
    assert _train(run).resumed_from == 4 and list(kept_snapshot_files(run)) == [1, 2, 3, 4]


def _killed_restart(run: Path, kill_at: int) -> None:
    _train(run, ToyImages(kill_at=kill_at), resume=False)


def test_a_sigkilled_restart_before_its_first_checkpoint_is_undone_by_the_next_run(finished):
    run, before = finished
    # Fetch 12 dies inside step 2: the new run has kept snapshot 1 (its own) but no checkpoint yet.
    child = FORK.Process(target=_killed_restart, args=(run, 12))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    assert (run / PREVIOUS_RUN_DIR).is_dir() and not (run / TRAINING_STATE).exists()
    assert list(kept_snapshot_files(run)) == [1] and _files(run) != before
    again = _train(run)  # the same command as before the restart: the earlier run is back, finished
    assert again.resumed_from == 4 and again.step == 4
    assert _files(run) == before and not (run / PREVIOUS_RUN_DIR).exists()


def test_a_sigkilled_restart_after_its_first_checkpoint_keeps_only_the_new_run(finished):
    run, _ = finished
    # Fetch 20 dies inside step 3, after the new run's checkpoint of step 2.
    child = FORK.Process(target=_killed_restart, args=(run, 20))
    child.start()
    child.join(120)
    assert child.exitcode == -9 and not (run / PREVIOUS_RUN_DIR).exists()
    assert load_checkpoint(run / TRAINING_STATE)["step"] == 2
    summary = _train(run)
    assert summary.resumed_from == 2 and summary.step == 4 and list(kept_snapshot_files(run)) == [1, 2, 3, 4]


def test_recovery_after_a_kill_at_any_point_of_the_move_or_the_first_checkpoint(finished, tmp_path):
    run, before = finished
    aside = run / PREVIOUS_RUN_DIR
    # Killed after moving the training state aside, before the rest: everything goes back.
    aside.mkdir()
    (run / TRAINING_STATE).rename(aside / TRAINING_STATE)
    assert _recover_previous_run(run) and _files(run) == before and not aside.exists()
    # Killed after the new run's first training state, before the earlier run was deleted: the new run stays.
    _train(run, resume=False, options=toy_options(iterations=2, keep_snapshot_every=1))
    new = _files(run)
    aside.mkdir()
    (aside / ".complete").touch()
    (aside / "snapshots").mkdir()
    (aside / "snapshots" / "snapshot-0000009.pt").write_bytes(b"earlier run")
    assert not _recover_previous_run(run) and _files(run) == new and not aside.exists()
