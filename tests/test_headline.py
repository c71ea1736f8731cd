"""pipeline.headline: a stage's record split into DVC metrics (headline numbers) and its details file."""

from __future__ import annotations

import json

import pytest

from pipeline.headline import HEADLINE, merge_records, read_split, split_record, write_split

SCORE = {
    "fd_domain": 43.8,
    "fd_domain_up2x_grid": 23.5,
    "is_domain": 8.2,
    "is_domain_std": 0.4,
    "kimg": 16.0,
    "step": 1000,
    "row": "inr_gan",
    "settings_sha256": "7cfb",
    "weights_sha256": "3fac",
    "curve": [{"fd": 158.1, "kimg": 3.2, "step": 200}],
}


def test_score_headline_is_the_scores_and_kimg() -> None:
    head, rest = split_record(SCORE, HEADLINE["score"])
    assert head == {"fd_domain": 43.8, "fd_domain_up2x_grid": 23.5, "is_domain": 8.2, "kimg": 16.0}
    assert set(rest) == {"is_domain_std", "step", "row", "settings_sha256", "weights_sha256", "curve"}
    inception = {"fid": 10.0, "fid_up2x_bicubic": 9.0, "is": 3.0, "is_std": 0.1, "kimg": 4.0}
    assert set(split_record(inception, HEADLINE["score"])[0]) == {"fid", "fid_up2x_bicubic", "is", "kimg"}


def test_nested_records_split_leaf_by_leaf_and_merge_back() -> None:
    macs = {"inr_gan": {"256": {"gmacs_true": 60.3, "params": 107}, "128": {"gmacs_true": 24.9}}}
    head, rest = split_record(macs, HEADLINE["macs"])
    assert head == {"inr_gan": {"256": {"gmacs_true": 60.3}}}
    assert rest == {"inr_gan": {"256": {"params": 107}, "128": {"gmacs_true": 24.9}}}
    assert merge_records(head, rest) == macs
    assert merge_records(*split_record(SCORE, HEADLINE["score"])) == SCORE


def test_only_numbers_are_headline() -> None:
    # A string or a flag under a headline name would still be one more `dvc exp show` column.
    head, rest = split_record({"kimg": "16", "fd_domain": True, "is_domain": 2.0}, HEADLINE["score"])
    assert head == {"is_domain": 2.0} and rest == {"kimg": "16", "fd_domain": True}


def test_write_and_read_split(tmp_path) -> None:
    metrics, details = tmp_path / "m" / "r.json", tmp_path / "d" / "r.json"
    write_split(metrics, details, SCORE, "score")
    assert json.loads(metrics.read_text()) == split_record(SCORE, HEADLINE["score"])[0]
    assert read_split(metrics, details) == SCORE
    details.unlink()
    assert read_split(metrics, details) == split_record(SCORE, HEADLINE["score"])[0]  # headline alone
    details.write_text(json.dumps({"kimg": 3.0}))
    with pytest.raises(ValueError, match="'kimg' is in both"):
        read_split(metrics, details)
