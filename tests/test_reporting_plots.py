"""pipeline.reporting.line_plot: line styles per series and a legend title that explains them (Fig. 9)."""

from __future__ import annotations

from pipeline import reporting


def test_line_plot_styles_and_legend_title(tmp_path, monkeypatch) -> None:
    drawn = {}

    def keep(fig, path, dpi=None):
        ax = fig.axes[0]
        drawn["lines"] = {line.get_label(): (line.get_linestyle(), line.get_color()) for line in ax.get_lines()}
        drawn["legend"] = ax.get_legend().get_title().get_text()

    monkeypatch.setattr(reporting, "save_figure", keep)
    reporting.line_plot(
        tmp_path / "f.png",
        {"g (paper)": ([1, 2], [1, 2]), "g (true)": ([1, 2], [2, 3])},
        xlabel="x",
        ylabel="y",
        title="t",
        styles={"g (paper)": {"color": "C0", "linestyle": "-"}, "g (true)": {"color": "C0", "linestyle": "--"}},
        legend_title="solid: paper's count, dashed: true count",
    )
    assert drawn["lines"]["g (paper)"][0] == "-" and drawn["lines"]["g (true)"][0] == "--"
    assert drawn["lines"]["g (paper)"][1] == drawn["lines"]["g (true)"][1]  # one colour per generator
    assert drawn["legend"] == "solid: paper's count, dashed: true count"
