"""The prepare stage end to end on the micro profile: outputs, metrics, MLflow run, tracking failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError, load_params, parse_params
from pipeline.tracking import flatten
from stages import paths
from stages import prepare as stage


def test_prepare_writes_outputs_and_one_tagged_mlflow_run(project: Path) -> None:
    params = load_params("params.yaml")
    stats = stage.run(params, "faces32")
    assert (paths.prepared_dir("faces32") / "images.npy").exists()
    assert paths.prepare_preview("faces32").stat().st_size > 0
    metrics = json.loads(paths.prepare_metrics("faces32").read_text())
    assert metrics["num_images"] == stats["num_images"] == 128 and metrics["num_bad"] == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd()}/mlruns.db")  # absolute: MLflow caches stores by URI
    exp = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "prepare" and run.data.tags["dataset"] == "faces32"
    assert run.data.tags["profile"] == "micro" and "git_commit" in run.data.tags
    assert run.data.params["num_images"] == "128" and run.data.params["source"] == "synthetic_faces"
    assert run.data.metrics["num_images"] == 128
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert arts == {"figures/faces32.png"}


def test_unreachable_tracking_server_is_loud_but_not_fatal(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    stats = stage.run(load_params("params.yaml"), "faces64")
    assert stats["num_images"] == 64 and paths.prepare_metrics("faces64").exists()
    assert "MLflow tracking skipped" in capsys.readouterr().err


def test_missing_source_fails_before_any_output(project: Path, micro_dict: dict) -> None:
    micro_dict["prepare"]["datasets"]["ffhq"] = {"source": "folder", "path": "raw/ffhq", "resolution": 32}
    with pytest.raises(ConfigError, match="raw/ffhq' does not exist"):
        stage.run(parse_params(micro_dict), "ffhq")
    assert not Path("data").exists() and not Path("mlruns.db").exists()


def test_flatten_nested_params() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_relative_sqlite_uri_is_bound_to_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    from pipeline.tracking import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///mlruns.db") == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri("sqlite:///mlruns.db") == "http://127.0.0.1:5000"
