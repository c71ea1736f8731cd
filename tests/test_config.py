"""Configuration: every profile validates, and bad settings fail early with a message naming key and value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["micro", "default", "paper"])
def test_every_profile_validates(name: str) -> None:
    params = load_params(REPO / "profiles" / f"{name}.yaml")
    assert params.profile == name
    assert params.prepare.datasets


def test_committed_params_is_the_default_profile() -> None:
    # `pipeline profile default` must restore exactly what a fresh clone has.
    assert (REPO / "params.yaml").read_text() == (REPO / "profiles" / "default.yaml").read_text()


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(data)
    return str(info.value)


def test_unknown_key_is_rejected_with_its_path(micro_dict: dict) -> None:
    micro_dict["prepare"]["datasets"]["faces32"]["resolutoin"] = 32
    msg = _error(micro_dict)
    assert "prepare.datasets.faces32.resolutoin" in msg and "unknown key" in msg


def test_misspelt_training_option_is_named_in_the_section_it_was_written_in(micro_dict: dict) -> None:
    # train: is merged into every row's train: before validation; a misspelt default used to be reported as
    # "(top level): ... in train + rows.<first row>.train: kimgg", as if the row held it.
    row = next(iter(micro_dict["rows"]))
    bad_default = copy.deepcopy(micro_dict)
    bad_default.setdefault("train", {})["kimgg"] = 16
    msg = _error(bad_default)
    assert "\n  train.kimgg: unknown key" in msg and f"rows.{row}.train.kimgg" not in msg and "(top level)" not in msg
    micro_dict["rows"][row]["train"] = {"r1_gama": 1.0}
    msg = _error(micro_dict)
    assert f"\n  rows.{row}.train.r1_gama: unknown key" in msg


@pytest.mark.parametrize("bad", [48, 0, -32, 2048])
def test_resolution_must_be_power_of_two(micro_dict: dict, bad: int) -> None:
    micro_dict["prepare"]["datasets"]["faces64"]["source"] = "folder"
    micro_dict["prepare"]["datasets"]["faces64"]["path"] = "x"
    micro_dict["prepare"]["datasets"]["faces64"]["resolution"] = bad
    msg = _error(micro_dict)
    assert "prepare.datasets.faces64.resolution" in msg and str(bad) in msg and "power of two" in msg


@pytest.mark.parametrize("key,value", [("num_images", 0), ("num_images", -5)])
def test_sizes_must_be_positive(micro_dict: dict, key: str, value: int) -> None:
    micro_dict["prepare"]["datasets"]["faces32"][key] = value
    msg = _error(micro_dict)
    assert f"prepare.datasets.faces32.{key}" in msg and str(value) in msg and "greater than 0" in msg


def test_chunk_size_must_be_positive(micro_dict: dict) -> None:
    micro_dict["prepare"]["chunk_size"] = 0
    assert "prepare.chunk_size" in _error(micro_dict)


def test_unknown_source_lists_allowed(micro_dict: dict) -> None:
    micro_dict["prepare"]["datasets"]["faces32"]["source"] = "imagenet"
    msg = _error(micro_dict)
    assert "imagenet" in msg and "synthetic_faces" in msg and "lsun" in msg


def test_source_specific_fields(micro_dict: dict) -> None:
    data = copy.deepcopy(micro_dict)
    data["prepare"]["datasets"]["faces32"] = {"source": "folder", "resolution": 32}
    assert "needs path" in _error(data)
    data["prepare"]["datasets"]["faces32"] = {"source": "lsun10", "resolution": 32, "per_category": 3}
    assert "needs categories" in _error(data)
    data["prepare"]["datasets"]["faces32"] = {"source": "synthetic_faces", "resolution": 256, "num_images": 3}
    assert "32, 64 or 128" in _error(data)


def test_unknown_profile_name(micro_dict: dict) -> None:
    micro_dict["profile"] = "huge"
    assert "'micro', 'default' or 'paper'" in _error(micro_dict)


def test_row_must_reference_a_defined_dataset(micro_dict: dict) -> None:
    micro_dict["rows"] = {"inr_gan": {"dataset": "ffhq", "table": "table1", "generator": {"kind": "inr_gan"}}}
    msg = _error(micro_dict)
    assert "rows.inr_gan.dataset" in msg and "'ffhq'" in msg and "faces32" in msg


def test_row_generator_kind_must_be_known(micro_dict: dict) -> None:
    micro_dict["rows"] = {"x": {"dataset": "faces32", "table": "table1", "generator": {"kind": "biggan"}}}
    msg = _error(micro_dict)
    assert "biggan" in msg and "inr_gan" in msg


def test_lookup_of_unknown_names(micro_dict: dict) -> None:
    params = parse_params(micro_dict)
    with pytest.raises(ConfigError, match="unknown dataset 'lsun'.*faces32"):
        params.dataset("lsun")
    with pytest.raises(ConfigError, match="unknown row 'biggan'; .*defines: inr_gan, stylegan2"):
        params.row("biggan")


def test_missing_source_path_fails_before_work(micro_dict: dict, tmp_path: Path) -> None:
    micro_dict["prepare"]["datasets"]["ffhq"] = {"source": "folder", "path": str(tmp_path / "nope"), "resolution": 32}
    params = parse_params(micro_dict)  # loading succeeds: the paper profile must be inspectable anywhere
    with pytest.raises(ConfigError, match=r"prepare.datasets.ffhq: path '.*nope' does not exist"):
        params.dataset("ffhq").check_sources_exist("ffhq")


def test_missing_params_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("prepare: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(tmp_path / "params.yaml")


def test_row_resolution_must_match_its_dataset(micro_dict: dict) -> None:
    micro_dict["rows"] = {
        "sg2": {"dataset": "faces32", "table": "table1", "generator": {"kind": "stylegan2", "resolution": 64}}
    }
    msg = _error(micro_dict)
    assert "rows.sg2.generator.resolution" in msg and "64" in msg and "32 px" in msg


def test_row_train_overrides_are_validated(micro_dict: dict) -> None:
    micro_dict["rows"] = {
        "sg2": {
            "dataset": "faces32",
            "table": "table1",
            "generator": {"kind": "stylegan2", "resolution": 32},
            "train": {"r1_gama": 1.0},
        }
    }
    assert "r1_gama" in _error(micro_dict)


def test_curve_rows_must_be_defined_rows_or_all(micro_dict: dict) -> None:
    micro_dict["score"]["curve"] = {"rows": ["inr_gan", "inr_gan_rank3"], "num_images": 8}
    msg = _error(micro_dict)
    assert "score.curve.rows: unknown row 'inr_gan_rank3'" in msg and "inr_gan, stylegan2" in msg
    micro_dict["score"]["curve"] = {"rows": "every", "num_images": 8}
    assert "score.curve.rows" in _error(micro_dict)
    micro_dict["score"]["curve"] = {"rows": "all", "num_images": 8}
    assert parse_params(micro_dict).score.curve.includes("stylegan2")


def test_a_missing_optional_section_is_named_when_a_stage_needs_it(micro_dict: dict) -> None:
    params = parse_params(micro_dict)  # micro_dict has no project/kpl sections
    assert params.optional_section("score") is params.score
    with pytest.raises(ConfigError, match=r"profile 'micro'\) has no `kpl:` section; copy it from profiles/micro.yaml"):
        params.optional_section("kpl")


def test_paper_profile_trains_stylegan2_rows_with_stylegan2s_recipe() -> None:

    params = load_params(REPO / "profiles" / "paper.yaml")
    for name, row in params.rows.items():
        if row.released is not None:  # the authors' checkpoints: imported, never trained here
            continue
        options = params.train_options(name)
        if row.generator.kind == "stylegan2":
            assert (options.r1_convention, options.r1_interval, options.pl_weight, options.betas) == (
                "stylegan2",
                16,
                2.0,
                (0.0, 0.99),
            )
            assert options.ema == pytest.approx(0.5 ** (options.total_batch / 10_000), abs=1e-5)  # half-life 10k images
        elif row.generator.kind == "inr_gan_sg2":  # StyleGAN2-ADA's auto config, as the authors trained them
            assert (options.r1_convention, options.r1_interval, options.pl_weight, options.betas) == (
                "stylegan2",
                16,
                0.0,
                (0.0, 0.99),
            )
            assert options.lr["synthesis"] == options.lr["mapping"] == options.lr["d"] == 0.0025
            assert options.discriminator["channel_base"] == 32768
            assert options.ema == pytest.approx(0.5 ** (options.total_batch / 20_000), abs=1e-5)  # half-life 20k images
        else:
            assert (options.r1_convention, options.pl_weight, options.ema) == ("inr_gan", 0.0, 0.999)
