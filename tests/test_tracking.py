"""Tracking that fails costs a stage seconds, not minutes, and loses nothing: loopback servers that never
answer or answer HTTP 500, a database that cannot be written, and `pipeline track --pending` afterwards."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.tracking import PENDING_DIR, log_pending, stage_run

LIMIT_S = 30  # the bound for a stage whose tracking server misbehaves


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def _http_server(health: int) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            code = health if self.path.startswith("/health") else 500
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def failing_server() -> Iterator[str]:
    """Answers HTTP 500 to everything."""
    server, url = _http_server(500)
    yield url
    server.shutdown()


@pytest.fixture
def healthy_but_failing_server() -> Iterator[str]:
    """Says it is healthy, then answers HTTP 500 to every API call (MLflow retries those)."""
    server, url = _http_server(200)
    yield url
    server.shutdown()


def _prepare(project: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--dataset", "faces32_test"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    return res, time.monotonic() - start


@pytest.mark.parametrize("server", ["silent_server", "failing_server", "healthy_but_failing_server"])
def test_a_misbehaving_tracking_server_costs_a_stage_seconds(project: Path, server: str, request) -> None:
    res, seconds = _prepare(project, request.getfixturevalue(server))
    assert res.returncode == 0, res.stderr
    assert "MLflow tracking skipped" in res.stderr and seconds < LIMIT_S
    assert (project / "reports" / "metrics" / "prepare" / "faces32_test.json").exists()
    assert len(list((project / PENDING_DIR).glob("*.json"))) == 1  # kept for `pipeline track --pending`


def test_an_unusable_sqlite_store_is_skipped_at_once(project: Path) -> None:
    start = time.monotonic()
    with stage_run(f"sqlite:///{project}/no/such/folder/mlruns.db", "e", "prepare/x", {}) as tracker:
        assert not tracker.enabled
    locked = project / "locked.db"
    holder = sqlite3.connect(locked)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another writer that never lets go
    try:
        with stage_run(f"sqlite:///{locked}", "e", "prepare/y", {}) as tracker:
            assert not tracker.enabled
    finally:
        holder.close()
    assert time.monotonic() - start < 10  # MLflow alone retried for 105 s


def test_a_skipped_run_is_logged_later_by_track_pending(project: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    artifact = project / "grid.png"
    artifact.write_bytes(b"png")
    folder = project / "prepared"
    folder.mkdir()
    (folder / "meta.json").write_text('{"num_images": 3}')
    with stage_run("http://127.0.0.1:9", "study", "prepare/faces", {"stage": "prepare"}, {"a": {"b": 1}}) as tracker:
        tracker.log_metrics({"loss": 2.0}, step=1)
        tracker.log_metrics({"loss": 1.5}, step=2)
        tracker.log_artifact(artifact, "figures")
        tracker.log_artifact(artifact, name="samples.png")
        tracker.log_dataset(folder, "faces")
    # A lazy run that logged nothing (a finished row) keeps no record: it would be an empty run.
    with stage_run("http://127.0.0.1:9", "study", "train/done", {}, lazy=True):
        pass
    [record] = (project / PENDING_DIR).glob("*.json")
    assert json.loads(record.read_text())["metrics"]["loss"][:2] == [1.5, 2]

    # The pending run stays while the store is still unreachable ...
    logged, problems = log_pending("http://127.0.0.1:9", project / PENDING_DIR)
    assert logged == [] and "does not answer" in problems[0] and record.exists()
    # ... and is logged, then removed, once it answers: here through the CLI, to the profile's store.
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "track", "--pending"], cwd=project, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "logged prepare/faces" in res.stdout and not record.exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns.db")
    [run] = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.info.run_name == "prepare/faces" and run.info.status == "FINISHED"
    assert run.data.params["a.b"] == "1" and run.data.metrics["loss"] == 1.5 and run.data.tags["stage"] == "prepare"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/grid.png"]
    assert "samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["faces"]
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "track", "--pending"], cwd=project, capture_output=True, text=True
    )
    assert res.returncode == 0 and "no pending runs" in res.stdout


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str = "e") -> dict:
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return {} if exp is None else {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_a_lazy_run_exists_only_once_a_metric_is_logged(project: Path) -> None:
    uri = f"sqlite:///{project}/mlruns.db"
    grid = project / "step-0000004.png"
    grid.write_bytes(b"png")
    # A train stage that finds its row finished logs no metric: no run, and nothing kept for later.
    with stage_run(uri, "e", "train/done", {"stage": "train"}, {"a": 1}, lazy=True) as tracker:
        tracker.log_artifact(grid, "samples")
    assert "train/done" not in _runs(uri) and not (project / PENDING_DIR).exists()
    # One that trains opens its run at the first metric, with what was logged before it.
    with stage_run(uri, "e", "train/new", {"stage": "train", "table": "table2"}, {"a": 1}, lazy=True) as tracker:
        tracker.log_artifact(grid, "samples", name="kimg-000000.1.png")
        tracker.log_metrics({"loss_g": 1.0}, step=128)
    run = _runs(uri)["train/new"]
    assert run.data.params["a"] == "1" and run.data.tags["table"] == "table2" and run.info.status == "FINISHED"
    assert [a.path for a in _client(uri).list_artifacts(run.info.run_id, "samples")] == ["samples/kimg-000000.1.png"]


def test_every_run_gets_a_table_tag_and_its_git_source(project: Path) -> None:
    from pipeline.tracking import source_tags

    uri = f"sqlite:///{project}/mlruns.db"
    with stage_run(uri, "e", "prepare/x", {"stage": "prepare"}) as tracker:
        tracker.log_metrics({"n": 1})
    assert _runs(uri)["prepare/x"].data.tags["table"] == "all"  # a shared input of every table
    tags = source_tags("0123abc-dirty", project)
    assert tags["mlflow.source.git.commit"] == "0123abc" and tags["mlflow.source.name"].startswith("pipeline")
    assert "mlflow.source.git.commit" not in source_tags("unknown")
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert source_tags(res.stdout.strip() + "-dirty")["mlflow.source.git.commit"] == res.stdout.strip()


def test_system_metrics_are_sampled_on_request(project: Path, monkeypatch) -> None:
    from pipeline.tracking import system_metrics_interval

    uri = f"sqlite:///{project}/mlruns.db"
    monkeypatch.setenv("PIPELINE_SYSTEM_METRICS", "0.2")
    with stage_run(uri, "e", "train/sampled", {}, system_metrics=True, lazy=True) as tracker:
        tracker.log_metrics({"loss_g": 1.0})
        time.sleep(1.0)
    with stage_run(uri, "e", "score/unsampled", {}) as tracker:  # only runs that ask for them
        tracker.log_metrics({"fd": 1.0})
        time.sleep(0.5)
    runs = _runs(uri)
    assert any(k.startswith("system/cpu_utilization") for k in runs["train/sampled"].data.metrics)
    assert not any(k.startswith("system/") for k in runs["score/unsampled"].data.metrics)
    monkeypatch.setenv("PIPELINE_SYSTEM_METRICS", "0")
    assert system_metrics_interval() is None
    monkeypatch.delenv("PIPELINE_SYSTEM_METRICS")
    assert system_metrics_interval() == 30.0
    monkeypatch.setenv("PIPELINE_SYSTEM_METRICS", "often")
    with pytest.raises(ValueError, match="PIPELINE_SYSTEM_METRICS='often' is not 0, 1 or a number of seconds"):
        system_metrics_interval()


def test_the_prepared_dataset_is_the_training_runs_input(project: Path) -> None:
    from pipeline.tracking import dataset_entry

    folder = project / "data" / "prepared" / "faces"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"num_images": 12, "resolution": 32, "source": "synthetic"}))
    uri = f"sqlite:///{project}/mlruns.db"
    with stage_run(uri, "e", "train/faces", {}) as tracker:
        tracker.log_dataset(folder, "faces")
        tracker.log_metrics({"loss_g": 1.0})
    [given] = _runs(uri)["train/faces"].inputs.dataset_inputs
    assert given.dataset.name == "faces" and json.loads(given.dataset.profile)["num_images"] == 12
    assert [(t.key, t.value) for t in given.tags] == [("mlflow.data.context", "training")]
    # The committed prepare metrics (meta.json plus a timing) identify the same preparation.
    committed = project / "faces.json"
    committed.write_text(json.dumps({"seconds": 3.5, "source": "synthetic", "resolution": 32, "num_images": 12}))
    assert dataset_entry(folder, "faces", meta_file=committed)["digest"] == given.dataset.digest
    (folder / "meta.json").write_text(json.dumps({"num_images": 13, "resolution": 32, "source": "synthetic"}))
    assert dataset_entry(folder, "faces")["digest"] != given.dataset.digest


def test_scores_are_logged_on_the_rows_training_run_too(project: Path) -> None:
    from pipeline.tracking import headline, log_on_latest_run, score_step

    uri = f"sqlite:///{project}/mlruns.db"
    with stage_run(uri, "e", "train/a", {}) as tracker:
        tracker.log_metrics({"loss_g": 1.0}, step=16000)
    scores = {
        "fd_domain": 43.8,
        "fd_domain_up2x_bicubic": 23.2,
        "is_domain": 8.1,
        "is_domain_std": 0.3,
        "num_images": 9,
    }
    assert headline(scores) == {"fd_domain": 43.8, "fd_domain_up2x_bicubic": 23.2, "is_domain": 8.1}
    run_id = log_on_latest_run(uri, "e", "train/a", headline(scores), score_step(16.0))
    history = _client(uri).get_metric_history(run_id, "fd_domain")
    assert [(m.step, m.value) for m in history] == [(16000, 43.8)]  # images shown, as the training curves
    assert log_on_latest_run(uri, "e", "train/none", headline(scores), 1) is None


REPO = Path(__file__).resolve().parents[1]


def _committed_study(tmp: Path) -> Path:
    """A fresh clone's state: params.yaml and the committed reports/, no store."""
    import shutil

    shutil.copy(REPO / "params.yaml", tmp / "params.yaml")
    shutil.copytree(REPO / "reports", tmp / "reports")
    return tmp


def test_track_from_reports_fills_a_fresh_store_with_the_committed_headline_numbers(tmp_path: Path) -> None:
    import yaml

    root = _committed_study(tmp_path)
    for attempt in range(2):  # a second fill replaces the first: the study is never in the store twice
        res = subprocess.run(
            [sys.executable, "-m", "pipeline", "track", "--from-reports"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
    experiment = yaml.safe_load((root / "params.yaml").read_text())["tracking"]["experiment"]
    uri = f"sqlite:///{root}/mlruns.db"
    runs = _runs(uri, experiment)
    scored = sorted(p.stem for p in (root / "reports" / "metrics" / "score").glob("*.json"))
    assert sorted(runs) == sorted([f"train/{row}" for row in scored] + ["study"])
    client = _client(uri)
    for row in scored:
        committed = json.loads((root / "reports" / "metrics" / "score" / f"{row}.json").read_text())
        run = runs[f"train/{row}"]
        for key in ("fd_domain", "is_domain", "fd_domain_up2x_bicubic", "fd_domain_up2x_nearest"):
            assert run.data.metrics[key] == committed[key], (row, key)
        [fd] = client.get_metric_history(run.info.run_id, "fd_domain")
        assert fd.step == round(committed["kimg"] * 1000)
        assert run.data.params["generator.kind"] and run.data.tags["logged_from"] == "reports"
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["samples.png"]
    kpl = json.loads((root / "reports" / "metrics" / "kpl" / "inr_gan.json").read_text())
    assert runs["train/inr_gan"].data.metrics["kpl_w"] == kpl["kpl_w"]
    tables = {name: runs[f"train/{name}"].data.tags["table"] for name in ("inr_gan", "inr_gan_sg2", "inr_gan_rank1")}
    assert tables == {"inr_gan": "table1,table3", "inr_gan_sg2": "table2", "inr_gan_rank1": "fig8"}
    study = runs["study"]
    assert "tables/table1.md" in {a.path for a in client.list_artifacts(study.info.run_id, "tables")}
    assert [a.path for a in client.list_artifacts(study.info.run_id, "metrics")] == ["metrics/macs.json"]
    exp = client.get_experiment_by_name(experiment)
    note = exp.tags["mlflow.note.content"]
    assert note.startswith("<!-- table1.md -->") and (root / "reports" / "tables" / "table2.md").read_text() in note
    view = json.loads(exp.tags["mlflow.sharedViewState.study"])
    assert view["orderByKey"] == "metrics.`fd_domain`" and "metrics.`is_domain`" in view["selectedColumns"]
