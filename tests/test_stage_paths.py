"""dvc.yaml declares exactly the paths the stage code writes (stages/paths.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    assert outs == {
        str(paths.prepared_dir(key)),
        str(paths.prepare_preview(key)),
        str(paths.details(paths.prepare_metrics(key))),
    }
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
        str(paths.details(paths.MACS_METRICS)),
    }
    assert _declared(stage, "metrics") == {str(paths.MACS_METRICS)}


def test_tables_paths() -> None:
    from stages.tables import TABLES

    expected = (
        {str(paths.table_md(t)) for t in TABLES}
        | {str(paths.table_csv(t)) for t in TABLES}
        | {str(paths.REPORTS / "README.md")}
    )
    figures = {str(paths.FIG8_CURVE_PNG), str(paths.FIG8_CURVE_CSV), str(paths.table_samples_png("x").parent)}
    assert _declared(STAGES["tables"], "outs") == expected | figures


def test_properties_paths() -> None:
    outs = {o.replace("${item}", "ROW") for o in _declared(STAGES["properties"], "outs")}
    assert outs == {str(paths.properties_dir("ROW")), str(paths.details(paths.properties_metrics("ROW")))}
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


# Modules whose changes do not change what a stage computes: tracking (MLflow), progress bars, file writing,
# device choice and the params schema (params themselves are declared as params).
NOT_DEPS = {"pipeline.tracking", "pipeline.progress", "pipeline.io", "pipeline.config", "pipeline.devices"}


def _imported_pipeline_modules(source: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            found.add(node.module)
    return found


def _module_file(module: str) -> str:
    path = REPO / Path(*module.split("."))
    return str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(REPO))


def test_each_stage_depends_on_the_library_code_its_module_imports() -> None:
    # A stage that runs library code DVC does not know about is not re-run when that code changes.
    missing = {}
    for name, stage in STAGES.items():
        deps = {next(iter(d)) if isinstance(d, dict) else d for d in stage.get("do", stage).get("deps", [])}
        for module_file in sorted(d for d in deps if d.startswith("stages/") and d.endswith(".py")):
            for module in _imported_pipeline_modules(REPO / module_file) - NOT_DEPS:
                wanted = _module_file(module)
                if not any(wanted == d or wanted.startswith(d.rstrip("/") + "/") for d in deps):
                    missing.setdefault(name, set()).add(wanted)
    assert not missing, f"dvc.yaml: stages miss deps on the library files their module imports: {missing}"


def test_no_stage_imports_another_stage() -> None:
    # Shared helpers live in the library (or stages/paths.py): a stage importing another made its DVC deps
    # incomplete and tied the stages' code together.
    import ast

    offenders = []
    for module_file in sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(module_file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "stages":
                offenders += [f"{module_file.name}: stages.{a.name}" for a in node.names if a.name != "paths"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                if node.module != "stages.paths":
                    offenders.append(f"{module_file.name}: {node.module}")
    assert not offenders, offenders


def test_the_library_never_imports_stages() -> None:
    import ast

    offenders = []
    for module_file in sorted((REPO / "pipeline").rglob("*.py")):
        if module_file.name == "cli.py":
            continue  # the CLI runs the stages
        for node in ast.walk(ast.parse(module_file.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stages":
                offenders.append(str(module_file.relative_to(REPO)))
    assert not offenders, offenders


def test_every_metrics_file_has_its_details_file_as_a_plain_output() -> None:
    # Headline numbers in `metrics`, the rest of the record beside them (pipeline/headline.py): a details file
    # declared as metrics would bring its timings and hashes back into `dvc exp show` and `dvc metrics diff`.
    for name, stage in STAGES.items():
        body = stage.get("do", stage)
        outs = _declared(stage, "outs")
        for metrics in _declared(stage, "metrics"):
            assert str(paths.details(Path(metrics))) in outs, f"stage {name}: {metrics} has no details output"
        assert not any(m.startswith("reports/details") for m in _declared(stage, "metrics")), name
        cached = [
            o for o in body.get("outs", []) if isinstance(o, dict) and next(iter(o)).startswith("reports/details")
        ]
        assert all(next(iter(o.values())) == {"cache": False} for o in cached), f"stage {name}: details stay in git"


def test_details_path_of_a_metrics_file() -> None:
    assert paths.details(Path("reports/metrics/score/inr_gan.json")) == Path("reports/details/score/inr_gan.json")
    assert paths.details(Path("/x/reports/metrics/macs.json")) == Path("/x/reports/details/macs.json")
    with pytest.raises(ValueError, match="not under reports/metrics"):
        paths.details(Path("reports/tables/table1.md"))
