"""`pipeline ui` as a reader sees it: headless Chromium renders MLflow's runs table and compare page of a
micro-profile study (the MLflow app renders client-side, so the DOM is read once it has drawn)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from cdp_browser import Browser, find_chromium, ui_ready_limit_s

SCORES = {  # two rows of the micro profile, as their score stage writes them
    "inr_gan": {"fd_domain": 43.8102623, "is_domain": 8.1577965, "kimg": 0.032},
    "stylegan2": {"fd_domain": 172.9668628, "is_domain": 3.7142688, "kimg": 0.032},
}


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no chromium on PATH (nor $CHROMIUM): the browser check of `pipeline ui` needs it; "
            "`apt-get install -y chromium` (.ci/run does this in CI)"
        )
    return binary


def _micro_study(project: Path) -> None:
    """The micro profile's reports for two rows, logged by `pipeline track --from-reports`."""
    for row, scores in SCORES.items():
        path = project / "reports" / "metrics" / "score" / f"{row}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"row": row, "profile": "micro", "num_images": 24, **scores}))
    tables = project / "reports" / "tables"
    tables.mkdir(parents=True)
    (tables / "table1.md").write_text("# Table 1: progressive ablation\n\n| row | fd_domain |\n|---|---|\n")
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "track", "--from-reports"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_runs_table_and_compare_page_render_the_study(project: Path, chromium: str, tmp_path: Path) -> None:
    _micro_study(project)
    start = time.monotonic()
    ui = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ui", "--port", "0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    browser = None
    try:
        lines = [ui.stdout.readline()]
        while not lines[-1].startswith("ready after") and lines[-1] and len(lines) < 60:
            lines.append(ui.stdout.readline())
        ready_s = time.monotonic() - start
        assert lines[-1].startswith("ready after"), lines
        limit = ui_ready_limit_s()
        assert ready_s < limit, f"pipeline ui answered after {ready_s:.1f} s (limit {limit:.0f} s at this load)"
        # MLflow logs every request to this pipe: keep it drained, or a full pipe would stall the server.
        threading.Thread(target=ui.stdout.read, daemon=True).start()
        link = lines[-1].split(": ", 1)[1].strip()
        assert "/runs?workflowType=machine_learning&viewStateShareKey=study" in link
        base = link.split("#")[0]

        browser = Browser(chromium, 1800, 1000)
        browser.goto(link)
        text = browser.wait_for_text(["train/inr_gan", "train/stylegan2", "fd_domain", "43.81", "172.9"], 40)
        header = text[text.index("Run Name") :]
        assert "fd_domain" in header and "is_domain" in header  # score columns of the runs table
        assert text.index("train/inr_gan") < text.index("train/stylegan2")  # best score first
        browser.screenshot(tmp_path / "runs.png")

        from mlflow.tracking import MlflowClient

        experiment = yaml.safe_load((project / "params.yaml").read_text())["tracking"]["experiment"]
        client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlruns.db")
        exp_id = client.get_experiment_by_name(experiment).experiment_id
        ids = [r.info.run_id for r in client.search_runs([exp_id], "attributes.run_name LIKE 'train/%'")]
        assert len(ids) == 2
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
        browser.goto(f"{base}#/compare-runs?{query}")
        text = browser.wait_for_text(["Comparing 2 Runs", "train/inr_gan", "train/stylegan2", "fd_domain"], 40)
        assert "generator.kind" in text  # spec (params) and outcome (scores) side by side
        browser.screenshot(tmp_path / "compare.png")
        if os.environ.get("BROWSER_SCREENSHOTS"):  # to look at them: BROWSER_SCREENSHOTS=/some/folder
            for name in ("runs.png", "compare.png"):
                Path(os.environ["BROWSER_SCREENSHOTS"], name).write_bytes((tmp_path / name).read_bytes())
    finally:
        if browser is not None:
            browser.close()
        # SIGTERM by PID, as `kill <pid>` sends it: the MLflow server must stop with `pipeline ui`.
        ui.send_signal(signal.SIGTERM)
        code = ui.wait(timeout=30)
    assert code in (0, 128 + signal.SIGTERM)  # MLflow's server ends cleanly on SIGTERM (0)
    port = urllib.parse.urlparse(base).port
    deadline = time.monotonic() + 10
    while _answers(f"{base}health") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _answers(f"{base}health"), f"the MLflow server still answers on port {port} after pipeline ui ended"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger in TIME_WAIT
        s.bind(("127.0.0.1", port))  # free again: nothing of the server is left listening
