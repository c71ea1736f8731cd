"""dvc.yaml declares exactly the paths the stage code writes (stages/paths.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from stages import paths

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _declared(stage: dict, kind: str) -> set[str]:
    body = stage.get("do", stage)  # foreach stages keep their definition under `do`
    return {next(iter(o)) if isinstance(o, dict) else o for o in body.get(kind, [])}


def test_prepare_paths() -> None:
    key = "KEY"
    outs = {o.replace("${key}", key) for o in _declared(STAGES["prepare"], "outs")}
    assert outs == {str(paths.prepared_dir(key)), str(paths.prepare_preview(key))}
    assert {m.replace("${key}", key) for m in _declared(STAGES["prepare"], "metrics")} == {
        str(paths.prepare_metrics(key))
    }


def test_macs_paths() -> None:
    stage = STAGES["macs"]
    assert _declared(stage, "outs") == {
        str(paths.TABLE1_COST_MD),
        str(paths.TABLE1_COST_CSV),
        str(paths.FIG9_PNG),
        str(paths.FIG9_CSV),
    }
    assert _declared(stage, "metrics") == {str(paths.MACS_METRICS)}


def test_tables_paths() -> None:
    from stages.tables import TABLES

    expected = (
        {str(paths.table_md(t)) for t in TABLES}
        | {str(paths.table_csv(t)) for t in TABLES}
        | {str(paths.REPORTS / "README.md")}
    )
    assert _declared(STAGES["tables"], "outs") == expected | {str(paths.FIG8_CURVE_PNG), str(paths.FIG8_CURVE_CSV)}


def test_properties_paths() -> None:
    outs = {o.replace("${item}", "ROW") for o in _declared(STAGES["properties"], "outs")}
    assert outs == {str(paths.properties_dir("ROW"))}
    assert {m.replace("${item}", "ROW") for m in _declared(STAGES["properties"], "metrics")} == {
        str(paths.properties_metrics("ROW"))
    }


def test_kpl_declares_its_summary_not_the_per_model_folder() -> None:
    # DVC empties a stage's outputs before running it: with reports/metrics/kpl declared, re-running kpl
    # for the plain profile's two models deleted the seed repeats' KPL files (Table 3 lost its seeds).
    stage = STAGES["kpl"]
    assert _declared(stage, "metrics") == {str(paths.KPL_SUMMARY)}
    declared = _declared(stage, "outs") | _declared(stage, "metrics")
    assert not any(str(paths.kpl_metrics("m")).startswith(d) for d in declared)
    assert str(paths.KPL_SUMMARY) in {next(iter(d)) if isinstance(d, dict) else d for d in STAGES["tables"]["deps"]}


def test_dvcignore_keeps_bytecode_out_of_code_dependencies() -> None:
    # DVC hashes every file of a directory dependency and ignores .gitignore; a written __pycache__
    # changed pipeline/models' hash and made a fresh clone's `dvc status` report changed code.
    import pathspec

    spec = pathspec.PathSpec.from_lines("gitignore", (REPO / ".dvcignore").read_text().splitlines())
    assert spec.match_file("pipeline/models/__pycache__/fmm.cpython-311.pyc")
    assert spec.match_file("stages/__pycache__/train.cpython-311.pyc")
    assert not spec.match_file("pipeline/models/fmm.py") and not spec.match_file("data/prepared/faces32/images.npy")
