"""Where each stage writes; dvc.yaml declares the same paths (a test keeps the two in step)."""

from __future__ import annotations

from pathlib import Path

from pipeline.train.checkpoint import NETWORK_SNAPSHOT

DATA = Path("data")
REPORTS = Path("reports")


def details(metrics: Path) -> Path:
    """The plain JSON beside a DVC metrics file: reports/metrics/<x>.json -> reports/details/<x>.json. The
    metrics file holds a stage's headline numbers (what `dvc exp show` and `dvc metrics diff` compare), the
    details file the rest of its record (timings, hashes, curves, options); pipeline.headline splits them."""
    parts = metrics.parts
    for i in range(len(parts) - 1):
        if parts[i : i + 2] == ("reports", "metrics"):
            return Path(*parts[: i + 1], "details", *parts[i + 2 :])
    raise ValueError(f"'{metrics}' is not under reports/metrics/, so it has no details file")


def prepared_dir(dataset: str) -> Path:
    return DATA / "prepared" / dataset


def prepare_preview(dataset: str) -> Path:
    return REPORTS / "figures" / "prepare" / f"{dataset}.png"


def prepare_metrics(dataset: str) -> Path:
    return REPORTS / "metrics" / "prepare" / f"{dataset}.json"


MACS_METRICS = REPORTS / "metrics" / "macs.json"
TABLE1_COST_MD = REPORTS / "tables" / "table1_cost.md"
TABLE1_COST_CSV = REPORTS / "tables" / "table1_cost.csv"
FIG9_CSV = REPORTS / "plots" / "fig9_gmacs.csv"
FIG9_PNG = REPORTS / "figures" / "fig9_gmacs.png"
FIG8_CURVE_CSV = REPORTS / "plots" / "fig8_rank_curve.csv"
FIG8_CURVE_PNG = REPORTS / "figures" / "fig8_rank_curve.png"

RUNS = Path("runs")


def run_dir(row: str) -> Path:
    return RUNS / row


def snapshot_file(row: str) -> Path:
    """The final snapshot of a trained row (its EMA generator is what score, properties, project and kpl read)."""
    return run_dir(row) / NETWORK_SNAPSHOT


def train_plots(row: str) -> Path:
    return REPORTS / "plots" / "train" / f"{row}.csv"


def score_metrics(row: str) -> Path:
    return REPORTS / "metrics" / "score" / f"{row}.json"


def kpl_metrics(model: str) -> Path:
    return REPORTS / "metrics" / "kpl" / f"{model}.json"


# The kpl stage's DVC metrics: this run's models' KPL values. The per-model files above are written too but
# are no DVC output: DVC empties a stage's outputs before it runs, which lost the seed repeats' files when
# the plain profile re-ran kpl for its two models.
KPL_SUMMARY = REPORTS / "metrics" / "table3.json"


def table_md(name: str) -> Path:
    return REPORTS / "tables" / f"{name}.md"


def table_csv(name: str) -> Path:
    return REPORTS / "tables" / f"{name}.csv"


def samples_png(row: str) -> Path:
    return REPORTS / "figures" / "samples" / f"{row}.png"


def table_samples_png(table: str) -> Path:
    """One table's rows' sample grids side by side, labelled (written by the tables stage)."""
    return REPORTS / "figures" / "tables" / f"{table}_samples.png"


def properties_dir(row: str) -> Path:
    return REPORTS / "figures" / "properties" / row


def properties_metrics(row: str) -> Path:
    return REPORTS / "metrics" / "properties" / f"{row}.json"


REFERENCE_DIR = DATA / "reference"


def reference_stats_file(dataset: str) -> Path:
    return REFERENCE_DIR / dataset / "stats.npz"


def domain_net_file(dataset: str) -> Path:
    # Only written for domain features; one folder per dataset keeps DVC's outputs the same either way.
    return REFERENCE_DIR / dataset / "domain.pt"


def projections_file(model: str) -> Path:
    return DATA / "projections" / f"{model}.npz"


def regressor_file(dataset: str) -> Path:
    return DATA / "keypoints" / dataset / "regressor.pt"
