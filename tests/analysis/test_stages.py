"""The project, keypoints and kpl stages on a micro setup: toy 32 px generators saved as training
snapshots, a few synthetic faces, a handful of projection steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import snapshots
from pipeline.analysis import WeightsError
from pipeline.analysis.projection import ProjectionsError, snapshot_record
from pipeline.config import ConfigError, Params
from pipeline.data import synthetic_faces
from pipeline.data.dataset import PreparedDataError
from pipeline.io import sha256_file
from pipeline.train.checkpoint import save_checkpoint
from stages import kpl as kpl_stage
from stages import project as project_stage


class Toy32(nn.Module):
    z_dim, w_dim, resolution = 8, 8, 32

    def __init__(self):
        super().__init__()
        self.map = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3 * 32 * 32)

    def mapping(self, z):
        return nn.functional.leaky_relu(self.map(z), 0.2)

    def synthesize(self, w, grid=None):
        return torch.tanh(self.out(w)).view(-1, 3, 32, 32)


def _params(micro_dict, **kpl_overrides) -> Params:
    # an unreachable server makes tracking a quick no-op (the MLflow helper has its own tests)
    micro_dict["tracking"] = {"uri": "http://127.0.0.1:9", "experiment": "test"}
    micro_dict["rows"] = {
        r: {"dataset": "faces32", "table": "test", "generator": {"kind": "stylegan2", "resolution": 32}}
        for r in ("row_a", "row_b")
    }
    micro_dict["project"] = {
        "models": {"inr_gan": "row_a", "stylegan2": "row_b"},
        "dataset": "faces32_test",
        "num_images": 4,
        "device": "cpu",
        "projector": {"steps": 20, "num_mean_samples": 200, "batch_size": 4},
    }
    micro_dict["kpl"] = {
        "regressor": {"dataset": "faces32", "epochs": 1, "batch_size": 32},
        "fit": {"num_train": 64, "batch_size": 32},
        "device": "cpu",
        **kpl_overrides,
    }
    return Params.model_validate(micro_dict)


def _write_dataset(root: Path, name: str, n: int, seed: int) -> None:
    faces = synthetic_faces.render_faces(np.arange(n), 32, seed)
    where = root / "data" / "prepared" / name
    where.mkdir(parents=True)
    np.save(where / "images.npy", faces.images)
    np.save(where / "labels.npy", np.zeros(n, np.int64))
    np.save(where / "keypoints.npy", faces.keypoints)
    (where / "meta.json").write_text(json.dumps({"keypoint_names": list(synthetic_faces.KEYPOINT_NAMES)}))


def _write_snapshot(root: Path, row: str, seed: int) -> None:
    torch.manual_seed(seed)
    save_checkpoint(
        root / "runs" / row / "network-snapshot.pt",
        {"G_ema": Toy32().state_dict(), "info": {"generator": {"kind": "toy"}}},
    )


@pytest.fixture
def setup(project, micro_dict, monkeypatch):
    monkeypatch.setattr(snapshots, "build_row_generator", lambda generator: Toy32())
    _write_dataset(project, "faces32", 200, 0)
    _write_dataset(project, "faces32_test", 8, 7)
    return project, micro_dict


def test_keypoints_project_and_kpl_stages_write_their_outputs(setup):
    root, micro = setup
    params = _params(micro)
    report = kpl_stage.train_regressor(params, progress=False)
    assert report["heldout_mse"] > 0 and (root / "data/keypoints/faces32/regressor.pt").is_file()
    assert (
        json.loads((root / "reports/metrics/keypoints/faces32.json").read_text())["heldout_mse"]
        == report["heldout_mse"]
    )
    _write_snapshot(root, "row_a", 0)
    _write_snapshot(root, "row_b", 1)
    for model in ("inr_gan", "stylegan2"):
        m = project_stage.run(params, model, progress=False)
        assert m["loss"] == "pixel_domain" and set(m) >= {"z", "w"}
    with np.load(root / "data/projections/inr_gan.npz") as data:
        assert (
            data["z"].shape == (4, 8)
            and data["w"].shape == (4, 8)
            and data["reconstructions_w"].shape == (4, 32, 32, 3)
        )
        assert data["loss_z"].shape == (4,) and list(data["indices"]) == [0, 1, 2, 3]
    assert (root / "reports/figures/project/inr_gan.png").is_file()
    results = kpl_stage.run_all(params, progress=False)
    r = results["inr_gan"]
    assert {"kpl_z", "kpl_w", "kpl_random", "extractor_heldout_mse", "extractor_test_mse"} <= set(r)
    assert (
        json.loads((root / "reports/metrics/kpl/stylegan2.json").read_text())["kpl_w"] == results["stylegan2"]["kpl_w"]
    )
    # The per-model files are git-tracked, not DVC outputs: no timing in them, so an unchanged re-run (or a fresh
    # clone's make repro) leaves them byte-identical; the time is in Table 3's details.
    per_model = (root / "reports/metrics/kpl/inr_gan.json").read_bytes()
    assert "seconds" not in json.loads(per_model) and r["seconds"] >= 0
    details = json.loads((root / "reports/details/table3.json").read_text())
    assert details["inr_gan"]["seconds"] == r["seconds"]
    kpl_stage.run(params, "inr_gan", progress=False, table=False)
    assert (root / "reports/metrics/kpl/inr_gan.json").read_bytes() == per_model
    summary = json.loads((root / "reports/metrics/table3.json").read_text())  # the stage's DVC metrics: headline values
    assert (
        set(summary) == {"inr_gan", "stylegan2"}
        and summary["inr_gan"]["kpl_z"] == r["kpl_z"]
        and "per_keypoint" not in str(summary)
    )
    table = (root / "reports/tables/table3_kpl.md").read_text()
    assert "2.10e-04" in table and "6.00e-05" in table  # the paper's KPL(Z) beside ours
    assert f"{r['kpl_z']:.2e}" in table and "INR-GAN's KPL(Z)" in table


def test_bad_inputs_say_what_to_do(setup, monkeypatch):
    root, micro = setup
    params = _params(micro)
    with pytest.raises(ConfigError, match="unknown model 'biggan'.*inr_gan, stylegan2"):
        project_stage.run(params, "biggan", progress=False)
    with pytest.raises(FileNotFoundError, match=r"no trained snapshot.*pipeline train --row row_a"):
        project_stage.run(params, "inr_gan", progress=False)
    _write_snapshot(root, "row_a", 0)
    with pytest.raises(FileNotFoundError, match="pipeline keypoints"):  # the domain term needs the regressor
        project_stage.run(params, "inr_gan", progress=False)
    with pytest.raises(FileNotFoundError, match="pipeline project --model inr_gan"):
        kpl_stage.run(params, "inr_gan", progress=False)
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    fan_params = _params(micro, extractor="fan")
    (root / "data/projections").mkdir(parents=True)
    made_from = snapshot_record(sha256_file(root / "runs/row_a/network-snapshot.pt"), 0)
    np.savez(
        root / "data/projections/inr_gan.npz", indices=np.arange(4), z=np.zeros((4, 8)), w=np.zeros((4, 8)), **made_from
    )
    with pytest.raises(WeightsError, match="2DFAN4-11f355bf06.pth.tar"):
        kpl_stage.run(fan_params, "inr_gan", progress=False)
    with pytest.raises(ConfigError, match="no `kpl:` section"):
        kpl_stage.train_regressor(params.model_copy(update={"kpl": None}))


def test_kpl_refuses_projections_of_an_earlier_snapshot(setup, monkeypatch):
    # Issue #15 item 3: `pipeline kpl` run by hand after retraining paired the old projections with the new generator.
    root, micro = setup
    params = _params(micro, **{"fit": {"num_train": 16, "batch_size": 16}})
    params = params.model_copy(update={"project": params.project.model_copy(update={"domain_features": "none"})})
    monkeypatch.setattr(kpl_stage, "build_extractor", lambda cfg, root, device: pytest.fail("the check comes first"))
    _write_snapshot(root, "row_a", 0)
    project_stage.run(params, "inr_gan", progress=False)
    with np.load(root / "data/projections/inr_gan.npz") as data:
        assert str(data["snapshot_sha256"]) == sha256_file(root / "runs/row_a/network-snapshot.pt")
    _write_snapshot(root, "row_a", 5)  # the row trained again
    with pytest.raises(
        ProjectionsError,
        match=r"projections '.*data/projections/inr_gan.npz' were made from another snapshot "
        r"\(step 0, sha256 [0-9a-f]{12}\) than '.*runs/row_a/network-snapshot.pt' now holds "
        r"\(step 0, sha256 [0-9a-f]{12}\): the row was trained again since; "
        r"re-run `pipeline project --model inr_gan`",
    ):
        kpl_stage.run(params, "inr_gan", progress=False)
    # Projections that record no snapshot (an older version's) are refused the same way; unreadable ones too.
    np.savez(root / "data/projections/inr_gan.npz", indices=np.arange(4), z=np.zeros((4, 8)), w=np.zeros((4, 8)))
    with pytest.raises(ProjectionsError, match=r"do not record which snapshot.*pipeline project --model inr_gan"):
        kpl_stage.run(params, "inr_gan", progress=False)
    (root / "data/projections/inr_gan.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ProjectionsError, match=r"cannot be read .*pipeline project --model inr_gan"):
        kpl_stage.run(params, "inr_gan", progress=False)
    assert not (root / "reports/metrics/kpl/inr_gan.json").exists()


def test_project_names_a_damaged_test_dataset(setup):
    root, micro = setup
    params = _params(micro)
    _write_snapshot(root, "row_a", 0)
    np.save(root / "data/prepared/faces32_test/images.npy", np.zeros((8, 32, 32, 3), np.float32))
    with pytest.raises(
        PreparedDataError,
        match=r"faces32_test/images.npy' holds float32 images.*pipeline prepare --dataset faces32_test",
    ):
        project_stage.run(params, "inr_gan", progress=False)
