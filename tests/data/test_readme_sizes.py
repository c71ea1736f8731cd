"""The README's prepared-size table and `pipeline prepare --dry-run` use one unit, GiB (2^30 bytes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[2]


def _size_table() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Paper-profile datasets") :]
    section = section[: section.index("\n### ", 1)]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    assert rows and rows[0][:4] == ["dataset", "images", "npy", "zip"], rows[:1]
    return rows[1:]


def test_readme_npy_sizes_are_the_exact_array_sizes_in_gib() -> None:
    for name, images, npy, zip_, *_ in _size_table():
        side = int(re.match(r"\w+?_(\d+)", name).group(1))
        exact = int(images.replace(",", "")) * side * side * 3
        assert npy == f"{exact / 2**30:.1f} GiB", name
        assert not re.search(r"\bGB\b", npy + zip_), f"{name}: {npy} | {zip_} is in GB, the dry run prints GiB"


def test_readme_and_dry_run_print_the_same_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # miniimagenet_128 is an npy dataset in the paper profile: its size is exact in both places.
    monkeypatch.chdir(tmp_path)  # no raw data here: the dry run falls back to the published size
    result = CliRunner().invoke(
        app,
        ["prepare", "--dry-run", "--dataset", "miniimagenet_128", "--params", str(REPO / "profiles" / "paper.yaml")],
    )
    assert result.exit_code == 0, result.output
    printed = re.search(r"miniimagenet_128: 100,000 images.*npy output ([\d.]+ GiB)", result.output)
    assert printed, result.output
    row = next(r for r in _size_table() if r[0].startswith("miniimagenet_128"))
    assert row[2] == printed.group(1)
