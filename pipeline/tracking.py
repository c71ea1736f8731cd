"""MLflow helpers: one run per stage x row/dataset, tagged and flat-logged; never fatal to a stage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def resolve_tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI wins over params.yaml, as MLflow users expect.

    A relative SQLite path is made absolute against the current folder: MLflow caches one store per
    URI string within a process, so 'sqlite:///mlruns.db' would otherwise keep writing to the database
    of whichever folder first used it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {'a.b.c': value}; lists and other leaves are kept whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def git_commit(cwd: str | Path = ".") -> str:
    """The checked-out commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _warn(message: str) -> None:
    # Loud on purpose: a silently missing MLflow run is how comparisons go wrong.
    print(f"\n!!! MLflow tracking skipped: {message}\n!!! The stage continues and still writes its DVC outputs.\n", file=sys.stderr)


def _reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None if a remote tracking server answers on its port, else the reason it does not."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as err:
        return f"cannot reach tracking server {uri}: {err}"


def artifact_root_for(uri: str) -> str | None:
    """Artifacts of a local sqlite store live in 'mlruns/' beside the database file."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlruns").as_uri()


class Tracker:
    """A started MLflow run, or a no-op after the first failure (which is reported once)."""

    def __init__(self, client: Any = None, run_id: str | None = None):
        self._client = client
        self.run_id = run_id

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self._client is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never fail the stage
            _warn(f"{what} failed: {err}")
            self._client = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):  # MLflow accepts at most 100 params per batch
            self._call("log_params", lambda batch: self._client.log_batch(self.run_id, params=batch), flat[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self._call("set_tag", lambda k=k, v=v: self._client.set_tag(self.run_id, k, str(v)))

    def finish(self, status: str) -> None:
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status))


@contextmanager
def stage_run(uri: str, experiment: str, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
    """Open an MLflow run tagged with stage, row/dataset, profile and git commit; close it FINISHED or FAILED.

    Any tracking failure (unreachable server, locked database, missing package) is reported loudly and
    the run becomes a no-op: the stage's DVC outputs are the source of truth, MLflow a view of them."""
    tracker = Tracker()
    problem = _reachable(uri)
    if problem:
        _warn(problem)
    else:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root_for(uri))
            all_tags = {"git_commit": git_commit(), **{k: str(v) for k, v in tags.items()}}
            run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
            tracker = Tracker(client, run.info.run_id)
        except Exception as err:  # noqa: BLE001
            _warn(f"could not start a run at {uri}: {err}")
    if params:
        tracker.log_params(params)
    try:
        yield tracker
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
