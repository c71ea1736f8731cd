"""`pipeline import`: a StyleGAN2-ADA network pickle built here in the authors' structure (persistent-class
records holding module state) round-trips into a snapshot that sample and score accept; foreign, truncated
and malicious pickles are refused with nothing written and nothing of theirs run; a missing file names
itself and where to get it."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_score_stage import TINY  # the toy trained row scored beside the released one

from pipeline.config import ConfigError, Params
from pipeline.headline import read_split
from pipeline.metrics.options import DomainNetConfig
from pipeline.models.registry import build_generator
from pipeline.models.released import ReleasedPickleError, read_network_pickle
from pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from pipeline.train.options import row_spec
from stages import paths, prepare, reference, released, score, train

SMALL = dict(
    kind="inr_gan_sg2",
    resolution=32,
    input_resolution=8,
    z_dim=16,
    w_dim=16,
    channel_base=512,
    channel_max=16,
    fmm_rank=2,
    const_channels=4,
    const_channels_high=4,
    random_fourier_resolutions=[32],
    random_fourier_features=4,
    extra_layer_resolutions=[32],
)
RELEASED = {"pickle": "data/released/small.pkl", "url": "https://example.org/small.pkl", "published_fid": 4.45}


# --- a pickle in the authors' structure ----------------------------------------------------------------------


@pytest.fixture
def authors_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Stand-ins for the authors' torch_utils.persistence and dnnlib.util, so that pickle writes the globals their
    files name; their reconstruction would create a marker file, which no import may do."""
    marker = tmp_path / "their-code-ran"
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what unpickling with their code would call
        marker.write_text("ran")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for name, module in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return marker


class _Record:
    """Pickles as StyleGAN2-ADA's persistent classes do: _reconstruct_persistent_obj(meta), meta holding the
    module's source (here: code that would write the marker) and its __dict__."""

    def __init__(self, class_name: str, marker: Path):
        self.class_name, self.marker = class_name, marker
        self.params: OrderedDict = OrderedDict()
        self.buffers: OrderedDict = OrderedDict()
        self.children: OrderedDict = OrderedDict()

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": self.params,
            "_buffers": self.buffers,
            "_non_persistent_buffers_set": set(),
            "_modules": self.children,
            "_forward_hooks": OrderedDict(),
            "cfg": OmegaConf.create({"fmm": {"enabled": True, "rank": 2}, "res": [32, 16]}),  # as their layers carry
            "weight_gain": np.float64(0.25),
            "_init_kwargs": {"z_dim": 16},
        }
        meta = dict(
            type="class",
            version=6,
            module_src=f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')",
            class_name=self.class_name,
            state=state,
        )
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


# Their module classes along the G_ema tree (src/training/networks.py, layers.py).
_CLASSES = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "input": "GenInput",
    "coord_fuser": "CoordFuser",
    "torgb": "ToRGBLayer",
    "extra_convs": "ModuleList",
}


def _class_of(name: str) -> str:
    if name.startswith("fc") or name == "affine":
        return "FullyConnectedLayer"
    if name.startswith("conv") or name.isdigit():
        return "SynthesisLayer"
    if name.startswith("b") and name[1:].isdigit():
        return "SynthesisBlock"
    return _CLASSES.get(name, "CoordsInput")


def authors_state(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our generator's weights under the authors' names and layouts, written out by hand (independently of
    the import's table): mapping.fc{i}; StyleGAN2's blocks b4, b8, .., bR (b4 the input block, blocks up to the
    input resolution without a coord_fuser); conv0/conv1/extra_convs; 1x1 conv weights; (1, C, r, r) constants;
    log then random bases, both in radians over the [-1, 1) coordinates (y up) both sides use."""
    ours, spec = G.state_dict(), G.spec
    out = {"mapping.w_avg": ours["mapping_network.w_avg"]}
    for i in range(len(G.mapping_network.layers)):
        for p in ("weight", "bias"):
            out[f"mapping.fc{i}.{p}"] = ours[f"mapping_network.layers.{i}.{p}"]
    for k, block in enumerate(G.blocks):
        prefix = f"synthesis.b{2 ** (k + 2)}"
        if k == 0:
            fuser, names = f"{prefix}.input.input.coord_fuser", ["conv1"]
        else:
            fuser, names = f"{prefix}.coord_fuser", ["conv0", "conv1"]
        names += [f"extra_convs.{j}" for j in range(block.num_layers - len(names))]
        if f"blocks.{k}.embedding.frequencies" in ours:
            if f"blocks.{k}.embedding.const" in ours:
                out[f"{fuser}.const_embs"] = ours[f"blocks.{k}.embedding.const"][None]
            basis = ours[f"blocks.{k}.embedding.frequencies"]
            num_random = spec.random_fourier_features // 2 if block.resolution in spec.random_fourier_resolutions else 0
            out[f"{fuser}.log_basis"] = basis[: len(basis) - num_random]
            if num_random:
                out[f"{fuser}.random_basis"] = basis[len(basis) - num_random :]
        for i, name in enumerate(names):
            out[f"{prefix}.{name}.weight"] = ours[f"blocks.{k}.layers.{i}.weight"][:, :, None, None]
            out[f"{prefix}.{name}.resample_filter"] = torch.ones(4, 4) / 16  # StyleGAN2's FIR filter: not imported
            for p in ("bias", "affine.weight", "affine.bias"):
                out[f"{prefix}.{name}.{p}"] = ours[f"blocks.{k}.layers.{i}.{p}"]
        for p in ("weight", "bias", "affine.weight", "affine.bias"):
            out[f"{prefix}.torgb.{p}"] = ours[f"blocks.{k}.torgb.{p}"]
    return out


def _as_module_list(node: _Record) -> None:
    """Their SynthesisBlock.extra_convs is a plain torch nn.ModuleList (pickled as that class and its __dict__)."""
    for name, child in list(node.children.items()):
        _as_module_list(child)
        if name == "extra_convs":
            plain_list = torch.nn.ModuleList()
            plain_list._modules.update(child.children)  # the records themselves, as their pickle holds them
            node.children[name] = plain_list


def record_tree(state: dict[str, torch.Tensor], marker: Path) -> _Record:
    root = _Record("Generator", marker)
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for name in path:
            node = node.children.setdefault(name, _Record(_class_of(name), marker))
        if leaf in ("w_avg", "log_basis", "random_basis", "resample_filter"):
            node.buffers[leaf] = value.clone()
        else:
            node.params[leaf] = torch.nn.Parameter(value.clone(), requires_grad=False)
    _as_module_list(root)
    return root


def write_network_pickle(path: Path, G: torch.nn.Module, marker: Path, state: dict | None = None) -> None:
    """A network pickle as their training loop writes it: pickle.dump of dict(training_set_kwargs, G, D, G_ema, augment_pipe)."""
    easydict = sys.modules["dnnlib.util"].EasyDict
    state = authors_state(G) if state is None else state
    data = dict(
        training_set_kwargs=easydict(
            class_name="training.dataset.ImageFolderDataset", path="data/lsun.zip", resolution=32
        ),
        G=record_tree(state, marker),
        D=_Record("Discriminator", marker),
        G_ema=record_tree(state, marker),
        augment_pipe=None,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)


@pytest.fixture
def study(project: Path, micro_dict: dict) -> tuple[Path, Params]:
    """The micro profile with a trained toy row and a released row of SMALL on faces32, scored offline (domain features)."""
    micro = {
        **micro_dict,
        "rows": {
            "toy": {"dataset": "faces32", "table": "test", "generator": TINY},
            "small_released": {"dataset": "faces32", "table": "released", "generator": SMALL, "released": RELEASED},
        },
        "reference": {
            "features": "domain",
            "batch": 64,
            "domain": DomainNetConfig(width=4, epochs=1, batch=32).model_dump(),
        },
        "score": {"num_images": 16, "batch": 8, "upsampled": {"faces32": "faces64"}},
    }
    return project, Params.model_validate(micro)


def _snapshot(root: Path) -> Path:
    return root / paths.run_dir("small_released") / "network-snapshot.pt"


# --- the round trip ------------------------------------------------------------------------------------------


def test_import_round_trips_a_pickle_in_the_authors_structure(study, authors_modules):
    root, params = study
    torch.manual_seed(3)
    G = build_generator(SMALL).eval()
    write_network_pickle(root / RELEASED["pickle"], G, authors_modules)

    info = released.run(params, "small_released", root)

    assert not authors_modules.exists()  # their reconstruction (and the module source) never ran
    payload = load_checkpoint(_snapshot(root), required=("G_ema", "options", "info"))
    for key, value in G.state_dict().items():
        assert torch.equal(payload["G_ema"][key], value), key
    assert info["source"] == "imported" and len(info["sha256"]) == 64
    assert payload["info"]["training_set_kwargs"]["path"] == "data/lsun.zip"
    assert payload["info"]["pickle_name"] == "small.pkl"
    # The imported generator draws what the original draws from the same z.
    loaded, _ = score.load_snapshot_generator(params, "small_released", root)
    z = torch.randn(2, SMALL["z_dim"])
    with torch.no_grad():
        assert torch.allclose(loaded(z), G(z))


def test_imported_snapshot_is_accepted_by_sample_and_score(study, authors_modules):
    root, params = study
    torch.manual_seed(4)
    write_network_pickle(root / RELEASED["pickle"], build_generator(SMALL), authors_modules)
    released.run(params, "small_released", root)
    from stages import properties

    png = properties.sample(params, "small_released", 64, -0.25, 1.25, 2, 0, 1.0, root / "s.png", "cpu")
    assert png.is_file()
    for ds in ("faces32", "faces64"):
        prepare.run(params, ds)
        reference.run(params, ds)
    scored = score.run(params, "small_released", root, progress=False)
    assert scored["source"] == "imported" and np.isfinite(scored["fd_domain"])
    metrics_file = root / paths.score_metrics("small_released")
    assert read_split(metrics_file, paths.details(metrics_file))["truncation_psi"] == 1.0


def test_score_uses_the_published_truncation_of_a_released_row(study):
    _, params = study
    base = params.model_dump()
    base["rows"]["small_released"]["released"]["truncation_psi"] = 0.9
    assert score.row_truncation(Params.model_validate(base), "small_released") == 0.9
    assert score.row_truncation(params, "toy") == params.score.truncation_psi


# --- refusals: nothing written, nothing run -------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused(root: Path, params, match: str, pickle_file: Path | None = None) -> None:
    with pytest.raises(ReleasedPickleError, match=match):
        released.run(params, "small_released", root, pickle_file)
    assert not _snapshot(root).exists() and not (root / paths.train_plots("small_released")).exists()


def test_a_pickle_that_would_run_a_command_is_refused_not_run(study, tmp_path):
    root, params = study
    marker = tmp_path / "pwned"
    evil = root / RELEASED["pickle"]
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps({"G_ema": _RunsCommand(marker)}))
    _refused(root, params, r"global (posix|os|nt)\.system.*refused before anything was called")
    assert not marker.exists()


def test_a_malicious_global_inside_a_persistent_record_is_refused(study, authors_modules, tmp_path):
    root, params = study
    marker = tmp_path / "pwned"
    state = authors_state(build_generator(SMALL))
    tree = record_tree(state, authors_modules)
    tree.children["mapping"].params["evil"] = _RunsCommand(marker)
    path = root / RELEASED["pickle"]
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        pickle.dump({"G_ema": tree, "training_set_kwargs": {}}, f)
    _refused(root, params, r"system")
    assert not marker.exists() and not authors_modules.exists()


def test_foreign_and_truncated_pickles_are_refused(study, authors_modules):
    root, params = study
    path = root / RELEASED["pickle"]
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))  # a pickle of something else
    _refused(root, params, r"holds \['weights'\], not a StyleGAN2-ADA network snapshot")
    path.write_bytes(pickle.dumps(np.arange(3)))  # numpy arrays are no network pickle global
    _refused(root, params, r"numpy")

    write_network_pickle(path, build_generator(SMALL), authors_modules)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    _refused(root, params, r"truncated or damaged")
    assert not authors_modules.exists()


def test_a_pickle_of_another_configuration_lists_every_mismatch(study, authors_modules):
    root, params = study
    state = authors_state(build_generator(SMALL))
    state["synthesis.b64.conv0.weight"] = torch.zeros(16, 16, 1, 1)  # a block of a 64 px generator: not ours
    del state["mapping.fc1.bias"]
    write_network_pickle(root / RELEASED["pickle"], build_generator(SMALL), authors_modules, state)
    _refused(
        root,
        params,
        r"missing in the pickle: mapping\.fc1\.bias; in the pickle but not in our generator: synthesis\.b64\.conv0\.weight",
    )

    state = authors_state(build_generator(SMALL))
    state["synthesis.b8.torgb.bias"] = torch.zeros(4)
    write_network_pickle(root / RELEASED["pickle"], build_generator(SMALL), authors_modules, state)
    _refused(root, params, r"blocks\.1\.torgb\.bias <- synthesis\.b8\.torgb\.bias: shape \(4,\), ours \(3,\)")


def test_an_existing_snapshot_survives_a_refused_import(study, authors_modules):
    root, params = study
    write_network_pickle(root / RELEASED["pickle"], build_generator(SMALL), authors_modules)
    released.run(params, "small_released", root)
    before = _snapshot(root).read_bytes()
    (root / RELEASED["pickle"]).write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ReleasedPickleError):
        released.run(params, "small_released", root)
    assert _snapshot(root).read_bytes() == before


def test_sha256_in_params_must_match(study, authors_modules):
    root, params = study
    write_network_pickle(root / RELEASED["pickle"], build_generator(SMALL), authors_modules)
    base = params.model_dump()
    base["rows"]["small_released"]["released"]["sha256"] = "0" * 64
    _refused(
        root,
        Params.model_validate(base),
        r"has sha256 [0-9a-f]{64}, but rows\.small_released\.released\.sha256 says 0{64}",
    )


# --- absent weights, and rows that are not imported ----------------------------------------------------------


def test_absent_weights_name_the_file_and_where_to_get_them(study):
    root, params = study
    with pytest.raises(
        FileNotFoundError,
        match=r"'data/released/small\.pkl', which does not exist.*download https://example\.org/small\.pkl and save it as 'data/released/small\.pkl'",
    ):
        released.run(params, "small_released", Path("."))
    from pipeline.metrics.scoring import MetricsInputError

    with pytest.raises(
        MetricsInputError,
        match=r"has not been imported.*'data/released/small\.pkl'.*https://example\.org/small\.pkl.*pipeline import --row small_released",
    ):
        score.load_snapshot_generator(params, "small_released", Path("."))


def test_released_rows_are_not_trained_and_trained_rows_not_imported(study):
    root, params = study
    with pytest.raises(ConfigError, match=r"imported, not trained; run `pipeline import --row small_released`"):
        train.run(params, "small_released", root)
    with pytest.raises(ConfigError, match=r"row 'toy' has no `released` section"):
        released.run(params, "toy", root)


def test_a_trained_snapshot_is_not_scored_as_a_released_row(study):
    root, params = study
    g = build_generator(SMALL)
    # What the train stage writes (tests/test_score_stage.py): info = the row as trained.
    save_checkpoint(
        _snapshot(root),
        {
            "G_ema": g.state_dict(),
            "info": row_spec(params, "toy") | {"generator": g.spec.model_dump(mode="json"), "dataset": "faces32"},
        },
    )
    from pipeline.metrics.scoring import MetricsInputError

    with pytest.raises(MetricsInputError, match=r"source: 'trained' there, 'imported'"):
        score.load_snapshot_generator(params, "small_released", root)


def test_read_network_pickle_gives_every_module_record(tmp_path, authors_modules):
    path = tmp_path / "net.pkl"
    write_network_pickle(path, build_generator(SMALL), authors_modules)
    net = read_network_pickle(path)
    assert set(net.modules) == {"G", "D", "G_ema"} and net.modules["G_ema"].class_name == "Generator"
    assert net.training_set_kwargs["resolution"] == 32


def _add_released_row(project: Path, micro_dict: dict) -> None:
    """The micro profile with row small_released (SMALL, imported from RELEASED) as the project's params.yaml."""
    import yaml

    micro_dict["rows"]["small_released"] = {
        "dataset": "faces32",
        "table": "released",
        "generator": SMALL,
        "released": RELEASED,
    }
    (project / "params.yaml").write_text(yaml.safe_dump(micro_dict))


def test_cli_import_and_train_of_a_released_row(project, micro_dict, authors_modules):
    import subprocess

    _add_released_row(project, micro_dict)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=project, capture_output=True, text=True)

    missing = cli("import", "--row", "small_released")
    assert missing.returncode == 2, missing.stderr
    assert "download https://example.org/small.pkl and save it as 'data/released/small.pkl'" in missing.stderr
    write_network_pickle(project / RELEASED["pickle"], build_generator(SMALL), authors_modules)
    # dvc.yaml's train stage runs `pipeline train` for every row: a released row is imported instead.
    done = cli("train", "--row", "small_released", "--restart-on-change")
    assert done.returncode == 0, done.stderr
    assert "imported small_released" in done.stdout and _snapshot(project).is_file()
    assert (project / paths.train_plots("small_released")).is_file()


# --- the paper profile and the tables ------------------------------------------------------------------------


def test_paper_profile_imports_the_released_checkpoints_at_their_published_settings():
    import yaml

    from pipeline.config import parse_params

    paper = parse_params(yaml.safe_load((Path(__file__).parents[1] / "profiles" / "paper.yaml").read_text()))
    settings = {
        name: (
            Path(row.released.pickle).name,
            row.dataset,
            row.released.published_fid,
            row.released.truncation_psi,
            row.generator.upsampling,
        )
        for name, row in paper.rows.items()
        if row.released is not None
    }
    assert settings == {  # universome/inr-gan README: FIDs, and truncation 0.9 / 0.95 "crucial" for the Bedrooms models
        "released_churches256": ("churches.pkl", "lsun_church_256", 4.45, 1.0, "nearest"),
        "released_bedrooms256": ("bedrooms.pkl", "lsun_bedroom_256", 5.71, 0.9, "nearest"),
        "released_ffhq256": ("ffhq.pkl", "ffhq_256", 9.57, 1.0, "nearest"),
        "released_churches256_bil": ("churches-bil.pkl", "lsun_church_256", 4.04, 1.0, "bilinear"),
        "released_bedrooms256_bil": ("bedrooms-bil.pkl", "lsun_bedroom_256", 3.43, 0.95, "bilinear"),
        "released_ffhq256_bil": ("ffhq-bil.pkl", "ffhq_256", 4.95, 1.0, "bilinear"),
    }
    assert paper.rows["released_churches256"].generator.extra_layer_resolutions == ()  # their README: extra_convs: {}
    assert "released_ffhq256" in paper.project.models.values()  # Table 3 (project + kpl) on the released FFHQ model


def test_released_table_puts_published_and_our_fid_beside_trained_rows(study):
    from stages import tables

    root, params = study
    (root / paths.score_metrics("small_released")).parent.mkdir(parents=True)
    (root / paths.score_metrics("small_released")).write_text(json.dumps({"profile": "micro", "fd_domain": 12.3}))
    (root / paths.score_metrics("toy")).write_text(json.dumps({"profile": "micro", "fd_domain": 45.6}))
    text, records = tables._released(params, root)
    assert "| small_released | small.pkl | faces32 | 1.00 | 4.45 | 12.30 | toy: 45.60 |" in text
    assert records[0]["published_fid"] == 4.45 and records[0]["fd_domain"] == 12.3
    base = params.model_dump()
    del base["rows"]["small_released"]
    text, records = tables._released(Params.model_validate(base), root)
    assert "No row of this profile imports one" in text and records == []


def test_train_all_leaves_released_rows_out(project, micro_dict, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from stages import train as train_stage

    _add_released_row(project, micro_dict)
    asked = []
    monkeypatch.setattr(train_stage, "train_many", lambda params_path, names, *a, **k: asked.extend(names) or {})
    assert CliRunner().invoke(app, ["train-all"]).exit_code == 0
    assert "small_released" not in asked and set(asked) == set(micro_dict["rows"]) - {"small_released"}


def test_name_table_speaks_the_authors_vocabulary():
    """Names and shapes of their real G_ema (tests/fixtures, written by their Generator at 256 px, no values): every
    kind of name in it is one the table maps or deliberately ignores, and the table invents none. The block layout
    (which b<r> exist, layers per block) is the conformance work's to match; this pins the naming."""
    import re

    from pipeline.models.released import IGNORED_SUFFIXES, authors_name_table

    fixture = Path(__file__).parent / "fixtures" / "authors_g_ema_256_shapes.json"
    theirs = set(json.loads(fixture.read_text())["state_dict_shapes"])

    def kind(name: str) -> str:
        return re.sub(r"extra_convs\.\d+", "extra_convs.K", re.sub(r"\.b\d+\.", ".bR.", re.sub(r"fc\d+", "fcI", name)))

    with torch.device("meta"):
        G = build_generator({"kind": "inr_gan_sg2", "resolution": 256})
    table = {kind(t) for e in authors_name_table(G, theirs) for t in e.theirs}
    real = {kind(k) for k in theirs if not k.endswith(IGNORED_SUFFIXES)}
    assert real - table == set() and table - real == set()


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear"])
def test_their_real_256_layout_converts_name_for_name_and_shape_for_shape(upsampling):
    """The same fixture, now whole: every name of their 256 px G_ema (inr-gan.yml; -bil has the same names and
    shapes) maps onto our default 256 px generator (the released bedrooms / ffhq rows) with our shapes, nothing of
    theirs left over but the ignored buffers and nothing of ours unfilled (convert_state_dict raises otherwise)."""
    from pipeline.models.released import convert_state_dict

    fixture = Path(__file__).parent / "fixtures" / "authors_g_ema_256_shapes.json"
    shapes = json.loads(fixture.read_text())["state_dict_shapes"]
    spec = {
        "kind": "inr_gan_sg2",
        "resolution": 256,
        "upsampling": upsampling,
        "instance_norm": upsampling == "bilinear",
    }
    with torch.device("meta"):
        G = build_generator(spec)
        theirs = {k: torch.empty(v) for k, v in shapes.items()}
    state = convert_state_dict(G, theirs, "fixture")
    assert set(state) == set(G.state_dict())
    # StyleGAN2's blocks 4..256: b4 (input, coord_fuser) and b8/b16/b32 at 32 px, b64/b128/b256 above it.
    assert {k.split(".")[1] for k in shapes if k.startswith("synthesis.")} == {f"b{2**k}" for k in range(2, 9)}
    assert not any(k.startswith(("synthesis.b8.coord_fuser", "synthesis.b16.coord_fuser")) for k in shapes)
