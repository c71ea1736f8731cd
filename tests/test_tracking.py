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
    with stage_run("http://127.0.0.1:9", "study", "prepare/faces", {"stage": "prepare"}, {"a": {"b": 1}}) as tracker:
        tracker.log_metrics({"loss": 2.0}, step=1)
        tracker.log_metrics({"loss": 1.5}, step=2)
        tracker.log_artifact(artifact, "figures")
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
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "track", "--pending"], cwd=project, capture_output=True, text=True
    )
    assert res.returncode == 0 and "no pending runs" in res.stdout
