"""`pipeline macs`: the JSON records, the Table 1 cost report and Fig. 9, from the params' paper-size specs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.headline import read_split
from stages import paths


def test_macs_json_and_reports(project: Path) -> None:
    result = CliRunner().invoke(app, ["macs", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout[result.stdout.index("[") :])
    assert {"row", "resolution", "params", "gmacs_paper", "gmacs_true"} <= set(records[0])
    by_key = {(r["row"], r["resolution"]): r for r in records}
    assert len(by_key) == 18  # 6 rows x 3 resolutions
    inr = by_key[("inr_gan", 256)]
    assert abs(inr["gmacs_paper"] / 38.76 - 1) < 0.03 and abs(inr["params"] / 107.03e6 - 1) < 0.08

    table = paths.TABLE1_COST_MD.read_text()
    assert "| inr_gan | 256 | 107.49M | 107.03M |" in table and "docs/table1_cost_notes.md" in table
    metrics = read_split(paths.MACS_METRICS, paths.details(paths.MACS_METRICS))
    assert set(json.loads(paths.MACS_METRICS.read_text())["stylegan2"]) == {"256"}  # the rest is details
    assert metrics["stylegan2"]["256"]["params"] == by_key[("stylegan2", 256)]["params"]
    curve = paths.FIG9_CSV.read_text().splitlines()
    assert curve[0] == "row,trained_resolution,resolution,gmacs_paper,gmacs_true" and len(curve) == 11
    # INR-GAN gets cheaper at lower resolutions; StyleGAN2 must render at full size.
    inr_costs = [float(line.split(",")[3]) for line in curve[1:] if line.startswith("inr_gan")]
    sg2_costs = {line.split(",")[3] for line in curve[1:] if line.startswith("stylegan2")}
    assert inr_costs == sorted(inr_costs) and inr_costs[0] < inr_costs[-1] / 50 and len(sg2_costs) == 1
    assert paths.FIG9_PNG.stat().st_size > 0
