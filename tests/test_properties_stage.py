"""The properties stage and `pipeline sample`: figures and metrics from a trained snapshot, clear
refusals for rows without an INR decoder or grids a row cannot draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ConfigError, load_params
from pipeline.models.registry import build_generator
from pipeline.train.checkpoint import save_checkpoint
from pipeline.train.options import row_spec
from stages import paths
from stages import properties as stage
from stages.score import snapshot_file

runner = CliRunner()


def _snapshot(row: str) -> None:
    params = load_params("params.yaml")
    torch.manual_seed(0)
    g = build_generator(params.rows[row].generator.model_dump(mode="json"))
    # info: what the train stage records of the row a snapshot was trained as
    save_checkpoint(
        snapshot_file(row),
        {
            "G": g.state_dict(),
            "G_ema": g.state_dict(),
            "D": {},
            "info": row_spec(params, row),
            "step": 4,
            "kimg": 0.064,
        },
    )


def test_properties_stage_writes_figures_and_exact_centre_check(project: Path) -> None:
    _snapshot("inr_gan")
    result = stage.run(load_params("params.yaml"), "inr_gan", progress=False)
    assert result["extrapolation_centre_max_abs_error"] < 1e-5
    assert set(result["frequencies"]) == {"block 0 (16 px, F=8)", "block 1 (32 px, F=8)"}
    for name in stage.FIGURES:
        assert Image.open(paths.properties_dir("inr_gan") / name).size[0] > 100
    written = json.loads(paths.properties_metrics("inr_gan").read_text())
    assert written["kimg"] == 0.064 and written["superres_inr_vs_bicubic_mean_abs"] > 0


def test_properties_rows_must_draw_a_grid(project: Path) -> None:
    data = yaml.safe_load(Path("params.yaml").read_text())
    data["properties"]["rows"] = ["stylegan2"]
    Path("params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(
        ConfigError,
        match=r"properties.rows: row 'stylegan2' is a stylegan2 generator, which has no INR decoder and draws a "
        r"fixed pixel grid .*; list INR rows \(latent_inr, hyper_\*, inr_gan\) or inr_gan_sg2 rows",
    ):
        load_params("params.yaml")


def _with_sg2_row(upsampling: str = "nearest") -> None:
    """The micro profile with a micro inr_gan_sg2 row (blocks 8, 8, 16, 32) as its only properties row."""
    data = yaml.safe_load(Path("params.yaml").read_text())
    generator = dict(kind="inr_gan_sg2", resolution=32, input_resolution=8, z_dim=16, w_dim=16, channel_base=256)
    generator.update(channel_max=16, fmm_rank=2, const_channels=4, const_channels_high=4, random_fourier_features=4)
    if upsampling == "bilinear":
        generator.update(upsampling="bilinear", instance_norm=True)
    data["rows"]["inr_gan_sg2"] = {"dataset": "faces32", "table": "table2", "generator": generator}
    data["properties"]["rows"] = ["inr_gan_sg2"]
    Path("params.yaml").write_text(yaml.safe_dump(data))


def test_properties_stage_on_inr_gan_sg2_draws_its_grids_and_names_what_does_not_apply(project: Path) -> None:
    _with_sg2_row()
    _snapshot("inr_gan_sg2")
    result = stage.run(load_params("params.yaml"), "inr_gan_sg2", progress=False)
    folder = paths.properties_dir("inr_gan_sg2")
    assert sorted(p.name for p in folder.iterdir()) == ["extrapolation.png", "superresolution.png"]
    assert Image.open(folder / "extrapolation.png").size[0] > 100
    metrics = json.loads(paths.properties_metrics("inr_gan_sg2").read_text())
    assert metrics["extrapolation_centre_max_abs_error"] < 1e-5 and metrics["superres_inr_vs_bicubic_mean_abs"] > 0
    assert "interpolation_params_vs_pixels_mean_abs" not in metrics
    details = json.loads(paths.details(paths.properties_metrics("inr_gan_sg2")).read_text())
    assert set(details["skipped"]) == {"interpolation", "frequencies"}
    assert all(isinstance(reason, str) and "\n" not in reason for reason in details["skipped"].values())
    assert "learned constant" in " ".join(details["notes"]) and result["skipped"] == details["skipped"]


def test_properties_stage_on_the_bilinear_variant_says_its_centre_is_not_exact(project: Path) -> None:
    _with_sg2_row("bilinear")
    _snapshot("inr_gan_sg2")
    result = stage.run(load_params("params.yaml"), "inr_gan_sg2", progress=False)
    assert result["extrapolation_centre_max_abs_error"] > 1e-3
    assert any("not the image" in note for note in result["notes"])


def test_sample_draws_any_grid_and_refuses_what_a_row_cannot_draw(project: Path) -> None:
    _snapshot("inr_gan")
    res = runner.invoke(
        app,
        ["sample", "--row", "inr_gan", "--resolution", "64", "--range", "-0.5", "1.5", "--num", "4", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    out = Path("samples/inr_gan_64px_-0.5_1.5.png")
    assert out.is_file() and Image.open(out).size[0] > 2 * 64
    with pytest.raises(ConfigError, match=r"--range -0.3 1.3: .*1.6 wide .*not a whole number"):
        stage.sample(load_params("params.yaml"), "inr_gan", 32, -0.3, 1.3, num=2, device="cpu")
    _snapshot("stylegan2")
    with pytest.raises(ConfigError, match=r"fixed 32x32 pixel grid"):
        stage.sample(load_params("params.yaml"), "stylegan2", 64, num=2, device="cpu")


@pytest.mark.parametrize(
    "margins, expected",
    [
        (".nan", r"properties.margins must be positive finite numbers .*got \[nan\]"),
        ("-0.25", r"properties.margins must be positive finite numbers .*got \[-0.25\]"),
        (".inf", r"properties.margins must be positive finite numbers .*got \[inf\]"),
    ],
)
def test_non_finite_or_negative_margins_are_named_when_params_are_read(
    project: Path, margins: str, expected: str
) -> None:
    # Issue #15 item 13: these gave runtime tracebacks in the properties stage.
    text = Path("params.yaml").read_text()
    Path("params.yaml").write_text(text.replace("margins: [0.5]", f"margins: [{margins}]"))
    with pytest.raises(ConfigError, match=expected):
        load_params("params.yaml")


def test_margin_off_the_pixel_grid_is_a_config_error_before_any_output(project: Path) -> None:
    _snapshot("inr_gan")
    Path("params.yaml").write_text(Path("params.yaml").read_text().replace("margins: [0.5]", "margins: [0.3]"))
    with pytest.raises(
        ConfigError,
        match=r"properties.margins \[0.3\] cannot be drawn for row 'inr_gan': extrapolation margin 0.3 gives",
    ):
        stage.run(load_params("params.yaml"), "inr_gan", progress=False)
    assert not paths.properties_metrics("inr_gan").exists()
