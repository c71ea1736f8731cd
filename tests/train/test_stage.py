"""The train stage on a toy row: outputs under runs/<row>/, options.json, the plots file, one
MLflow run on rank 0, resume by running again, and its bad-input messages. The model registry is
replaced by the toy models so this test does not depend on the generators' code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError, parse_params
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.loop import TrainingInputError
from stages import train as stage

from .toy import ToyDiscriminator, ToyGenerator, toy_options


def _prepare(root: Path, n: int = 32, res: int = 8) -> None:
    out = root / "data" / "prepared" / "faces32"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(out / "images.npy", rng.integers(0, 256, size=(n, res, res, 3), dtype=np.uint8))
    np.save(out / "labels.npy", np.zeros(n, dtype=np.int64))
    (out / "meta.json").write_text(json.dumps({"num_classes": 1}))


@pytest.fixture
def toy_row(project: Path, micro_dict: dict, monkeypatch: pytest.MonkeyPatch):
    micro_dict["rows"] = {
        "toy": {"dataset": "faces32", "table": "test", "generator": {"kind": "stylegan2", "resolution": 32}}
    }
    micro_dict["train"] = {}  # the paper's recipe; tests pass their own toy options
    monkeypatch.setattr(
        stage, "model_factories", lambda generator, options, resolution: (ToyGenerator, ToyDiscriminator)
    )
    return parse_params(micro_dict)


def test_stage_writes_run_folder_plots_and_one_mlflow_run(project: Path, toy_row) -> None:
    _prepare(project)
    summary = stage.run(toy_row, "toy", options=toy_options(iterations=4), environ={}, progress=False)
    run = project / "runs" / "toy"
    assert summary.step == 4
    assert {p.name for p in run.iterdir()} == {"options.json", "network-snapshot.pt", "training-state.pt", "samples"}
    options = json.loads((run / "options.json").read_text())
    assert options["row"] == "toy" and options["train"]["total_batch"] == 8 and options["world_size"] == 1
    assert (project / "reports" / "plots" / "train" / "toy.csv").read_text().count("\n") == 5
    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd()}/mlruns.db")  # absolute: MLflow caches stores by URI
    exp = client.get_experiment_by_name(toy_row.tracking.experiment)
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.data.tags["stage"] == "train" and mlrun.data.tags["row"] == "toy" and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["train.r1_gamma"] == "10.0" and "loss_g" in mlrun.data.metrics
    assert mlrun.data.tags["table"] == "test"  # the row's table: the study view filters and groups by it
    [given] = mlrun.inputs.dataset_inputs
    assert given.dataset.name == "faces32" and given.dataset.source.endswith('data/prepared/faces32"}')
    grids = [a.path for a in client.list_artifacts(mlrun.info.run_id, "samples")]
    assert grids and all(g.startswith("samples/kimg-") for g in grids)  # named by kimg, not by step
    again = stage.run(toy_row, "toy", options=toy_options(iterations=6), environ={}, progress=False)
    assert again.resumed_from == 4 and again.step == 6
    assert len(client.search_runs([exp.experiment_id])) == 2
    # A row found finished (dvc repro after make repro trained it) leaves no empty run behind.
    stage.run(toy_row, "toy", options=toy_options(iterations=6), environ={}, progress=False)
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_options_json_and_both_tracked_runs_hold_the_rows_spec(project: Path, toy_row, micro_dict: dict) -> None:
    # options.json, the train run's params and the run `pipeline track --from-reports` makes for the
    # row came from two copies of one function (the library may not import the stage's); one row_spec
    # now serves all three, and this pins that they agree.
    from pipeline.tracking import log_from_reports
    from pipeline.train.options import row_spec

    _prepare(project)
    micro_dict["train"] = toy_options(iterations=2).model_dump(mode="json")  # the stage's options = params'
    params = parse_params(micro_dict)
    stage.run(params, "toy", environ={}, progress=False)
    recorded = json.loads((project / "runs" / "toy" / "options.json").read_text())
    spec = row_spec(params, "toy")
    assert recorded.pop("device") == "cpu" and recorded == {**spec, "world_size": 1}
    score = project / "reports" / "metrics" / "score" / "toy.json"
    score.parent.mkdir(parents=True)
    score.write_text(json.dumps({"fd_domain": 1.0, "kimg": 0.016}))
    filled = f"sqlite:///{project}/filled.db"
    assert log_from_reports(params, project, filled) == (["train/toy"], [])

    def logged(uri: str) -> dict[str, str]:
        client = MlflowClient(tracking_uri=uri)
        (mlrun,) = client.search_runs([client.get_experiment_by_name(params.tracking.experiment).experiment_id])
        return mlrun.data.params

    trained = logged(f"sqlite:///{project}/mlruns.db")
    assert trained.pop("world_size") == "1" and trained == logged(filled)
    assert trained["train.total_batch"] == "8" and trained["generator.kind"] == "stylegan2"


def test_missing_and_empty_datasets_are_named(project: Path, toy_row) -> None:
    with pytest.raises(
        TrainingInputError,
        match=r"prepared dataset 'data/prepared/faces32' does not exist; run `pipeline prepare --dataset faces32`",
    ):
        stage.run(toy_row, "toy", options=toy_options(), environ={}, progress=False)
    _prepare(project, n=0)
    with pytest.raises(TrainingInputError, match="data/prepared/faces32' is empty"):
        stage.run(toy_row, "toy", options=toy_options(), environ={}, progress=False)
    assert not (project / "runs").exists()


def test_batch_not_divisible_by_processes_stops_first(project: Path, toy_row) -> None:
    with pytest.raises(ConfigError, match="total_batch 8 is not divisible by the number of processes 3"):
        stage.run(toy_row, "toy", options=toy_options(), environ={"WORLD_SIZE": "3", "RANK": "5"}, progress=False)


def test_default_options_and_torchrun_command(toy_row) -> None:
    assert toy_row.train_options("toy").total_steps == 800_000
    cmd = stage.torchrun_command(4, Path("params.yaml"), "toy", resume=False, restart_on_change=True)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert cmd[6:] == ["stages.train", "--params", "params.yaml", "--row", "toy", "--no-resume", "--restart-on-change"]


def test_corrupt_state_stops_the_stage_before_it_writes_anything(project: Path, toy_row) -> None:
    _prepare(project)
    state = project / "runs" / "toy" / "training-state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="runs/toy/training-state.pt' is corrupt or truncated"):
        stage.run(toy_row, "toy", options=toy_options(), environ={}, progress=False)
    assert state.read_bytes() == b"not a checkpoint" and not (project / "runs" / "toy" / "options.json").exists()


def test_cli_says_when_a_row_is_already_trained(project: Path, toy_row, micro_dict: dict) -> None:
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    _prepare(project)
    micro_dict["train"] = toy_options(iterations=2).model_dump(mode="json")
    Path("params.yaml").write_text(yaml.safe_dump(micro_dict))
    first = CliRunner().invoke(app, ["train", "--row", "toy"])
    assert first.exit_code == 0 and "trained toy: step 2, 0.016 kimg" in first.output, first.output
    again = CliRunner().invoke(app, ["train", "--row", "toy"])
    assert again.exit_code == 0 and "toy is already trained: step 2, 0.016 kimg (raise train.kimg" in again.output, (
        again.output
    )


def test_train_many_trains_rows_side_by_side_and_reports_each_exit_code(project: Path) -> None:
    # Real micro rows in their own processes (one thread each), two at a time; a row whose dataset was
    # never prepared fails alone, named with its exit code, and the others still finish.
    _prepare(project, n=16, res=32)
    params = project / "params.yaml"
    data = yaml.safe_load(params.read_text())
    data["rows"]["broken"] = {**data["rows"]["inr_gan"], "dataset": "faces32_test"}
    params.write_text(yaml.safe_dump(data))
    lines: list[str] = []
    codes = stage.train_many(
        params, ["inr_gan", "stylegan2", "broken"], jobs=2, log_dir=project / "runs" / "logs", echo=lines.append
    )
    assert codes["inr_gan"] == 0 and codes["stylegan2"] == 0 and codes["broken"] == 2
    assert (project / "runs" / "inr_gan" / "network-snapshot.pt").exists() and (
        project / "runs" / "stylegan2" / "training-state.pt"
    ).exists()
    assert "pipeline prepare --dataset faces32_test" in (project / "runs" / "logs" / "broken.log").read_text()
    assert any(line.startswith("train broken: FAILED (exit 2)") for line in lines)
    assert sum("started" in line for line in lines) == 3
    # Again: finished rows return at once (the same command resumes at its last step).
    again = stage.train_many(params, ["inr_gan"], jobs=1, log_dir=project / "runs" / "logs", echo=lines.append)
    assert again == {"inr_gan": 0} and "step 4" in (project / "runs" / "logs" / "inr_gan.log").read_text()
    # `then` commands join the pool after every row has started; their exit codes are reported too.
    lines.clear()
    side = stage.train_many(
        params,
        ["inr_gan"],
        jobs=1,
        log_dir=project / "runs" / "logs",
        echo=lines.append,
        then=["echo side work; exit 3"],
    )
    assert side == {"inr_gan": 0, "then-1": 3}
    assert [line.split(":")[0] for line in lines] == ["train inr_gan", "train inr_gan", "then-1", "then-1"], lines
    assert (
        lines[-1].startswith("then-1: FAILED (exit 3)")
        and "side work" in (project / "runs" / "logs" / "then-1.log").read_text()
    )
    with pytest.raises(ConfigError, match="unknown row 'nope'"):
        stage.train_many(params, ["nope"], jobs=1, log_dir=project / "runs" / "logs")


def test_torchrun_entry_reports_a_full_disk_in_one_line_with_exit_code_2(monkeypatch, capsys) -> None:
    # `train-all` and torchrun run `python -m stages.train`, whose main() maps known errors itself.
    from pipeline.io import no_space_error

    def full(*args, **kwargs):
        raise no_space_error(Path("runs/toy/training-state.pt"))

    monkeypatch.setattr(stage, "load_params", lambda path: None)
    monkeypatch.setattr(stage, "run", full)
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--row", "toy"])
    assert exit_info.value.code == 2 and "error: no space left on runs/toy" in capsys.readouterr().err
