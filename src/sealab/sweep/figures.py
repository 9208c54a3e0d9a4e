"""The report's figure, one per backbone (sweep.report's numbers): on top, each method's
difference from the baseline per dataset and on average, with its std over seeds as error bar
and a star where the paired test is significant; below, every method's test metric, bars from 0.
Methods keep one order and one colour in every panel and figure; each dataset's ticks name its
metric. Drawn on matplotlib's Agg canvas (no pyplot: no display, no global state)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from sealab.sweep.report import AVERAGE, Report

DPI = 150
MAX_WIDTH_IN = 19.5  # 2925 px at DPI: a page's width, never a strip
MAX_ASPECT = 3.9  # width / height, below 4:1


def method_colours(report: Report) -> dict[str, tuple]:
    """One colour per method of the whole report, by its place in the report's method order."""
    palette = colormaps["tab10"]
    return {method: palette(i % palette.N) for i, method in enumerate(report.methods)}


def figure_size(groups: int, panels: int) -> tuple[float, float]:
    """Inches: wide enough for ``groups`` bar groups, at most MAX_WIDTH_IN wide and MAX_ASPECT:1."""
    width = min(MAX_WIDTH_IN, max(6.4, 2.5 + 0.9 * groups))
    return width, max(3.2 * panels, width / MAX_ASPECT)


def _bars(ax, groups: list[str], methods: list[str], values: dict, colours: dict, stars: dict | None = None) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per method in ``methods``' order;
    ``values[method][group]`` is (height, error) or absent."""
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        cells = [values[method].get(g, (np.nan, np.nan)) for g in groups]
        heights, errors = np.array([c[0] for c in cells]), np.nan_to_num([c[1] for c in cells])
        positions = x - 0.4 + width * (i + 0.5)
        ax.bar(positions, heights, width, yerr=errors, color=colours[method], label=method, capsize=2,
               error_kw={"elinewidth": 0.8})
        for pos, height, error, group in zip(positions, heights, errors, groups):
            if stars and stars[method].get(group):
                ax.annotate("*", (pos, height + np.sign(height) * error), ha="center",
                            va="bottom" if height >= 0 else "top", fontsize=9)
    ax.set_xticks(x)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.axvline(len(groups) - 1.5, color="grey", linewidth=0.6, linestyle=":")  # the datasets | their average


def backbone_figure(report: Report, backbone: str) -> Figure:
    datasets, metrics = report.datasets(backbone), report.metrics(backbone)
    groups = [*datasets, AVERAGE]
    ticks = [f"{d}\n{metrics[d]}" for d in datasets] + [AVERAGE]
    colours, methods, compared = method_colours(report), report.block_methods(backbone), report.compared(backbone)
    panels = 2 if compared else 1
    fig = Figure(figsize=figure_size(len(groups), panels), dpi=DPI, layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    if compared:
        d = report.differences[report.differences["backbone"] == backbone]
        values = {m: {r.dataset: (r.delta, r.delta_std) for r in d[d["method"] == m].itertuples()} for m in compared}
        stars = {m: {r.dataset: r.significant for r in d[d["method"] == m].itertuples()} for m in compared}
        _bars(axes[0], groups, compared, values, colours, stars)
        axes[0].axhline(0, color="black", linewidth=0.8)
        axes[0].margins(y=0.15)  # room for the stars
        axes[0].set_ylabel(f"difference from {report.baseline} (pt)")
        axes[0].set_title(f"difference from {report.baseline}, mean ± std over seeds "
                          f"(* paired t-test p < {report.level:g})", fontsize=10)
    s = report.scores[report.scores["backbone"] == backbone]
    values = {m: {r.dataset: (r.mean, r.std) for r in s[s["method"] == m].itertuples()} for m in methods}
    _bars(axes[-1], groups, methods, values, colours)
    axes[-1].set_ylim(0, 100)
    axes[-1].set_ylabel("test metric (%)")
    axes[-1].set_title("test metric (named under each dataset), mean ± std over seeds", fontsize=10)
    fig.suptitle(backbone)
    axes[-1].set_xticklabels(ticks, fontsize=8)
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(methods), 6),
               fontsize=8)
    return fig


def file_stem(backbone: str) -> str:
    """``figure-vit-small-dino``: letters, digits and dashes only, as LaTeX's includegraphics wants."""
    return "figure-" + re.sub(r"[^A-Za-z0-9-]+", "-", backbone)


def save_figures(report: Report, out: str | Path) -> dict[str, list[Path]]:
    """Each backbone's figure as ``figure-<backbone>.png`` and ``.pdf`` in ``out``."""
    saved = {}
    for backbone in report.backbones:
        fig = backbone_figure(report, backbone)
        paths = [Path(out) / f"{file_stem(backbone)}.{ext}" for ext in ("png", "pdf")]
        for path in paths:
            fig.savefig(path, dpi=DPI)
        saved[backbone] = paths
    return saved
