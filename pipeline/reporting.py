"""Report writers: Markdown and CSV tables (atomic), relative differences, and simple line plots."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import atomic_file, write_text


def rel_diff(ours: float | None, paper: float | None) -> float | None:
    """(ours - paper) / paper, None when either is missing."""
    if ours is None or paper is None or paper == 0:
        return None
    return ours / paper - 1.0


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None where there are too few values."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def pool_repeats(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """One entry for the results of a row and its seed repeats: the first result's fields, each of
    `keys` replaced by its mean over the results, `<key>_std` its sample standard deviation (None for
    one result) and `seeds` how many results there are."""
    entry: dict[str, Any] = {**results[0], "seeds": len(results)}
    for key in keys:
        entry[key], entry[f"{key}_std"] = mean_std([r[key] for r in results if r.get(key) is not None])
    return entry


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: '-' for missing, signed percent for keys ending in '%', fixed digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, records: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None) -> None:
    """Write records (dicts with the same keys) as CSV, atomically; `fieldnames` gives the header
    (and its order) even when there are no records."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fieldnames) if fieldnames is not None else list(records[0]) if records else []
    )
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: float | None = None) -> None:
    """Write `fig` as a PNG atomically (its folder created if needed) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", **({} if dpi is None else {"dpi": dpi}))
    plt.close(fig)


def line_plot(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    legend_title: str | None = None,
) -> None:
    """One PNG line plot of named (x, y) series, written atomically (matplotlib, no display needed).
    `styles`: matplotlib line options per series name (colour, linestyle); `legend_title` explains them."""
    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=120)
    for name, (x, y) in series.items():
        ax.plot(x, y, **{"marker": "o", **(styles or {}).get(name, {})}, label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(title=legend_title, fontsize="small", title_fontsize="small")  # an empty plot has nothing to label
    fig.tight_layout()
    save_figure(fig, path)
