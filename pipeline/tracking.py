"""MLflow helpers: one run per stage x row/dataset, tagged and flat-logged; never fatal to a stage.

Tracking costs a stage a few seconds at most when the store is unusable: a short probe decides before
a run is opened (a server that does not answer, answers with an error, or a database that cannot be
written), and MLflow's own HTTP timeouts and retries are capped for what follows. A run that could not
be logged, wholly or in part, is kept as a pending record under `mlruns.pending/`, and `pipeline track
--pending` logs it later.

The runs form a study view: every run carries a `table` tag (the paper tables its row appears in), a
row's headline scores are logged on its training run too (spec and outcome in one compare view), steps
are images shown everywhere, and `pipeline track --from-reports` fills a fresh store from the committed
reports/ (`log_from_reports`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
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


def resolve_tracking_uri(configured: str, base: str | Path | None = None) -> str:
    """MLFLOW_TRACKING_URI wins over params.yaml, as MLflow users expect.

    A relative SQLite path is made absolute against `base` (default: the current folder): MLflow caches
    one store per URI string within a process, so 'sqlite:///mlruns.db' would otherwise keep writing to
    the database of whichever folder first used it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path(base or ".") / uri.removeprefix(prefix)).resolve())
    return uri


def project_root(start: str | Path = ".") -> Path:
    """The nearest folder at or above `start` that holds params.yaml and dvc.yaml (the repository root,
    where the study's store lives); `start` itself when there is none."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    return here


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


def source_tags(commit: str, cwd: str | Path = ".") -> dict[str, str]:
    """MLflow's own source tags, so its UI shows (and links) the commit a run's code came from."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": " ".join(["pipeline", *sys.argv[1:]])[:500]}
    sha = commit.removesuffix("-dirty")
    if sha != "unknown":
        tags["mlflow.source.git.commit"] = sha
        try:
            remote = subprocess.run(
                ["git", "remote", "get-url", "origin"], cwd=cwd, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            remote = ""
        if remote:
            tags["mlflow.source.git.repoURL"] = remote
    return tags


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


SYSTEM_METRICS_ENV = "PIPELINE_SYSTEM_METRICS"
SYSTEM_METRICS_INTERVAL_S = 30.0  # a sample per 30 s: a trend over a run, no load on 2 cores


def system_metrics_interval() -> float | None:
    """Seconds between MLflow system-metrics samples of a training run, None when switched off.

    PIPELINE_SYSTEM_METRICS: unset or '1' samples every 30 s, '0' switches sampling off (the tests do),
    a number sets the interval."""
    value = os.environ.get(SYSTEM_METRICS_ENV, "1").strip().lower()
    if value in ("0", "false", "off", "no", ""):
        return None
    if value in ("1", "true", "on", "yes"):
        return SYSTEM_METRICS_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"{SYSTEM_METRICS_ENV}={value!r} is not 0, 1 or a number of seconds; set it to 0 (off), 1 (every "
            f"{SYSTEM_METRICS_INTERVAL_S:g} s) or an interval such as 60"
        ) from None
    return seconds if seconds > 0 else None


class Tracker:
    """A started MLflow run, or a no-op after the first failure (which is reported once).

    Either way it keeps a record of what it was asked to log (params, tags, each metric's last value,
    artifact paths), so a run that was skipped can be logged later from `record`.

    A lazy tracker (`opener` given) creates its run on the first logged metric and then logs what it
    recorded before; one that never logs a metric leaves no run at all (a finished row's train stage)."""

    def __init__(
        self,
        client: Any = None,
        run_id: str | None = None,
        record: dict[str, Any] | None = None,
        opener: Any = None,
        system_metrics_s: float | None = None,
    ):
        self._client = client
        self.run_id = run_id
        self.record: dict[str, Any] = (
            record if record is not None else {"tags": {}, "params": {}, "metrics": {}, "artifacts": [], "inputs": []}
        )
        self.record.setdefault("inputs", [])
        self._opener = opener
        self._monitor: Any = None
        self._system_metrics_s = system_metrics_s
        self.skipped: str | None = None if client is not None or opener is not None else "no run was started"
        if client is not None:
            self._start_monitor()

    @property
    def enabled(self) -> bool:
        return self._client is not None or self._opener is not None

    @property
    def opened(self) -> bool:
        """Whether a run exists (or was meant to exist and failed): lazy trackers start without one."""
        return self._opener is None

    def _open(self) -> None:
        if self._opener is None:
            return
        opener, self._opener = self._opener, None
        try:
            self._client, self.run_id = opener()
        except Exception as err:  # noqa: BLE001 - tracking must never fail the stage
            _warn(f"could not start a run: {err}")
            self.skipped = f"could not start a run: {err}"
            return
        self._start_monitor()
        for batch in _param_batches(self.record["params"]):
            self._call("log_params", lambda batch=batch: self._client.log_batch(self.run_id, params=batch))
        # The tags went with create_run (the opener reads them now); the rest is logged here.
        for entry in self.record["inputs"]:
            self._call("log_input", lambda entry=entry: _log_dataset(self._client, self.run_id, entry))
        for path, artifact_path, *name in self.record["artifacts"]:
            self._call("log_artifact", lambda: _log_file(self._client, self.run_id, path, artifact_path, *name))

    def _start_monitor(self) -> None:
        if self._system_metrics_s is None or self._client is None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=self._system_metrics_s, tracking_uri=self._client.tracking_uri
            )
            self._monitor.start()
        except Exception as err:  # noqa: BLE001 - e.g. psutil missing: the run goes on without them
            _warn(f"system metrics are not sampled: {err}")
            self._monitor = None

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
        self._open()
        if self._client is None:
            return
        from mlflow.entities import Metric

        batch = [Metric(k, v, now, step or 0) for k, v in flat.items()]
        self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, name: str | None = None) -> None:
        """Log the file `path` under `artifact_path`, as `name` when given (the same name in every run
        lets MLflow's compare view line the runs' files up)."""
        entry = [os.path.abspath(path), artifact_path] + ([name] if name else [])
        if entry not in self.record["artifacts"]:
            self.record["artifacts"].append(entry)
        self._call("log_artifact", lambda: _log_file(self._client, self.run_id, str(path), artifact_path, name))

    def log_dataset(
        self, folder: str | Path, name: str, context: str = "training", meta_file: str | Path | None = None
    ) -> None:
        """The prepared dataset `folder` as the run's input: named, with a digest of its meta.json (what
        it was prepared from and how, and its counts), without reading any image."""
        entry = dataset_entry(folder, name, context, meta_file)
        self.record["inputs"].append(entry)
        self._call("log_input", lambda: _log_dataset(self._client, self.run_id, entry))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items()})
        for k, v in tags.items():
            self._call("set_tag", lambda k=k, v=v: self._client.set_tag(self.run_id, k, str(v)))

    def finish(self, status: str) -> None:
        self.record["status"] = status
        self.record["end_time"] = int(time.time() * 1000)
        if self._opener is not None:  # lazy and nothing was logged: no run, nothing to keep
            self._opener = None
            self.skipped = None
            return
        if self._monitor is not None:
            with _quiet():
                self._monitor.finish()
            self._monitor = None
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status))


@contextmanager
def _quiet() -> Iterator[None]:
    try:
        yield
    except Exception as err:  # noqa: BLE001 - the system metrics' last flush must not fail the stage
        _warn(f"system metrics: {err}")


def _log_file(client: Any, run_id: str, path: str, artifact_path: str | None, name: str | None = None) -> None:
    if not name or name == Path(path).name:
        client.log_artifact(run_id, path, artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / name)
        client.log_artifact(run_id, str(Path(tmp) / name), artifact_path)


def dataset_entry(
    folder: str | Path, name: str, context: str = "training", meta_file: str | Path | None = None
) -> dict[str, Any]:
    """What MLflow's dataset input of a prepared folder holds: name, source, a digest of its metadata
    (meta.json, or `meta_file`: the prepare stage's committed metrics of it) and its counts.

    The digest covers the metadata without timings, as canonical JSON, so the folder's meta.json and
    the committed reports/metrics/prepare/<dataset>.json of the same preparation give the same one."""
    folder = Path(folder).resolve()
    meta = _read_json(Path(meta_file) if meta_file else folder / "meta.json") or {}
    meta = {k: v for k, v in meta.items() if k != "seconds"}
    summary = {k: v for k, v in meta.items() if _numeric(v) or isinstance(v, str)}
    canonical = json.dumps(meta, sort_keys=True).encode()
    return {
        "name": name,
        "source": folder.as_uri(),
        "digest": hashlib.sha256(canonical).hexdigest()[:16] if meta else "no-metadata",
        "profile": json.dumps(summary, sort_keys=True)[:5000],
        "context": context,
    }


def _log_dataset(client: Any, run_id: str, entry: Mapping[str, str]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=entry["name"],
        digest=entry["digest"],
        source_type="local",
        source=json.dumps({"uri": entry["source"]}),
        profile=entry["profile"],
    )
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", entry["context"])])])


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
    lazy: bool = False,
    system_metrics: bool = False,
) -> Iterator[Tracker]:
    """Open an MLflow run tagged with stage, row/dataset, profile and git commit; close it FINISHED or FAILED.

    Any tracking failure (unreachable or failing server, unwritable database, missing package) is
    reported loudly within a few seconds and the run becomes a no-op: the stage's DVC outputs are the
    source of truth, MLflow a view of them. What the run should have held is then written to
    `pending_dir` for `pipeline track --pending`.

    lazy: the run is created on the first logged metric, so a stage that finds its work done leaves no
    empty run. system_metrics: MLflow samples CPU, memory and disk into the run (see
    `system_metrics_interval`)."""
    commit = git_commit()
    # table: the paper tables a run feeds; stages of shared inputs (datasets, references) feed them all.
    all_tags = {"git_commit": commit, **source_tags(commit), "table": "all", **{k: str(v) for k, v in tags.items()}}
    record = {
        "uri": uri,
        "experiment": experiment,
        "run_name": run_name,
        "tags": dict(all_tags),
        "params": {},
        "metrics": {},
        "artifacts": [],
        "inputs": [],
        "start_time": int(time.time() * 1000),
    }
    interval = system_metrics_interval() if system_metrics else None
    tracker = Tracker(record=record)
    problem = _probe(uri)
    if problem:
        _warn(problem)
        tracker.skipped = problem
    elif lazy:
        tracker = Tracker(
            record=record,
            opener=lambda: _start_client(uri, experiment, run_name, record["tags"]),
            system_metrics_s=interval,
        )
    else:
        try:
            client, run_id = _start_client(uri, experiment, run_name, all_tags)
            tracker = Tracker(client, run_id, record, system_metrics_s=interval)
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
        # A lazy run that logged no metric would not have existed: nothing to keep for later either.
        if tracker.skipped and not (lazy and not record["metrics"]):
            _keep_pending(tracker, pending_dir)


def log_on_latest_run(uri: str, experiment: str, run_name: str, metrics: Mapping[str, float], step: int) -> str | None:
    """Log `metrics` at `step` on the newest run called `run_name` too (a row's scores on its training
    run, so one compare view shows spec and outcome); return its id, None when there is none or the
    store fails (reported, never fatal: the scores are in their own run and the DVC metrics)."""
    if _probe(uri):
        return None
    try:
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        name = run_name.replace("'", "\\'")
        runs = client.search_runs(
            [exp.experiment_id],
            f"attributes.run_name = '{name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return None
        now = int(time.time() * 1000)
        flat = [Metric(k, float(v), now, step) for k, v in metrics.items() if _numeric(v)]
        client.log_batch(runs[0].info.run_id, metrics=flat)
        return runs[0].info.run_id
    except Exception as err:  # noqa: BLE001
        _warn(f"could not log {sorted(metrics)} on run {run_name!r}: {err}")
        return None


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
            for path, artifact_path, *as_name in record["artifacts"]:
                if Path(path).exists():
                    _log_file(client, run_id, path, artifact_path, *as_name)
                else:
                    problems.append(f"{name}: artifact {path} no longer exists; logged without it")
            for entry in record.get("inputs", []):
                _log_dataset(client, run_id, entry)
            client.set_terminated(run_id, record.get("status", "FINISHED"), record.get("end_time"))
        except Exception as err:  # noqa: BLE001 - one bad record must not stop the others
            problems.append(f"{name} ({file}) could not be logged: {err}; it stays pending")
            continue
        file.unlink()
        logged.append(name)
    return logged, problems


# The study view. Report paths as stages/paths.py names them (the library does not import stages).
REPORTS = Path("reports")
STUDY_RUN = "study"
HEADLINE_PREFIXES = ("fd_", "fid", "is_", "kid", "kpl_")


def score_step(kimg: float) -> int:
    """MLflow step of a result at `kimg`: images shown, the unit of the training curves."""
    return int(round(kimg * 1000))


def table_tag(params: Any, row: str) -> str:
    """The paper tables `row` appears in, comma-separated ('table1,table3'): its own table, and Table 3
    when a projection model is trained as this row (filter with tags.table LIKE '%table1%')."""
    tables = [params.row(row).table]
    if params.project is not None and row in params.project.models.values():
        tables.append("table3")
    return ",".join(tables)


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A score or KPL metrics file's headline numbers (FD/FID, IS, UpsampledFID per mode, KPL): what a
    row is compared by; spreads (`_std`), counts, timings and hashes are left out."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if _numeric(v) and k.startswith(HEADLINE_PREFIXES) and not k.endswith("_std")
    }


STUDY_VIEW_KEY = "study"  # pipeline ui opens the runs table with ?viewStateShareKey=study
TABLE_ORDER = ("table1", "table1_cost", "table2", "table3_kpl", "table4", "fig8")


def _table_texts(root: Path) -> list[Path]:
    """The compiled tables in the paper's order (the description's first heading is Table 1)."""
    found = {p.stem: p for p in (root / REPORTS / "tables").glob("*.md")}
    return [found[n] for n in TABLE_ORDER if n in found] + sorted(p for n, p in found.items() if n not in TABLE_ORDER)


def study_view(metric_keys: list[str]) -> dict[str, Any]:
    """MLflow's shared view state of the study's runs table: one row per training run (spec and, with
    the scores logged on it, outcome), best score first, with the table tag, the generator kind and the
    headline scores as columns. MLflow 3 shows no metric columns until a user picks them; a view stored
    as the experiment tag mlflow.sharedViewState.<key> is what a link can open with them shown."""
    scores = sorted(metric_keys, key=lambda k: (not k.startswith(("fd_", "fid")), "_up2x_" in k, k))
    return {
        "searchFilter": "attributes.run_name LIKE 'train/%'",
        "orderByKey": f"metrics.`{scores[0]}`" if scores else "attributes.start_time",
        "orderByAsc": bool(scores),
        "selectedColumns": [
            "tags.`table`",
            "params.`generator.kind`",
            *[f"metrics.`{k}`" for k in scores],
            "metrics.`kimg`",
            "attributes.`Dataset`",
        ],
    }


def _study_metric_keys(params: Any, root: Path) -> list[str]:
    keys: set[str] = set()
    for row in params.rows:
        keys |= set(headline(_read_json(root / REPORTS / "metrics" / "score" / f"{row}.json") or {}))
    return sorted(keys)


def log_study(
    params: Any, root: Path = Path("."), uri: str | None = None, tags: Mapping[str, str] | None = None
) -> bool:
    """One summary run per study (`study`, tag table=all) with the compiled tables (reports/tables/*.md
    and *.csv, reports/README.md and the MAC counts) as artifacts, the tables as the experiment's description and the
    study's runs-table view (`study_view`); True when it was logged."""
    uri = uri or resolve_tracking_uri(params.tracking.uri)
    tables = _table_texts(root)
    if not tables:
        return False
    note = "\n\n".join(f"<!-- {p.name} -->\n{p.read_text()}" for p in tables)
    with stage_run(
        uri,
        params.tracking.experiment,
        STUDY_RUN,
        {"stage": "tables", "table": "all", "profile": params.profile, **(tags or {})},
    ) as tracker:
        for path in [*tables, *sorted((root / REPORTS / "tables").glob("*.csv"))]:
            tracker.log_artifact(path, "tables")
        if (root / REPORTS / "README.md").is_file():
            tracker.log_artifact(root / REPORTS / "README.md")
        if (root / REPORTS / "metrics" / "macs.json").is_file():  # Table 1's cost columns, per row and size
            tracker.log_artifact(root / REPORTS / "metrics" / "macs.json", "metrics")
        if not tracker.enabled:
            return False
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(params.tracking.experiment)
            client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", note[:60000])
            view = study_view(_study_metric_keys(params, root))
            client.set_experiment_tag(exp.experiment_id, f"mlflow.sharedViewState.{STUDY_VIEW_KEY}", json.dumps(view))
        except Exception as err:  # noqa: BLE001
            _warn(f"could not set the experiment description: {err}")
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_from_reports(params: Any, root: Path = Path("."), uri: str | None = None) -> tuple[list[str], list[str]]:
    """Fill the store from the committed reports/: per row with a score file, a `train/<row>` run (the
    row's spec from params, its headline scores at the scored step, its table tag, its sample grid as
    samples.png, the dataset input) and the study run with the tables. Return (logged run names, rows
    without a score file). Runs are tagged logged_from=reports, and a second call replaces them, so the
    store never holds the committed study twice."""
    from pipeline.train.options import row_spec

    uri = uri or resolve_tracking_uri(params.tracking.uri)
    problem = _probe(uri)
    if problem:
        raise RuntimeError(f"cannot fill the tracking store from reports/: {problem}")
    _delete_from_reports_runs(uri, params.tracking.experiment)
    commit = git_commit(root)
    logged, missing = [], []
    for row in params.rows:
        scores = _read_json(root / REPORTS / "metrics" / "score" / f"{row}.json")
        if scores is None:
            missing.append(row)
            continue
        metrics = headline(scores)
        kpl = _read_json(root / REPORTS / "metrics" / "kpl" / f"{row}.json")
        if kpl is not None:
            metrics.update(headline(kpl))
        kimg = float(scores.get("kimg", 0.0))
        tags = {
            "stage": "train",
            "row": row,
            "dataset": params.row(row).dataset,
            "profile": params.profile,
            "table": table_tag(params, row),
            "logged_from": "reports",
            "git_commit": commit,
        }
        with stage_run(uri, params.tracking.experiment, f"train/{row}", tags, row_spec(params, row)) as tracker:
            tracker.log_metrics({**metrics, "kimg": kimg}, step=score_step(kimg))
            grid = root / REPORTS / "figures" / "samples" / f"{row}.png"
            if grid.is_file():
                tracker.log_artifact(grid, name="samples.png")
            dataset = params.row(row).dataset
            tracker.log_dataset(
                root / "data" / "prepared" / dataset,
                dataset,
                meta_file=root / REPORTS / "metrics" / "prepare" / f"{dataset}.json",
            )
        logged.append(f"train/{row}")
    if log_study(params, root, uri, {"logged_from": "reports"}):
        logged.append(STUDY_RUN)
    return logged, missing


def _delete_from_reports_runs(uri: str, experiment: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    for run in client.search_runs([exp.experiment_id], "tags.logged_from = 'reports'", max_results=10000):
        client.delete_run(run.info.run_id)
