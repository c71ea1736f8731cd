"""Repeats of rows with other training seeds: the expansion, its checks, and the tables' mean +- std."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, parse_params, seed_row, with_seed_rows
from pipeline.headline import write_split
from stages import paths
from stages import tables as stage


def _with_seeds(micro_dict: dict, rows=("inr_gan", "stylegan2"), values=(1, 2)) -> dict:
    return {**micro_dict, "seeds": {"rows": list(rows), "values": list(values)}}


def test_expansion_repeats_rows_with_train_seed_and_names_them_in_table3(micro_dict: dict) -> None:
    data = _with_seeds(micro_dict)
    data["project"] = {"models": {"inr_gan": "inr_gan", "stylegan2": "stylegan2"}, "dataset": "faces32_test"}
    data["score"] = {**data["score"], "curve": {**data["score"]["curve"], "rows": ["inr_gan"]}}
    expanded = with_seed_rows(data)
    params = parse_params(expanded)
    assert seed_row("inr_gan", 2) == "inr_gan_s2"
    assert {"inr_gan_s1", "inr_gan_s2", "stylegan2_s1", "stylegan2_s2"} <= set(params.rows)
    repeat = params.rows["inr_gan_s1"]
    assert (
        repeat.seed_of == "inr_gan"
        and repeat.train["seed"] == 1
        and repeat.generator == params.rows["inr_gan"].generator
    )
    assert params.project.models["stylegan2_s2"] == "stylegan2_s2"
    assert params.score.curve.rows == ["inr_gan"]  # the curve stays the seed-0 rows': their scores need not re-run
    assert "inr_gan_s1" not in data["rows"]  # the input mapping is left as it was


def test_unknown_seed_rows_and_bad_values_are_named(micro_dict: dict) -> None:
    with pytest.raises(ConfigError, match="seeds.rows: unknown row 'nope'"):
        with_seed_rows(_with_seeds(micro_dict, rows=("nope",)))
    with pytest.raises(ConfigError, match="distinct non-negative"):
        parse_params(_with_seeds(micro_dict, values=(1, 1)))


def test_a_repeat_must_differ_from_its_row_only_in_the_seed(micro_dict: dict) -> None:
    data = with_seed_rows(_with_seeds(micro_dict, rows=("inr_gan",), values=(1,)))
    data["rows"]["inr_gan_s1"]["train"]["kimg"] = 99
    with pytest.raises(ConfigError, match="differs from it in more than train.seed"):
        parse_params(data)
    data = with_seed_rows(_with_seeds(micro_dict, rows=("inr_gan",), values=(1,)))
    data["rows"]["inr_gan_s1"]["seed_of"] = "missing"
    with pytest.raises(ConfigError, match="is not a row of its own"):
        parse_params(data)


def test_tables_report_mean_and_sample_std_over_the_seeds(project: Path, micro_dict: dict) -> None:
    params = parse_params(with_seed_rows(_with_seeds(micro_dict, rows=("inr_gan",), values=(1, 2))))
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    for row, fd in (("inr_gan", 10.0), ("inr_gan_s1", 12.0), ("inr_gan_s2", 17.0), ("stylegan2", 30.0)):
        paths.score_metrics(row).write_text(json.dumps({"fd_domain": fd, "is_domain": 2.0, "kimg": 4.0}))
    texts = stage.run(params)
    # mean 13, sample std sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13) = 3.61
    assert "13.00 +- 3.61 (3 seeds) (faces32)" in texts["table1"]
    assert "30.00 (faces32)" in texts["table1"]  # one seed: no spread shown
    readme = (project / "reports" / "README.md").read_text()
    assert "## Findings at toy scale" in readme
    assert "| Table 1: INR-GAN is within reach of StyleGAN2" in readme and "INR-GAN better by 57%" in readme
    # The paper's side of the claim is paper.md's Table 1 (the text once quoted FIDs from no table of the paper).
    assert "(paper: FID 6.27 vs 2.65 on LSUN Bedroom 256, 16.32 vs 4.41 on FFHQ 1024)" in readme


def test_findings_call_a_difference_inside_the_seed_spread_direction_only(project: Path, micro_dict: dict) -> None:
    inr = micro_dict["rows"]["inr_gan"]
    micro_dict["rows"]["inr_gan_rank1"] = {**inr, "table": "fig8", "generator": {**inr["generator"], "rank": 1}}
    params = parse_params(with_seed_rows(_with_seeds(micro_dict, rows=("inr_gan", "inr_gan_rank1"), values=(1,))))
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    for row, fd in (("inr_gan", 10.0), ("inr_gan_s1", 20.0), ("inr_gan_rank1", 16.0), ("inr_gan_rank1_s1", 18.0)):
        paths.score_metrics(row).write_text(json.dumps({"fd_domain": fd, "kimg": 4.0}))
    text = stage.findings(params)
    # rank 10 (micro: rank 2) 15 +- 7.07 vs rank 1 17 +- 1.41: lower, but by 2 < sqrt(7.07^2 + 1.41^2) = 7.21
    assert "| Fig. 8: FMM rank 2 beats rank 1 | direction only (difference 2.00 within the combined std 7.21) |" in text


def test_profile_command_writes_the_expanded_rows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    target = tmp_path / "params.yaml"
    result = CliRunner().invoke(app, ["profile", "default", "--seeds", "--params", str(target)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(target.read_text())
    seeds = data["seeds"]
    for row in seeds["rows"]:
        for value in seeds["values"]:
            assert data["rows"][seed_row(row, value)]["train"]["seed"] == value
    parse_params(data)
    assert target.read_text().startswith("# Generated by `pipeline profile default --seeds`")


def test_table3_averages_the_kpl_of_repeated_models(project: Path, micro_dict: dict) -> None:
    from stages import kpl

    data = _with_seeds(micro_dict, rows=("inr_gan",), values=(1,))
    data["project"] = {"models": {"inr_gan": "inr_gan", "stylegan2": "stylegan2"}, "dataset": "faces32_test"}
    data["kpl"] = {"regressor": {"dataset": "faces32"}}
    params = parse_params(with_seed_rows(data))
    assert params.project.models["inr_gan_s1"] == "inr_gan_s1"
    for model, z in (("inr_gan", 1e-3), ("inr_gan_s1", 3e-3), ("stylegan2", 2e-3)):
        path = project / kpl.kpl_metrics(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"profile": "micro", "kpl_z": z, "kpl_w": z, "kpl_random": 5e-3, "convention": "mse"})
        )
    text = kpl.write_table3(params, project)
    assert "| inr_gan | 2.00e-03 +- 1.41e-03 (2 seeds) |" in text  # mean 2e-3, sample std 1.41e-3
    assert "inr_gan_s1" not in text  # a repeat is part of its model's row, not a row of its own
    assert "INR-GAN's KPL(Z) 2.00e-03 is equal to StyleGAN2's" in text


def test_the_plain_profile_finds_committed_repeats_with_the_rows_settings(project: Path, micro_dict: dict) -> None:
    # After `pipeline profile NAME` (no --seeds) the repeats are no rows any more, but their metrics files
    # stay: tables still use them when they carry the settings fingerprint of the row as it is now.
    plain = parse_params(_with_seeds(micro_dict, rows=("inr_gan",), values=(1, 2)))
    expanded = parse_params(with_seed_rows(_with_seeds(micro_dict, rows=("inr_gan",), values=(1, 2))))
    assert plain.settings_fingerprint("inr_gan") == expanded.settings_fingerprint("inr_gan_s1")  # only the seed differs
    paths.score_metrics("inr_gan").parent.mkdir(parents=True)
    good = plain.settings_fingerprint("inr_gan")
    for row, fd, fingerprint in (("inr_gan", 10.0, good), ("inr_gan_s1", 12.0, good), ("inr_gan_s2", 99.0, "0" * 64)):
        record = {"fd_domain": fd, "kimg": 4.0, "profile": "micro", "settings_sha256": fingerprint}
        write_split(paths.score_metrics(row), paths.details(paths.score_metrics(row)), record, "score")
    assert stage.repeats(plain) == {
        "inr_gan": ["inr_gan", "inr_gan_s1"],
        "stylegan2": ["stylegan2"],
    }  # s2: other settings
    assert "11.00 +- 1.41 (2 seeds) (faces32)" in stage.run(plain)["table1"]
    longer = {**micro_dict, "train": {**micro_dict["train"], "kimg": 2 * (micro_dict["train"].get("kimg") or 1)}}
    longer["train"].pop("iterations", None)
    # Trained longer since (a resumable setting, but a score of a shorter run is no repeat): no repeat matches.
    assert stage.repeats(parse_params(_with_seeds(longer, rows=("inr_gan",), values=(1, 2))))["inr_gan"] == ["inr_gan"]
    micro_dict["train"] = {**micro_dict["train"], "r1_gamma": 0.5}  # the row changed since: no repeat matches
    assert stage.repeats(parse_params(_with_seeds(micro_dict, rows=("inr_gan",), values=(1, 2))))["inr_gan"] == [
        "inr_gan"
    ]


def test_findings_weigh_table3_kpl_against_the_seed_spread(project: Path, micro_dict: dict) -> None:
    data = _with_seeds(micro_dict, rows=("inr_gan", "stylegan2"), values=(1,))
    data["project"] = {"models": {"inr_gan": "inr_gan", "stylegan2": "stylegan2"}, "dataset": "faces32_test"}
    params = parse_params(with_seed_rows(data))
    kpl_dir = project / "reports" / "metrics" / "kpl"
    kpl_dir.mkdir(parents=True)
    for model, z in (("inr_gan", 1.0e-3), ("inr_gan_s1", 3.0e-3), ("stylegan2", 2.2e-3), ("stylegan2_s1", 2.4e-3)):
        (kpl_dir / f"{model}.json").write_text(json.dumps({"profile": "micro", "kpl_z": z, "kpl_random": 1e-3}))
    text = stage.findings(params)
    # 2.0e-3 +- 1.4e-3 vs 2.3e-3 +- 1.4e-4: lower, by 3e-4, far inside sqrt(1.41e-3^2 + 1.41e-4^2) = 1.4e-3
    assert "KPL(Z) of INR-GAN is below StyleGAN2's" in text
    assert (
        "| direction only (difference 3.0e-04 within the combined std 1.4e-03) | 2.00e-03 +- 1.4e-03 (2 seeds) vs 2.30e-03"
        in text
    )
