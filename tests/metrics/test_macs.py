"""The cost counter against the paper's Table 1, and the Fig. 9 curve."""

from __future__ import annotations

import time

import pytest

from pipeline.metrics.macs import build_on_meta, cost_row, count_params, fig9_curve, table1_costs
from pipeline.models.specs import TABLE1_ROWS, paper_spec

# The paper's Table 1 (Skorokhodov et al., CVPR 2021), copied here as the expected values:
# row -> resolution -> (GMACs per image, #params of G in millions).
PAPER_TABLE1 = {
    "latent_inr": {128: (30.09, 7.1), 256: (120.33, 7.1)},
    "hyper_inr": {128: (23.54, 2055.5), 256: (88.01, 2055.5)},
    "hyper_fourier": {128: (28.02, 2312.02), 256: (105.34, 2312.02)},
    "hyper_fmm": {128: (25.87, 108.2), 256: (103.19, 108.2)},
    "inr_gan": {128: (21.58, 107.03), 256: (38.76, 107.03), 1024: (47.35, 117.3)},
    "stylegan2": {256: (84.36, 30.03), 1024: (143.18, 30.37)},
}
GMACS_TOL, PARAMS_TOL = 0.03, 0.08  # issue 3's acceptance
PARAMS_MATCHED = {"latent_inr", "hyper_fmm", "inr_gan", "stylegan2"}  # rows 2-3: gap reported, see notes

CASES = [(row, res) for row, by_res in PAPER_TABLE1.items() for res in by_res]


@pytest.fixture(scope="module")
def timed_costs() -> tuple[dict[tuple[str, int], dict], float]:
    """Every Table 1 row at 128, 256 and 1024, counted once, and the seconds it took."""
    start = time.perf_counter()
    rows = {row: {res: paper_spec(row, res) for res in (128, 256, 1024)} for row in TABLE1_ROWS}
    costs = {(c["row"], c["resolution"]): c for c in table1_costs(rows)}
    return costs, time.perf_counter() - start


@pytest.fixture(scope="module")
def costs(timed_costs) -> dict[tuple[str, int], dict]:
    return timed_costs[0]


def test_every_row_is_counted_quickly_with_both_conventions(timed_costs):
    costs, seconds = timed_costs
    assert seconds < 40  # the issue asks for well under a minute (first use of the counter included)
    assert len(costs) == 18
    c = costs[("inr_gan", 256)]
    assert {"row", "resolution", "params", "gmacs_paper", "gmacs_true", "paper_gmacs", "gmacs_rel_diff"} <= set(c)
    assert costs[("inr_gan", 1024)]["paper_gmacs"] == 47.35 and costs[("latent_inr", 1024)]["paper_gmacs"] is None


@pytest.mark.parametrize("row,res", CASES)
def test_gmacs_paper_convention_within_3_percent_of_table1(costs, row, res):
    paper_gmacs, _ = PAPER_TABLE1[row][res]
    assert costs[(row, res)]["gmacs_paper"] == pytest.approx(paper_gmacs, rel=GMACS_TOL)


@pytest.mark.parametrize("row,res", [c for c in CASES if c[0] in PARAMS_MATCHED])
def test_params_within_8_percent_of_table1(costs, row, res):
    assert costs[(row, res)]["params"] / 1e6 == pytest.approx(PAPER_TABLE1[row][res][1], rel=PARAMS_TOL)


@pytest.mark.parametrize("row,lo,hi", [("hyper_inr", -0.40, -0.30), ("hyper_fourier", 0.25, 0.32)])
def test_full_generation_rows_keep_their_documented_params_gap(costs, row, lo, hi):
    """No natural architecture matches rows 2-3's #params (paper.md); ours are -34% and +28%."""
    for res in (128, 256):
        assert lo < costs[(row, res)]["params"] / 1e6 / PAPER_TABLE1[row][res][1] - 1 < hi


def test_true_macs_exceed_the_paper_convention_where_skips_and_fourier_run_per_pixel(costs):
    for row in ("hyper_fourier", "hyper_fmm", "inr_gan"):
        c = costs[(row, 256)]
        assert c["gmacs_true"] > 1.2 * c["gmacs_paper"], row


def test_cost_row_counts_a_single_spec_and_names_the_row():
    c = cost_row({"kind": "inr_gan", "resolution": 128}, row="t1_inr_gan")
    assert c["row"] == "t1_inr_gan" and c["resolution"] == 128
    assert c["params"] == count_params(build_on_meta(paper_spec("inr_gan", 128)))


def test_fig9_inr_gan_evaluates_a_sparser_grid_stylegan2_pays_full_size():
    inr = fig9_curve(paper_spec("inr_gan", 1024))
    sg2 = fig9_curve(paper_spec("stylegan2", 1024))
    assert [p["resolution"] for p in inr] == [64, 128, 256, 512, 1024]
    gm = [p["gmacs_paper"] for p in inr]
    assert all(a < b for a, b in zip(gm, gm[1:]))
    assert inr[-1]["gmacs_true"] > 2 * inr[-3]["gmacs_true"]
    assert len({p["gmacs_paper"] for p in sg2}) == 1 and len({p["gmacs_true"] for p in sg2}) == 1
    assert inr[0]["gmacs_paper"] < sg2[0]["gmacs_paper"] / 100


def test_fig9_rejects_resolutions_above_the_trained_one():
    with pytest.raises(ValueError, match="2048"):
        fig9_curve(paper_spec("inr_gan", 1024), [2048])


@pytest.mark.parametrize("profile", ["micro", "default", "paper"])
def test_macs_section_of_every_profile_holds_exactly_the_paper_specs(profile):
    """The `macs:` section of params (the same in every profile) must stay in sync with paper_spec."""
    from pathlib import Path

    from pipeline.config import load_params

    section = load_params(Path(__file__).resolve().parents[2] / "profiles" / f"{profile}.yaml").macs
    assert section.resolutions == [128, 256, 1024]
    assert list(section.rows) == list(TABLE1_ROWS)
    for row, by_res in section.rows.items():
        assert sorted(by_res) == [128, 256, 1024]
        for res, spec in by_res.items():
            assert spec == paper_spec(row, res), (row, res)
