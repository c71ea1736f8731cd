"""Stage `tables`: compile Tables 1, 2, 4 and the Fig. 8 rank ablation (final scores and the score vs
kimg plot) from the stages' metrics, the paper's numbers in adjacent columns, plus reports/README.md
indexing every report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.data.preview import save_panels
from pipeline.headline import read_split
from pipeline.io import write_text
from pipeline.paper_numbers import (
    OOM,
    TABLE1_FID,
    TABLE1_LABELS,
    TABLE2,
    TABLE2_LABELS,
    TABLE4,
    TABLE4_LABELS,
    paper_row,
)
from pipeline.reporting import fmt, line_plot, markdown_table, mean_std, pool_repeats, write_csv
from pipeline.tracking import log_study
from stages import paths

TABLES = ("table1", "table2", "table4", "fig8", "released")
FIG8_CURVE_COLUMNS = ("row", "dataset", "rank", "step", "kimg", "fd")


def _score(root: Path, row: str, profile: str) -> dict[str, Any] | None:
    """The row's score, or None when there is none or it was scored under another profile (rows share
    names across profiles: a micro run must not appear beside default-profile numbers)."""
    path = root / paths.score_metrics(row)
    score = read_split(path, paths.details(path)) if path.exists() else None
    return score if score is not None and score.get("profile", profile) == profile else None


def _metric_names(params: Params) -> tuple[str, str]:
    return ("fid", "is") if params.reference.features == "inception" else ("fd_domain", "is_domain")


def repeats(params: Params, root: Path = Path(".")) -> dict[str, list[str]]:
    """row -> the row itself and its repeats with other training seeds (Params.repeats_of)."""
    # The details file holds what tells a repeat from a stale file: the profile and the settings fingerprint.
    return params.repeats_of(
        {name: name for name in params.rows}, lambda name: root / paths.details(paths.score_metrics(name))
    )


def _ours(params: Params, root: Path, table: str) -> dict[str, list[dict[str, Any]]]:
    """paper row -> our measured rows of `table` (a paper row can be run on several datasets). A row with
    repeats (other training seeds) is one entry: the mean over the seeds scored, with the standard
    deviation and the per-seed values beside it."""
    fd, is_ = _metric_names(params)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, names in repeats(params, root).items():
        row = params.rows[name]
        if row.table != table:
            continue
        scores = [s for s in (_score(root, n, params.profile) for n in names) if s is not None]
        fds = [s[fd] for s in scores if s.get(fd) is not None]
        iss = [s[is_] for s in scores if s.get(is_) is not None]
        fd_mean, fd_std = mean_std(fds)
        is_mean, is_std = mean_std(iss)
        out.setdefault(paper_row(row.generator, table), []).append(
            {
                "row": name,
                "dataset": row.dataset,
                "resolution": row.generator.resolution,
                "rank": getattr(row.generator, "rank", None),
                "fd": fd_mean,
                "is": is_mean,
                "fd_std": fd_std,
                "is_std": is_std,
                "seeds": len(fds),
                "fd_per_seed": ";".join(fmt(v) for v in fds) if len(fds) > 1 else None,
                "kimg": scores[0].get("kimg") if scores else None,
            }
        )
    return out


def _with_table1(params: Params, root: Path, table: str) -> dict[str, list[dict[str, Any]]]:
    """`table`'s own rows plus the Table 1 rows trained on `table`'s datasets (its baselines, e.g. INR-GAN
    and StyleGAN2 on Bedrooms 256 in Table 2), concatenated per paper row: rows of Table 1 on other
    datasets (Bedrooms 128, FFHQ 1024) belong to other comparisons and stay out."""
    out = _ours(params, root, table)
    datasets = {row.dataset for row in params.rows.values() if row.table == table}
    for key, measured in _ours(params, root, "table1").items():
        out.setdefault(key, []).extend(m for m in measured if m["dataset"] in datasets)
    return {key: measured for key, measured in out.items() if measured}


def _value(m: dict[str, Any], key: str, digits: int = 2) -> str:
    if m[key] is None:
        return "not scored"
    std = m.get(f"{key}_std")
    return (
        f"{fmt(m[key], digits)} +- {fmt(std, digits)} ({m['seeds']} seeds)" if std is not None else fmt(m[key], digits)
    )


def _cell(measured: list[dict[str, Any]], key: str, digits: int = 2) -> str:
    if not measured:
        return "not run in this profile"
    return "; ".join(f"{_value(m, key, digits)} ({m['dataset']})" for m in measured)


def _paper(value: Any) -> str:
    return "-" if value is None else (OOM if value == OOM else fmt(value))


def _header(params: Params, what: str) -> str:
    fd, _ = _metric_names(params)
    lines = [
        f"Profile `{params.profile}`. Our column: `{fd}` of the EMA generator on the row's dataset (dataset in brackets)."
    ]
    if fd == "fd_domain":
        lines.append(
            "**Toy scale:** the default profile trains tiny generators for a few kimg on 32 px synthetic faces; "
            "`fd_domain` is the Frechet distance in the features of a CNN trained on the faces' attributes, a stand-in "
            "for FID that is not comparable to the paper's numbers in value, only in ordering."
        )
    lines.append(
        f"Every number in our columns comes from reports/metrics/score/<row>.json (MLflow run `score/<row>`, "
        f"experiment `{params.tracking.experiment}`). {what}"
    )
    return "\n\n".join(lines) + "\n\n"


def _table1(params: Params, root: Path) -> tuple[str, list[dict]]:
    ours = _ours(params, root, "table1")
    macs_file = root / paths.MACS_METRICS
    macs = read_split(macs_file, paths.details(macs_file)) if macs_file.exists() else {}
    fd, _ = _metric_names(params)
    header = [
        "decoder",
        "GMACs @256 (ours, paper conv.)",
        "params @256 (ours)",
        "FID 128 (paper)",
        "FID 256 (paper)",
        "FID 1024 (paper)",
        f"{fd} (ours)",
    ]
    rows, records = [], []
    for key, label in TABLE1_LABELS.items():
        cost = macs.get(key, {}).get("256", {})
        measured = ours.get(key, [])
        rows.append(
            [
                label,
                fmt(cost.get("gmacs_paper")),
                f"{cost['params'] / 1e6:.2f}M" if cost else "-",
                *(_paper(TABLE1_FID[key][r]) for r in (128, 256, 1024)),
                _cell(measured, "fd"),
            ]
        )
        records += [{"table": "table1", "paper_row": key, **m} for m in measured]
    note = "Cost columns: reports/tables/table1_cost.md (both MAC conventions, 128/256/1024, relative differences)."
    return "# Table 1: progressive ablation\n\n" + _header(params, note) + markdown_table(header, rows), records


def _table2(params: Params, root: Path) -> tuple[str, list[dict]]:
    ours = _with_table1(params, root, "table2")
    fd, _ = _metric_names(params)
    header = ["decoder", "Churches FID (paper)", "Bedrooms FID (paper)", "img/s V100 (paper)", f"{fd} (ours)"]
    rows, records = [], []
    for key, label in TABLE2_LABELS.items():
        measured = ours.get(key, [])
        rows.append([label, *(fmt(v) for v in TABLE2[key]), _cell(measured, "fd")])
        records += [{"table": "table2", "paper_row": key, **m} for m in measured]
    forms = sorted(
        {
            r.generator.fmm_activation
            for r in params.rows.values()
            if paper_row(r.generator, r.table) == "inr_gan_no_fmm_act"
        }
    )
    note = (
        "Generator img/s on our hardware: `pipeline bench` (docs/benchmarks.md). "
        '"Without FMM activation": the paper does not say which form it trained; this profile\'s rows use '
        f"`fmm_activation: {', '.join(forms) or '-'}` (centred: W = W_s * (1 + AB / sqrt(r)), the form of every "
        "non-sigmoid variant in the authors' later code; identity: W = W_s * AB, centred at 0)."
    )
    return "# Table 2: more ablations\n\n" + _header(params, note) + markdown_table(header, rows), records


def _table4(params: Params, root: Path) -> tuple[str, list[dict]]:
    ours = _ours(params, root, "table4")
    fd, is_ = _metric_names(params)
    header = [
        "decoder",
        "LSUN-10 FID (paper)",
        "LSUN-10 IS (paper)",
        "MiniImageNet FID (paper)",
        "MiniImageNet IS (paper)",
        f"{fd} (ours)",
        f"{is_} (ours)",
    ]
    rows, records = [], []
    for key, values in TABLE4.items():
        measured = ours.get(key, [])
        ours_cells = ["-", "-"] if key == "validation set" else [_cell(measured, "fd"), _cell(measured, "is")]
        rows.append([TABLE4_LABELS.get(key, key), *(_paper(v) for v in values), *ours_cells])
        records += [{"table": "table4", "paper_row": key, **m} for m in measured]
    return "# Table 4: multi-class data\n\n" + _header(params, "") + markdown_table(header, rows), records


def _fig8(params: Params, root: Path) -> tuple[str, list[dict]]:
    # The rank rows of Fig. 8 plus Table 1's INR-GAN (rank 10) on the same dataset, grouped by rank.
    fd, _ = _metric_names(params)
    by_rank: dict[int, list[dict[str, Any]]] = {}
    ours = _with_table1(params, root, "fig8")
    for m in [x for key, v in ours.items() if key == "inr_gan" or key.startswith("inr_gan_rank") for x in v]:
        by_rank.setdefault(m["rank"], []).append(m)
    rows = [[str(rank), _cell(m, "fd"), _cell(m, "kimg", 1)] for rank, m in sorted(by_rank.items())]
    records = [{"table": "fig8", **x} for _, m in sorted(by_rank.items()) for x in m]
    curve = [
        {"row": m["row"], "dataset": m["dataset"], "rank": rank, **{k: p[k] for k in ("step", "kimg", "fd")}}
        for rank, ms in sorted(by_rank.items())
        for m in ms
        for p in (_score(root, m["row"], params.profile) or {}).get("curve", [])
    ]
    _write_fig8_curve(root, curve, fd)
    if curve:
        where = (
            f"Our curve ({fd} of the snapshots kept during training, per rank): "
            f"[figures/fig8_rank_curve.png](../figures/fig8_rank_curve.png), data in [plots/fig8_rank_curve.csv](../plots/fig8_rank_curve.csv)."
        )
    else:
        where = (
            "No rank row has a curve yet: list the rows in `score.curve.rows` and set `train.keep_snapshot_every` "
            "(kept snapshots are written while training), then re-train and re-score them."
        )
    text = (
        "# Fig. 8: FMM rank\n\n"
        + _header(
            params,
            "The paper (LSUN Bedroom 256, FID vs kimg): rank > 1 helps clearly, "
            f"gains shrink after rank 10. The table gives the final score per rank. {where}",
        )
        + markdown_table(["FMM rank", f"{fd} (ours)", "kimg"], rows)
    )
    return text, records


def _released(params: Params, root: Path) -> tuple[str, list[dict]]:
    """The authors' released checkpoints (rows with `released`): their published FID, ours of the same
    file, and our trained rows on the same dataset beside them."""
    fd, _ = _metric_names(params)
    header = [
        "row",
        "checkpoint",
        "dataset",
        "psi",
        "FID (published)",
        f"{fd} (ours, same checkpoint)",
        "our trained rows",
    ]
    rows, records = [], []
    for name, row in params.rows.items():
        if row.released is None:
            continue
        score = _score(root, name, params.profile)
        trained = [
            f"{other}: {fmt(s.get(fd)) if s else 'not scored'}"
            for other, cfg in params.rows.items()
            if cfg.released is None and cfg.seed_of is None and cfg.dataset == row.dataset
            for s in [_score(root, other, params.profile)]
        ]
        ours = "not imported/scored" if score is None else fmt(score.get(fd))
        file = Path(row.released.pickle).name
        rows.append(
            [
                name,
                file,
                row.dataset,
                fmt(row.released.truncation_psi),
                fmt(row.released.published_fid),
                ours,
                "; ".join(trained) or "-",
            ]
        )
        records.append(
            {
                "table": "released",
                "row": name,
                "checkpoint": file,
                "dataset": row.dataset,
                "truncation_psi": row.released.truncation_psi,
                "published_fid": row.released.published_fid,
                fd: None if score is None else score.get(fd),
                "sha256": None if score is None else score.get("sha256"),
            }
        )
    if not rows:
        return (
            "# The authors' released checkpoints\n\nNo row of this profile imports one (the paper profile does).\n",
            [],
        )
    note = (
        "Published FID: the authors' README (universome/inr-gan), 50k samples at the truncation psi shown, which our "
        "score uses for these rows. Imported with `pipeline import` (README, 'The authors' released checkpoints')."
    )
    return "# The authors' released checkpoints\n\n" + _header(params, note) + markdown_table(header, rows), records


def _write_fig8_curve(root: Path, curve: list[dict[str, Any]], fd: str) -> None:
    """Fig. 8's plot and its data; written even when empty, as DVC expects every declared output and
    a plot left from an earlier run would show a curve the metrics no longer hold."""
    write_csv(root / paths.FIG8_CURVE_CSV, curve, FIG8_CURVE_COLUMNS)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for p in curve:
        xs, ys = series.setdefault(f"rank {p['rank']} ({p['row']})", ([], []))
        xs.append(p["kimg"])
        ys.append(p["fd"])
    line_plot(
        root / paths.FIG8_CURVE_PNG,
        series,
        xlabel="kimg (thousands of real images shown)",
        ylabel=f"{fd} (ours)",
        title=f"Fig. 8: {fd} vs kimg per FMM rank" + ("" if curve else " (no curve scored yet)"),
    )


def _first(measured: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any] | None:
    """The first scored entry of a paper row (the default profile has one dataset per row)."""
    return next((m for m in measured.get(key, []) if m["fd"] is not None), None)


def _verdict(a: float, sa: float | None, b: float, sb: float | None, digits: int = 2) -> str:
    """Whether a < b holds: beyond the combined standard deviation sqrt(sa^2 + sb^2) of the seeds, in
    direction only, or not at all; with one seed only the direction can be stated."""
    if a >= b:
        return "does not hold"
    if sa is None or sb is None:
        return "holds in direction (one seed: no spread to compare with)"
    noise = (sa**2 + sb**2) ** 0.5
    f = f"{{:.{digits}f}}" if digits >= 0 else "{:.1e}"
    if b - a > noise:
        return f"holds (difference {f.format(b - a)} > combined std {f.format(noise)})"
    return f"direction only (difference {f.format(b - a)} within the combined std {f.format(noise)})"


def _compare(better: dict[str, Any] | None, worse: dict[str, Any] | None) -> tuple[str, str]:
    """(verdict, numbers) for the claim that `better` has the lower score (_verdict)."""
    if better is None or worse is None:
        return "not measured", "-"
    return (
        _verdict(better["fd"], better.get("fd_std"), worse["fd"], worse.get("fd_std")),
        f"{_value(better, 'fd')} vs {_value(worse, 'fd')}",
    )


def _kpl_results(params: Params, root: Path) -> dict[str, dict[str, Any]]:
    """Table 3 model -> KPL values pooled over its repeats with other seeds (pool_repeats)."""
    models = params.project.models if params.project else {}
    metrics = lambda model: root / paths.kpl_metrics(model)  # noqa: E731
    out = {}
    for base, names in params.repeats_of(models, metrics).items():
        results = [json.loads(metrics(n).read_text()) for n in names if metrics(n).is_file()]
        results = [r for r in results if r.get("profile", params.profile) == params.profile]
        if results:
            out[base] = pool_repeats(results, ("kpl_z", "kpl_w", "kpl_random"))
    return out


def _kpl_value(r: dict[str, Any], key: str) -> str:
    std = r.get(f"{key}_std")
    return f"{r[key]:.2e}" + (f" +- {std:.1e} ({r['seeds']} seeds)" if std is not None else "")


def findings(params: Params, root: Path = Path(".")) -> str:
    """The 'findings at toy scale' section: each claim of the paper this profile can test, the measured
    numbers (mean +- std over seeds where rows have repeats) and whether the claim holds here."""
    fd, _ = _metric_names(params)
    t1, t2, f8 = _ours(params, root, "table1"), _with_table1(params, root, "table2"), _with_table1(params, root, "fig8")
    claims: list[tuple[str, str, str]] = []
    steps = list(TABLE1_LABELS)[:5]
    for before, after in zip(steps[:-1], steps[1:]):
        verdict, numbers = _compare(_first(t1, after), _first(t1, before))
        claims.append(
            (f"Table 1: {TABLE1_LABELS[after]} improves on {TABLE1_LABELS[before].lstrip('+ ')}", verdict, numbers)
        )
    inr, sg2 = _first(t1, "inr_gan"), _first(t1, "stylegan2")
    if inr and sg2:
        gap = (inr["fd"] - sg2["fd"]) / sg2["fd"]
        claims.append(
            (
                "Table 1: INR-GAN is within reach of StyleGAN2 (paper: FID "
                f"{TABLE1_FID['inr_gan'][256]} vs {TABLE1_FID['stylegan2'][256]} on LSUN Bedroom 256, "
                f"{TABLE1_FID['inr_gan'][1024]} vs {TABLE1_FID['stylegan2'][1024]} on FFHQ 1024)",
                f"INR-GAN {'worse' if gap > 0 else 'better'} by {abs(gap) * 100:.0f}% of StyleGAN2's {fd}",
                f"{_value(inr, 'fd')} vs {_value(sg2, 'fd')}",
            )
        )
    ranks = {
        m["rank"]: m
        for key, ms in f8.items()
        if key == "inr_gan" or key.startswith("inr_gan_rank")
        for m in ms
        if m["fd"] is not None
    }
    main = inr["rank"] if inr else None  # INR-GAN's own rank (10 in the paper)
    if 1 in ranks and main in ranks and main != 1:
        verdict, numbers = _compare(ranks[main], ranks[1])
        claims.append((f"Fig. 8: FMM rank {main} beats rank 1", verdict, numbers))
        top = max(ranks)
        if top > main:
            gain_low, gain_high = ranks[1]["fd"] - ranks[main]["fd"], ranks[main]["fd"] - ranks[top]["fd"]
            shrinks = gain_low > 0 and abs(gain_high) < gain_low
            claims.append(
                (
                    f"Fig. 8: gains shrink after rank {main}",
                    "holds" if shrinks else "does not hold",
                    f"rank 1 -> {main}: {gain_low:+.2f}, rank {main} -> {top}: {gain_high:+.2f} (a drop in {fd} is a gain)",
                )
            )
    verdict, numbers = _compare(_first(t2, "inr_gan"), _first(t2, "inr_gan_no_fmm_act"))
    claims.append(("Table 2: FMM without its activation is worse", verdict, numbers))
    kpl = _kpl_results(params, root)
    ik, sk = kpl.get("inr_gan", {}), kpl.get("stylegan2", {})  # keyed by row: the default profile's Table 3 pair
    if ik.get("kpl_z") is not None and sk.get("kpl_z") is not None:
        claims.append(
            (
                "Table 3: KPL(Z) of INR-GAN is below StyleGAN2's (paper 6.0e-05 vs 2.1e-04)",
                _verdict(ik["kpl_z"], ik.get("kpl_z_std"), sk["kpl_z"], sk.get("kpl_z_std"), digits=-1),
                f"{_kpl_value(ik, 'kpl_z')} vs {_kpl_value(sk, 'kpl_z')}",
            )
        )
        if ik.get("kpl_random") is not None and sk.get("kpl_random") is not None:
            ratio = ik["kpl_random"] / sk["kpl_random"]
            claims.append(
                (
                    "Table 3: KPL(random) about equal (paper 4.7e-04 vs 4.6e-04)",
                    "holds (within 25%)" if 0.8 <= ratio <= 1.25 else f"does not hold (ratio {ratio:.2f})",
                    f"{_kpl_value(ik, 'kpl_random')} vs {_kpl_value(sk, 'kpl_random')}",
                )
            )
    seeds = max((m["seeds"] for ms in t1.values() for m in ms), default=0)
    lines = [
        "## Findings at toy scale",
        "",
        f"Computed by the `tables` stage from the score and KPL metrics of this profile (lower `{fd}` is better); "
        + (
            f"rows with repeats report mean +- std over up to {seeds} training seeds (`pipeline profile {params.profile} --seeds`). "
            if seeds > 1
            else "one training seed per row: differences smaller than the seed-to-seed spread go unnoticed "
            f"(`pipeline profile {params.profile} --seeds` adds repeats). "
        )
        + "A claim that does not hold here is reported as such: at toy scale the paper's orderings need not appear.",
        "",
        markdown_table(["claim of the paper", "here", f"numbers ({fd})"], [list(c) for c in claims]),
    ]
    return "\n".join(lines)


def run(params: Params, root: Path = Path(".")) -> dict[str, str]:
    """Write every table (Markdown + CSV) and the reports index; return table name -> Markdown."""
    texts = {}
    for name, build in (
        ("table1", _table1),
        ("table2", _table2),
        ("table4", _table4),
        ("fig8", _fig8),
        ("released", _released),
    ):
        text, records = build(params, root)
        write_text(root / paths.table_md(name), text)
        write_csv(root / paths.table_csv(name), records)
        texts[name] = text
        if name in TABLE_TITLES:  # the released rows' samples are the authors' models: no figure of ours
            _samples_figure(params, root, name)
    write_text(root / paths.REPORTS / "README.md", _index(params) + "\n" + findings(params, root))
    log_study(params, root)  # the study's summary run in MLflow: these tables, also as its description
    return texts


TABLE_TITLES = {
    "table1": "Table 1: progressive ablation",
    "table2": "Table 2: FMM activation, StyleGAN2 architecture, bilinear upsampling",
    "table4": "Table 4: multi-class data",
    "fig8": "Fig. 8: FMM rank",
}


def _samples_figure(params: Params, root: Path, table: str) -> None:
    """The sample grids (stage score) of `table`'s rows side by side, each labelled with its paper row, our
    row and its score: what the table's numbers look like."""
    measured = _with_table1(params, root, table) if table in ("table2", "fig8") else _ours(params, root, table)
    fd, _ = _metric_names(params)
    labels = {"table1": TABLE1_LABELS, "table2": TABLE2_LABELS, "table4": TABLE4_LABELS}.get(table, {})
    panels = [
        (
            f"{_paper_label(table, labels, key, m)}\n{m['row']}\n{fd} {_short(m)}",
            root / paths.samples_png(m["row"]),
        )
        for key, rows in sorted(measured.items(), key=lambda item: _figure_order(table, labels, item[0], item[1]))
        for m in rows
        if _in_figure(table, labels, key) and (root / paths.samples_png(m["row"])).is_file()
    ]
    title = f"{TABLE_TITLES[table]}: samples of each row (seed-0 run, {params.profile} profile)"
    save_panels(root / paths.table_samples_png(table), panels, title)


def _in_figure(table: str, labels: dict[str, str], key: str) -> bool:
    """The paper rows the table itself shows (as its Markdown does): Table 2 takes only INR-GAN and StyleGAN2
    of Table 1's rows, Fig. 8 only the INR-GAN rank rows."""
    if table == "fig8":
        return key == "inr_gan" or key.startswith("inr_gan_rank")
    return not labels or key in labels


def _figure_order(table: str, labels: dict[str, str], key: str, rows: list[dict[str, Any]]) -> tuple:
    """The table's order: its paper rows as listed (Fig. 8: by rank)."""
    if table == "fig8":
        return (rows[0].get("rank") or 0,)
    return (list(labels).index(key) if key in labels else len(labels),)


def _paper_label(table: str, labels: dict[str, str], key: str, m: dict[str, Any]) -> str:
    return f"FMM rank {m['rank']}" if table == "fig8" else labels.get(key, key)


def _short(m: dict[str, Any]) -> str:
    """A row's score for a figure label: mean +- std over seeds, one decimal."""
    if m["fd"] is None:
        return "not scored"
    return f"{m['fd']:.1f}" + (f" +- {m['fd_std']:.1f} ({m['seeds']} seeds)" if m.get("fd_std") is not None else "")


def _index(params: Params) -> str:
    return f"""# Reports (profile `{params.profile}`)

Written by `dvc repro` (stage `tables` and the stages it reads); versioned in git so the results of the
committed profile can be read without running anything. Every number is computed by the pipeline.

| report | what |
|---|---|
| [tables/table1.md](tables/table1.md) | Table 1: progressive ablation, our score beside the paper's FID |
| [tables/table1_cost.md](tables/table1_cost.md) | Table 1 cost columns: #params and GMACs (paper convention and true count) |
| [tables/table2.md](tables/table2.md) | Table 2: FMM activation, StyleGAN2 architecture, bilinear upsampling |
| [tables/table3_kpl.md](tables/table3_kpl.md) | Table 3: keypoint prediction loss in Z and W space |
| [tables/table4.md](tables/table4.md) | Table 4: multi-class data (paper profile only) |
| [tables/fig8.md](tables/fig8.md) | Fig. 8: FMM rank, final scores |
| [tables/released.md](tables/released.md) | the authors' released checkpoints: published FID beside ours of the same file (paper profile) |
| [figures/fig8_rank_curve.png](figures/fig8_rank_curve.png) | Fig. 8: score vs kimg per FMM rank (data: plots/fig8_rank_curve.csv) |
| [figures/fig9_gmacs.png](figures/fig9_gmacs.png) | Fig. 9: GMACs of lower-resolution images |
| figures/tables/&lt;table&gt;_samples.png | each table's rows' samples side by side, labelled with row and score |
| figures/properties/&lt;row&gt;/ | Figs. 2/10, 3, 5, 17 per INR row (`properties.rows`): extrapolation, super-resolution, interpolation in parameter vs pixel space, Fourier frequencies (numbers: metrics/properties/); inr_gan_sg2 rows the first two |
| figures/prepare/ | a grid of prepared images per dataset |
| figures/project/ | real test images and their Z/W-space reconstructions |
| metrics/ | every stage's metrics (`dvc metrics show`) |
| plots/ | training curves, Fig. 8 and Fig. 9 data (`dvc plots show`) |

Sample grids of each trained row are in runs/<row>/samples/ (DVC outputs, not in git) and in the row's
MLflow run (`pipeline ui`).
"""
