"""The tables stage: our measured scores beside the paper's numbers, nothing invented where nothing ran."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import parse_params
from pipeline.paper_numbers import paper_row
from stages import paths
from stages import tables as stage


def test_tables_put_measured_scores_beside_the_paper(project: Path, micro_dict: dict) -> None:
    inr = micro_dict["rows"]["inr_gan"]
    micro_dict["rows"]["inr_gan_rank1"] = {**inr, "table": "fig8", "generator": {**inr["generator"], "rank": 1}}
    params = parse_params(micro_dict)
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    paths.score_metrics("inr_gan").write_text(json.dumps({"fd_domain": 12.3456, "is_domain": 2.5, "kimg": 4.0}))
    paths.score_metrics("inr_gan_rank1").write_text(json.dumps({"fd_domain": 20.5, "is_domain": 2.0, "kimg": 4.0}))
    paths.MACS_METRICS.write_text(
        json.dumps({"inr_gan": {"256": {"params": 107_490_000, "gmacs_paper": 38.76, "gmacs_true": 60.3}}})
    )

    texts = stage.run(params)
    t1 = texts["table1"]
    assert "| + multi-scale INR (= INR-GAN) | 38.76 | 107.49M | 5.69 | 6.27 | 16.32 | 12.35 (faces32) |" in t1
    assert "| StyleGAN2 generator | - | - | - | 2.65 | 4.41 | not scored (faces32) |" in t1  # row exists, no score yet
    assert "| latent-code conditioned INR | - | - | 229.90 | 253.30 | O/M | not run in this profile |" in t1
    assert "fd_domain" in t1 and "Toy scale" in t1
    assert (
        "| 1 | 20.50 (faces32) |" in texts["fig8"] and "| 2 | 12.35 (faces32) |" in texts["fig8"]
    )  # micro inr_gan: rank 2
    assert texts["table4"].count("not run in this profile") == 12  # 6 decoders x (FD, IS)
    assert "12.47" in texts["table4"]  # the paper's LSUN-10 FID of INR-GAN
    csv = paths.table_csv("table1").read_text().splitlines()
    assert csv[0].startswith("table,paper_row,row,dataset") and len(csv) == 3
    assert "tables/table3_kpl.md" in (project / "reports" / "README.md").read_text()
    # One labelled samples figure per table, from the rows' sample grids (none here: the figures say so).
    assert all(paths.table_samples_png(t).is_file() for t in stage.TABLE_TITLES)  # not the released rows


def test_each_tables_samples_figure_shows_that_tables_rows(project: Path, micro_dict: dict, monkeypatch) -> None:
    import numpy as np

    from pipeline.data.preview import save_grid

    params = parse_params(micro_dict)
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    for row in params.rows:
        paths.score_metrics(row).write_text(json.dumps({"fd_domain": 10.0, "is_domain": 2.0, "kimg": 4.0}))
        save_grid(paths.samples_png(row), np.zeros((4, 8, 8, 3), np.uint8), 2)
    shown = {}
    monkeypatch.setattr(stage, "save_panels", lambda path, panels, title: shown.update({Path(path).name: panels}))
    stage.run(params)
    table1 = [label.splitlines() for label, _ in shown["table1_samples.png"]]
    assert [lines[1] for lines in table1] == [r for r in params.rows if params.rows[r].table == "table1"]
    assert table1[0][2] == "fd_domain 10.0"
    assert shown["table4_samples.png"] == []


def test_fig8_curve_plot_and_csv_come_from_the_metrics_files(project: Path, micro_dict: dict) -> None:
    inr = micro_dict["rows"]["inr_gan"]
    for rank in (1, 8):  # micro's FMM layers allow rank <= 16
        micro_dict["rows"][f"inr_gan_rank{rank}"] = {
            **inr,
            "table": "fig8",
            "generator": {**inr["generator"], "rank": rank},
        }
    params = parse_params(micro_dict)
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    for row, fds in (("inr_gan_rank1", [40.0, 30.0]), ("inr_gan", [35.0, 20.0]), ("inr_gan_rank8", None)):
        curve = [{"step": 2 * (i + 1), "kimg": 0.016 * (i + 1), "fd": fd} for i, fd in enumerate(fds or [])]
        paths.score_metrics(row).write_text(
            json.dumps({"fd_domain": (fds or [25.0])[-1], "kimg": 0.032, **({"curve": curve} if fds else {})})
        )

    text = stage.run(params)["fig8"]
    assert "[figures/fig8_rank_curve.png](../figures/fig8_rank_curve.png)" in text and "no curve" not in text.lower()
    assert "| 8 | 25.00 (faces32) |" in text  # the final-score table stays, rows without a curve included
    lines = paths.FIG8_CURVE_CSV.read_text().splitlines()
    assert lines == [
        "row,dataset,rank,step,kimg,fd",
        "inr_gan_rank1,faces32,1,2,0.016,40.0",
        "inr_gan_rank1,faces32,1,4,0.032,30.0",
        "inr_gan,faces32,2,2,0.016,35.0",
        "inr_gan,faces32,2,4,0.032,20.0",
    ]
    from PIL import Image

    assert Image.open(paths.FIG8_CURVE_PNG).size[0] > 100

    for row in ("inr_gan", "inr_gan_rank1"):  # scored again without curves
        paths.score_metrics(row).write_text(json.dumps({"fd_domain": 20.0, "kimg": 0.032}))
    text = stage.run(params)["fig8"]
    assert (
        "No rank row has a curve yet" in text and "`train.keep_snapshot_every`" in text and "`score.curve.rows`" in text
    )
    assert "fig8_rank_curve.png" not in text
    assert (
        paths.FIG8_CURVE_CSV.read_text().splitlines() == ["row,dataset,rank,step,kimg,fd"]
        and paths.FIG8_CURVE_PNG.is_file()
    )


def test_paper_row_of_variants(micro_dict: dict) -> None:
    gen = parse_params(micro_dict).rows["inr_gan"].generator
    assert paper_row(gen, "table1") == "inr_gan"
    assert paper_row(gen.model_copy(update={"fmm_activation": "identity"}), "table2") == "inr_gan_no_fmm_act"
    assert paper_row(gen.model_copy(update={"fmm_activation": "centred"}), "table2") == "inr_gan_no_fmm_act"
    assert paper_row(gen.model_copy(update={"rank": 30}), "fig8") == "inr_gan_rank30"


def test_table2_and_fig8_take_table1_baselines_only_on_their_own_datasets(project: Path) -> None:
    # Paper profile: Table 2 compares on Churches 256 (its own rows) and Bedrooms 256 (Table 1's INR-GAN and
    # StyleGAN2 rows); Bedrooms 128 and FFHQ 1024 belong to Table 1 only, and Fig. 8 is Bedrooms 256 only.
    params = parse_params(
        __import__("yaml").safe_load((Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml").read_text())
    )
    scores = {
        "inr_gan_bedroom128": 9.0,
        "inr_gan_bedroom256": 6.5,
        "inr_gan_ffhq1024": 16.0,
        "inr_gan_church256": 5.1,
        "stylegan2_bedroom256": 2.7,
        "stylegan2_church256": 3.9,
        "inr_gan_rank1_bedroom256": 7.5,
    }
    paths.score_metrics("x").parent.mkdir(parents=True)
    for row, fid in scores.items():
        paths.score_metrics(row).write_text(json.dumps({"fid": fid, "is": 1.0, "kimg": 25000}))

    texts = stage.run(params)
    t2 = {line.split("|")[1].strip(): line for line in texts["table2"].splitlines() if line.startswith("| ")}
    assert "5.10 (lsun_church_256); 6.50 (lsun_bedroom_256) |" in t2["INR-GAN"]
    assert "3.90 (lsun_church_256); 2.70 (lsun_bedroom_256) |" in t2["StyleGAN2"]
    assert "bedroom_128" not in texts["table2"] and "ffhq" not in texts["table2"]
    assert "the paper does not say which form" in texts["table2"] and "`fmm_activation: centred`" in texts["table2"]
    assert "| 10 | 6.50 (lsun_bedroom_256) |" in texts["fig8"] and "| 1 | 7.50 (lsun_bedroom_256) |" in texts["fig8"]


def test_scores_of_another_profile_are_not_this_profiles_results(project: Path, micro_dict: dict) -> None:
    params = parse_params(micro_dict)  # profile micro
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    paths.score_metrics("inr_gan").write_text(
        json.dumps({"profile": "default", "fd_domain": 88.7, "is_domain": 2.5, "kimg": 4.8})
    )
    paths.score_metrics("stylegan2").write_text(
        json.dumps({"profile": "micro", "fd_domain": 40.0, "is_domain": 2.0, "kimg": 0.1})
    )
    t1 = stage.run(params)["table1"]
    assert (
        "88.70" not in t1
        and "| + multi-scale INR (= INR-GAN) | - | - | 5.69 | 6.27 | 16.32 | not scored (faces32) |" in t1
    )
    assert "40.00 (faces32)" in t1
