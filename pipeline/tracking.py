"""MLflow helpers: one run per stage x row/dataset, tagged and flat-logged; never fatal to a stage.

Tracking costs a stage a few seconds at most when the store is unusable: a short probe decides before
a run is opened (a server that does not answer, answers with an error, or a database that cannot be
written), and MLflow's own HTTP timeouts and retries are capped for what follows. A run that could not
be logged, wholly or in part, is kept as a pending record under `mlruns.pending/`, and `pipeline track
--pending` logs it later.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PENDING_DIR = Path("mlruns.pending")
PROBE_TIMEOUT_S = 3.0
# MLflow's defaults (120 s per request, 7 retries with exponential back-off) let an answering but
# failing server cost minutes per stage; a user's own settings of these variables still win.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


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
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _warn(message: str) -> None:
    # Loud on purpose: a silently missing MLflow run is how comparisons go wrong.
    print(
        f"\n!!! MLflow tracking skipped: {message}\n!!! The stage continues and still writes its DVC outputs.\n",
        file=sys.stderr,
    )


def _probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the tracking store looks usable, else why not; takes at most about `timeout` seconds.

    A server must answer its /health endpoint (any answer below 500 counts: a proxy may hide the
    endpoint); a SQLite database must take a write lock, or its folder be writable when it does not
    exist yet (MLflow would otherwise retry creating it for minutes)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        # MLflow's own switch for self-signed certificates applies to the probe as well.
        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
        try:
            with urllib.request.urlopen(
                uri.rstrip("/") + "/health",
                timeout=timeout,
                context=ssl._create_unverified_context() if insecure else None,
            ):
                return None
        except urllib.error.HTTPError as err:
            return None if err.code < 500 else f"tracking server {uri} answers HTTP {err.code} ({err.reason})"
        except (OSError, ValueError) as err:  # refused, unresolvable, or no answer within the timeout
            return f"tracking server {uri} does not answer within {timeout:g} s: {getattr(err, 'reason', err)}"
    if parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.exists():
            if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
                return f"cannot create the tracking database {db}: its folder {db.parent} does not exist or is not writable"
            return None
        try:
            con = sqlite3.connect(db, timeout=timeout)
            try:
                con.execute("BEGIN IMMEDIATE")  # the write lock MLflow will need
                con.rollback()
            finally:
                con.close()
        except sqlite3.Error as err:
            return f"cannot write the tracking database {db}: {err}"
    return None


def artifact_root_for(uri: str) -> str | None:
    """Artifacts of a local sqlite store live in 'mlruns/' beside the database file."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlruns").as_uri()


def _param_batches(flat: Mapping[str, str]) -> list[list[Any]]:
    from mlflow.entities import Param

    params = [Param(k, v) for k, v in flat.items()]
    return [params[i : i + 100] for i in range(0, len(params), 100)]  # MLflow takes at most 100 per batch


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Tracker:
    """A started MLflow run, or a no-op after the first failure (which is reported once).

    Either way it keeps a record of what it was asked to log (params, tags, each metric's last value,
    artifact paths), so a run that was skipped can be logged later from `record`."""

    def __init__(self, client: Any = None, run_id: str | None = None, record: dict[str, Any] | None = None):
        self._client = client
        self.run_id = run_id
        self.record: dict[str, Any] = (
            record if record is not None else {"tags": {}, "params": {}, "metrics": {}, "artifacts": []}
        )
        self.skipped: str | None = None if client is not None else "no run was started"

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
            self.skipped = f"{what} failed: {err}"

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        self.record["params"].update(flat)
        if self._client is None:
            return
        for batch in _param_batches(flat):
            self._call("log_params", lambda batch: self._client.log_batch(self.run_id, params=batch), batch)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        flat = {k: float(v) for k, v in flatten(metrics).items() if _numeric(v)}
        # The last value only: a metric's history (training losses) is in the stage's DVC plots.
        self.record["metrics"].update({k: [v, step or 0, now] for k, v in flat.items()})
        if self._client is None:
            return
        from mlflow.entities import Metric

        batch = [Metric(k, v, now, step or 0) for k, v in flat.items()]
        self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        entry = [os.path.abspath(path), artifact_path]
        if entry not in self.record["artifacts"]:
            self.record["artifacts"].append(entry)
        self._call("log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items()})
        for k, v in tags.items():
            self._call("set_tag", lambda k=k, v=v: self._client.set_tag(self.run_id, k, str(v)))

    def finish(self, status: str) -> None:
        self.record["status"] = status
        self.record["end_time"] = int(time.time() * 1000)
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status))


def _start_client(
    uri: str, experiment: str, run_name: str, tags: Mapping[str, str], start_time: int | None = None
) -> tuple[Any, str]:
    """(client, run id) of a new run; raises whatever MLflow raises."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root_for(uri))
    )
    run = client.create_run(exp_id, start_time=start_time, run_name=run_name, tags=dict(tags))
    return client, run.info.run_id


def _keep_pending(tracker: Tracker, pending_dir: Path) -> Path | None:
    from pipeline.io import write_json

    record = tracker.record
    name = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(record['start_time'] / 1000))}-{record['run_name'].replace('/', '_')}-{os.getpid()}.json"
    try:
        write_json(pending_dir / name, {**record, "skipped_because": tracker.skipped, "partial_run_id": tracker.run_id})
    except OSError as err:
        _warn(f"could not keep the run for later in {pending_dir}: {err}")
        return None
    print(
        f"!!! MLflow run '{record['run_name']}' kept in {pending_dir / name}; `pipeline track --pending` logs it later.",
        file=sys.stderr,
    )
    return pending_dir / name


@contextmanager
def stage_run(
    uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    pending_dir: Path = PENDING_DIR,
) -> Iterator[Tracker]:
    """Open an MLflow run tagged with stage, row/dataset, profile and git commit; close it FINISHED or FAILED.

    Any tracking failure (unreachable or failing server, unwritable database, missing package) is
    reported loudly within a few seconds and the run becomes a no-op: the stage's DVC outputs are the
    source of truth, MLflow a view of them. What the run should have held is then written to
    `pending_dir` for `pipeline track --pending`."""
    all_tags = {"git_commit": git_commit(), **{k: str(v) for k, v in tags.items()}}
    record = {
        "uri": uri,
        "experiment": experiment,
        "run_name": run_name,
        "tags": dict(all_tags),
        "params": {},
        "metrics": {},
        "artifacts": [],
        "start_time": int(time.time() * 1000),
    }
    tracker = Tracker(record=record)
    problem = _probe(uri)
    if problem:
        _warn(problem)
        tracker.skipped = problem
    else:
        try:
            client, run_id = _start_client(uri, experiment, run_name, all_tags)
            tracker = Tracker(client, run_id, record)
        except Exception as err:  # noqa: BLE001
            _warn(f"could not start a run at {uri}: {err}")
            tracker.skipped = f"could not start a run: {err}"
    if params:
        tracker.log_params(params)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        tracker.finish(status)
        if tracker.skipped:
            _keep_pending(tracker, pending_dir)


def log_pending(uri: str, pending_dir: Path = PENDING_DIR) -> tuple[list[str], list[str]]:
    """Log every pending record of `pending_dir` as a run at `uri` and delete it; return (logged run
    names, problems). A record that fails stays for the next try; artifacts that no longer exist are
    named in the problems and the run is logged without them."""
    logged: list[str] = []
    problems: list[str] = []
    files = sorted(pending_dir.glob("*.json")) if pending_dir.is_dir() else []
    if not files:
        return logged, problems
    problem = _probe(uri)
    if problem:
        return logged, [f"{problem}; {len(files)} pending run(s) stay in {pending_dir}"]
    for file in files:
        try:
            record = json.loads(file.read_text())
            name = record["run_name"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"{file} is not a pending run record ({err}); delete it")
            continue
        try:
            tags = {**record["tags"], "logged_from": f"pending record {file.name}"}
            client, run_id = _start_client(uri, record["experiment"], name, tags, record.get("start_time"))
            for batch in _param_batches(record["params"]):
                client.log_batch(run_id, params=batch)
            from mlflow.entities import Metric

            metrics = [Metric(k, float(v), int(ts), int(step)) for k, (v, step, ts) in record["metrics"].items()]
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i : i + 1000])
            for path, artifact_path in record["artifacts"]:
                if Path(path).exists():
                    client.log_artifact(run_id, path, artifact_path)
                else:
                    problems.append(f"{name}: artifact {path} no longer exists; logged without it")
            client.set_terminated(run_id, record.get("status", "FINISHED"), record.get("end_time"))
        except Exception as err:  # noqa: BLE001 - one bad record must not stop the others
            problems.append(f"{name} ({file}) could not be logged: {err}; it stays pending")
            continue
        file.unlink()
        logged.append(name)
    return logged, problems
