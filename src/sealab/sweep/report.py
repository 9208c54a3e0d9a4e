"""The paper's table from a sweep: one block per backbone, datasets as columns (each headed with
its metric) plus their average, methods as rows (mean +- std over seeds), each method's difference
from a baseline with a paired test over seeds, win/tie/loss counts, a "comparable to fine-tuning"
count where the sweep holds ``finetune``, and one headline sentence per backbone.

``sealab-summary DIR --report [--baseline linear]`` writes report.md, report.tex, report.csv (the
numbers, one per row) and the figures (sweep.figures). ``--baseline control`` takes each method's
differences from its own runs' control heads (recorded in each run's metrics.json), paired seed by
seed, instead of another method's runs. Each method's variant (e.g. SeA's eta) is
the one ``--select`` chooses on validation (summary.chosen_variants): test data never picks it.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sealab.fileio import atomic_write_bytes
from sealab.sweep.summary import chosen_variants, selected_runs

BASELINE = "linear"
CONTROL = "control"  # the baseline that is each run's own control head, not a method
FINETUNE = "finetune"
AVERAGE = "Average"
LEVEL = 0.05  # of the paired test
TOLERANCE = 1.0  # points: "comparable to fine-tuning" is within max(this, fine-tuning's seed std)
METRIC_NAMES = {"top1": "top-1", "mean_per_class": "mean per-class", "map11": "11-pt mAP"}
PAPER_NAMES = {"sea": "SeA", "sea_faithful": "SeA (faithful)", FINETUNE: "fine-tuning"}
HEADLINE_METHOD = "sea"  # the method the headline is about, when the sweep holds it


def metric_name(primary_metric: str) -> str:
    """``test/mean_per_class`` -> ``mean per-class``."""
    name = primary_metric.split("/", 1)[-1]
    return METRIC_NAMES.get(name, name)


def method_order(methods: list[str], baseline: str) -> list[str]:
    """One order for every block and figure (and so one colour per method): the baseline, the
    other methods by name, fine-tuning last."""
    rest = sorted(set(methods) - {baseline, FINETUNE})
    return [m for m in [baseline] if m in methods] + rest + [m for m in [FINETUNE] if m in methods]


@dataclass
class Report:
    """The numbers of the table, in points (percent), one row per cell:

    - ``scores``: backbone, dataset (or ``Average``), metric, method, mean, std, n (seeds);
    - ``differences``: backbone, dataset (or ``Average``), method, delta, delta_std, pairs (seeds
      both ran), p (paired t-test; NaN below two pairs or when every pair differs alike),
      significant;
    - ``comparable``: backbone, dataset, method, comparable (to fine-tuning), empty without it;
    - ``chosen``: the variant of each method, dataset and backbone chosen on validation (None:
      no validation score to choose on).
    """

    scores: pd.DataFrame
    differences: pd.DataFrame
    comparable: pd.DataFrame
    chosen: pd.DataFrame
    baseline: str
    methods: list[str]
    level: float = LEVEL

    @property
    def backbones(self) -> list[str]:
        return sorted(self.scores["backbone"].unique())

    def datasets(self, backbone: str) -> list[str]:
        scores = self.scores[self.scores["backbone"] == backbone]
        return sorted(set(scores["dataset"]) - {AVERAGE})

    def metrics(self, backbone: str) -> dict[str, str]:
        scores = self.scores[(self.scores["backbone"] == backbone) & (self.scores["dataset"] != AVERAGE)]
        return scores.groupby("dataset")["metric"].agg(lambda m: " / ".join(sorted(set(m)))).to_dict()

    def block_methods(self, backbone: str) -> list[str]:
        present = set(self.scores.loc[self.scores["backbone"] == backbone, "method"])
        return [m for m in self.methods if m in present]

    def compared(self, backbone: str) -> list[str]:
        """The methods with a difference row in this block."""
        present = set(self.differences.loc[self.differences["backbone"] == backbone, "method"])
        return [m for m in self.methods if m in present]

    def wins_ties_losses(self, backbone: str, method: str) -> tuple[int, int, int]:
        """Datasets where the difference from the baseline is significantly positive, not
        significant (or untestable), significantly negative."""
        d = self.differences
        d = d[(d["backbone"] == backbone) & (d["method"] == method) & (d["dataset"] != AVERAGE)]
        wins = int((d["significant"] & (d["delta"] > 0)).sum())
        losses = int((d["significant"] & (d["delta"] < 0)).sum())
        return wins, len(d) - wins - losses, losses

    def comparable_count(self, backbone: str, method: str) -> tuple[int, int]:
        """(k, N): comparable to fine-tuning on k of the N datasets both ran."""
        c = self.comparable
        c = c[(c["backbone"] == backbone) & (c["method"] == method)]
        return int(c["comparable"].sum()), len(c)

    def headline(self, backbone: str) -> str:
        """One sentence in the paper's words, e.g. "SeA is +2.1 pt over linear on average (wins 3,
        ties 8, losses 0 of 11); comparable to fine-tuning on 6 of 11."."""
        compared = [m for m in self.compared(backbone) if m != FINETUNE]
        if not compared:
            return (f"No method to compare with {self.baseline} on {backbone}"
                    f"{'' if self.baseline in self.block_methods(backbone) else f' ({self.baseline} did not run)'}.")
        method = HEADLINE_METHOD if HEADLINE_METHOD in compared else compared[0]
        d = self.differences
        average = d[(d["backbone"] == backbone) & (d["method"] == method) & (d["dataset"] == AVERAGE)].iloc[0]
        if math.isnan(average["delta"]):
            return f"{PAPER_NAMES.get(method, method)} and {self.baseline} share no seed on {backbone}: no difference."
        wins, ties, losses = self.wins_ties_losses(backbone, method)
        n_datasets = len(self.datasets(backbone))
        over = "" if wins + ties + losses == n_datasets else f" over {wins + ties + losses} of {n_datasets} datasets"
        gap = f"{average['delta']:+.1f} pt over" if average["delta"] >= 0 else f"{-average['delta']:.1f} pt below"
        baseline = "its control head (no augmentation)" if self.baseline == CONTROL else self.baseline
        sentence = (f"{PAPER_NAMES.get(method, method)} is {gap} {baseline} on average{over} "
                    f"(wins {wins}, ties {ties}, losses {losses} of {wins + ties + losses})")
        k, n = self.comparable_count(backbone, method)
        return sentence + (f"; comparable to fine-tuning on {k} of {n}." if n else ".")

    def numbers(self) -> pd.DataFrame:
        """Every cell's numbers in one table (report.csv, the wandb table): scores, then the
        difference from the baseline and, with fine-tuning, whether it is comparable."""
        keys = ["backbone", "dataset", "method"]
        table = self.scores.merge(self.differences, on=keys, how="left")
        if len(self.comparable):
            table = table.merge(self.comparable, on=keys, how="left")
        order = {m: i for i, m in enumerate(self.methods)}
        return table.sort_values(keys, key=lambda c: c.map(order) if c.name == "method" else c,
                                 ignore_index=True)


def _mean_std_n(values: pd.Series) -> dict[str, float]:
    values = values.dropna()
    return {"mean": values.mean(), "std": values.std(), "n": len(values)}


def _paired(method: pd.Series, baseline: pd.Series, level: float) -> dict[str, float]:
    """The difference over the seeds both have: mean, std, pairs, and the two-sided paired
    t-test's p (NaN below two pairs, and where every pair differs by the same amount)."""
    pairs = pd.concat([method, baseline], axis=1, keys=["m", "b"]).dropna()
    diff = pairs["m"] - pairs["b"]
    p = math.nan
    if len(pairs) >= 2 and diff.std() > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(pairs["m"], pairs["b"]).pvalue)
    return {"delta": diff.mean(), "std": diff.std(), "pairs": len(pairs), "p": p,
            "significant": bool(p < level)}


def _seed_averages(per_seed: pd.DataFrame, datasets: list[str]) -> pd.Series:
    """Each seed's mean over ``datasets``, for the seeds that ran them all."""
    return per_seed[datasets].dropna().mean(axis=1)


def _baselines(block: pd.DataFrame, per_seed: pd.DataFrame, baseline: str) -> dict[str, pd.DataFrame]:
    """Per method, its baseline's scores (seed x dataset): the baseline method's runs, or with
    ``CONTROL`` the method's own runs' control heads."""
    if baseline != CONTROL:
        methods = per_seed.index.get_level_values("method").unique()
        return {m: per_seed.loc[baseline] for m in methods if baseline in methods and m != baseline}
    controls = block.dropna(subset=["control_score"]).pivot_table(
        index=["method", "seed"], columns="dataset", values="control_score", aggfunc="mean")
    return {m: controls.loc[m] for m in controls.index.get_level_values("method").unique()}


def build_report(runs: pd.DataFrame, baseline: str = BASELINE, level: float = LEVEL) -> Report:
    """The report's numbers from ``summary.collect``'s runs, each method's variant chosen on
    validation."""
    chosen = chosen_variants(runs)
    selected = selected_runs(runs).assign(score=lambda f: 100 * f["primary"].astype(float),
                                          control_score=lambda f: 100 * f["control_primary"].astype(float))
    methods = method_order(list(selected["method"].unique()), baseline)
    scores, differences, comparable = [], [], []
    for backbone, block in selected.groupby("backbone"):
        metrics = block.groupby("dataset")["primary_metric"].agg(lambda m: " / ".join(sorted(set(map(metric_name, m)))))
        # (method, seed) x dataset; a seed run twice (merged sweeps) counts once, its mean
        per_seed = block.pivot_table(index=["method", "seed"], columns="dataset", values="score", aggfunc="mean")
        ran = {m: [d for d in per_seed.columns if per_seed.loc[m][d].notna().any()]
               for m in per_seed.index.get_level_values("method").unique()}
        baselines = _baselines(block, per_seed, baseline)
        for method, datasets in ran.items():
            seeds = per_seed.loc[method]
            for dataset in datasets:
                scores.append({"backbone": backbone, "dataset": dataset, "metric": metrics[dataset],
                               "method": method, **_mean_std_n(seeds[dataset])})
            averages = _seed_averages(seeds, datasets)
            scores.append({"backbone": backbone, "dataset": AVERAGE, "metric": "", "method": method,
                           "mean": seeds[datasets].mean().mean(), "std": averages.std(), "n": len(averages)})
            if FINETUNE in ran and method != FINETUNE:
                ft = per_seed.loc[FINETUNE]
                for d in (d for d in datasets if d in ran[FINETUNE]):
                    ours, theirs = _mean_std_n(seeds[d]), _mean_std_n(ft[d])
                    slack = max(TOLERANCE, 0.0 if math.isnan(theirs["std"]) else theirs["std"])
                    comparable.append({"backbone": backbone, "dataset": d, "method": method,
                                       "comparable": bool(ours["mean"] >= theirs["mean"] - slack)})
            if method not in baselines:
                continue
            base = baselines[method]
            common = [d for d in datasets if d in base.columns and base[d].notna().any()]
            cells = [{"dataset": d, **_paired(seeds[d], base[d], level)} for d in common]
            cells = [c for c in cells if c["pairs"]]  # no seed in common: nothing to pair
            average = _paired(_seed_averages(seeds, common), _seed_averages(base, common), level)
            average["delta"] = np.mean([c["delta"] for c in cells]) if cells else math.nan
            for cell in [*cells, {"dataset": AVERAGE, **average}]:
                differences.append({"backbone": backbone, "method": method, **cell})
    columns = {"differences": ["backbone", "method", "dataset", "delta", "std", "pairs", "p", "significant"],
               "comparable": ["backbone", "dataset", "method", "comparable"]}
    differences = pd.DataFrame(differences, columns=columns["differences"]).rename(
        columns={"std": "delta_std"})
    return Report(scores=pd.DataFrame(scores), differences=differences,
                  comparable=pd.DataFrame(comparable, columns=columns["comparable"]),
                  chosen=chosen, baseline=baseline, methods=methods, level=level)


# ---- rendering: each block's cells and notes as plain text, written as Markdown or LaTeX ----

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "≈": r"$\approx$", "<": "$<$", ">": "$>$"}


def latex_text(text: str) -> str:
    """``text`` as LaTeX typesets it in a standard article: its specials escaped, its symbols in
    math mode."""
    return re.sub("|".join(map(re.escape, LATEX_SPECIALS)), lambda m: LATEX_SPECIALS[m.group()], text)


def _score(cell: pd.Series, seeds: int) -> str:
    text = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["n"] > 1 else "")
    return text + (f" (n={cell['n']})" if cell["n"] < seeds else "")


def _difference(cell: pd.Series, seeds: int) -> str:
    if math.isnan(cell["delta"]):
        return ""
    text = f"{cell['delta']:+.2f}".replace("-", "−") + (f" ± {cell['delta_std']:.2f}" if cell["pairs"] > 1 else "")
    return text + ("*" if cell["significant"] else "") + (f" (n={cell['pairs']})" if cell["pairs"] < seeds else "")


def block_grid(report: Report, backbone: str) -> tuple[list[str], list[str], list[list[str]]]:
    """The block's column heads (datasets, Average, W/T/L), their metrics, and its rows: a
    label then its cells."""
    datasets, metrics = report.datasets(backbone), report.metrics(backbone)
    columns = [*datasets, AVERAGE]
    scores = report.scores[report.scores["backbone"] == backbone].set_index(["method", "dataset"])
    seeds = int(scores["n"].max())
    rows = [[method, *(_score(scores.loc[(method, c)], seeds) if (method, c) in scores.index else "" for c in columns),
             ""] for method in report.block_methods(backbone)]
    diffs = report.differences[report.differences["backbone"] == backbone].set_index(["method", "dataset"])
    for method in report.compared(backbone):
        rows.append([f"Δ {method} − {report.baseline}",
                     *(_difference(diffs.loc[(method, c)], seeds) if (method, c) in diffs.index else ""
                       for c in columns),
                     "/".join(map(str, report.wins_ties_losses(backbone, method)))])
    comparable = report.comparable[report.comparable["backbone"] == backbone].set_index(["method", "dataset"])
    for method in report.block_methods(backbone):
        k, n = report.comparable_count(backbone, method)
        if n:
            cells = [("yes" if comparable.loc[(method, d), "comparable"] else "no")
                     if (method, d) in comparable.index else "" for d in datasets]
            rows.append([f"{method} ≈ {FINETUNE}", *cells, f"{k} of {n}", ""])
    return [*columns, f"W/T/L vs {report.baseline}"], [metrics[d] for d in datasets] + ["", ""], rows


def notes(report: Report, backbone: str) -> list[str]:
    """What the block's numbers are, the test and its level, the rules of W/T/L and of
    "comparable", and the variants chosen on validation."""
    seeds = int(report.scores.loc[report.scores["backbone"] == backbone, "n"].max())
    lines = [
        "Cells: test metric (named under each dataset) in percent, mean ± std over seeds of each method's "
        f"variant chosen on validation (never on test); (n=k) where a cell has fewer than {seeds} seeds. "
        f"{AVERAGE}: mean over the method's datasets (± std over seeds of each seed's mean over them).",
        f"Δ: method minus {report.baseline} in points, mean ± std over the seeds both ran; * p < {report.level:g}, "
        "two-sided paired t-test over seeds (scipy.stats.ttest_rel; no test below 2 seed pairs). "
        f"{AVERAGE}: mean of the datasets' Δ; its test pairs each seed's mean over the datasets. "
        "W/T/L: datasets where Δ is significantly positive / not significant / significantly negative.",
    ]
    if report.baseline == CONTROL:
        lines.append(f"{CONTROL}: each run's own control head, the same head trained in the same pass without "
                     "augmentation (same initialisation, same batches; method.control), so Δ is what the "
                     "augmentation alone changed, paired run by run.")
    if any(report.comparable_count(backbone, m)[1] for m in report.block_methods(backbone)):
        lines.append(f"≈ {FINETUNE} (comparable to fine-tuning): mean at least fine-tuning's mean minus the "
                     f"larger of {TOLERANCE:g} pt and fine-tuning's std over seeds.")
    chosen = report.chosen[report.chosen["backbone"] == backbone]
    picked = chosen.dropna(subset=["variant"])
    picked = picked[picked["variant"] != ""]
    if len(picked):
        by_variant = picked.groupby(["method", "variant"])["dataset"].agg(lambda d: ", ".join(sorted(d)))
        lines.append("Chosen on validation: " + "; ".join(f"{m} {v} ({d})" for (m, v), d in by_variant.items()) + ".")
    missing = chosen[chosen["variant"].isna()]
    if len(missing):
        lines.append("Left out, no validation score to choose a variant on (fit_on=trainval): "
                     + ", ".join(f"{m} on {d}" for m, d in zip(missing["method"], missing["dataset"])) + ".")
    return lines


def _markdown_cell(text: str) -> str:
    return text.replace("|", "/")  # a | would split the cell


def to_markdown(report: Report) -> str:
    parts = [f"# Report: test metrics (%), each method's variant chosen on validation, vs {report.baseline}\n"]
    for backbone in report.backbones:
        heads, metrics, rows = block_grid(report, backbone)
        lines = ["| method | " + " | ".join(f"{h} ({m})" if m else h for h, m in zip(heads, metrics)) + " |",
                 "|" + "---|" * (len(heads) + 1)]
        lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in rows]
        parts.append(f"## {backbone}\n\n{report.headline(backbone)}\n\n" + "\n".join(lines) + "\n\n"
                     + "\n".join(f"- {note}" for note in notes(report, backbone)) + "\n")
    return "\n".join(parts)


def to_latex(report: Report, figures: dict[str, str] | None = None) -> str:
    """A standalone article (only graphicx), one table per backbone, each followed by its figure
    when ``figures`` names its PDF."""
    body = []
    for backbone in report.backbones:
        heads, metrics, rows = block_grid(report, backbone)
        spec = "l|" + "c" * (len(heads) - 2) + "|c|c"
        lines = [r"\hline", " & ".join(map(latex_text, ["method", *heads])) + r" \\",
                 " & ".join(map(latex_text, ["", *metrics])) + r" \\", r"\hline",
                 *(" & ".join(map(latex_text, row)) + r" \\" for row in rows), r"\hline"]
        body += [rf"\section*{{{latex_text(backbone)}}}", latex_text(report.headline(backbone)), "",
                 r"\begin{table}[ht]", r"\centering",
                 rf"\resizebox{{\textwidth}}{{!}}{{\begin{{tabular}}{{{spec}}}", *lines, r"\end{tabular}}", "",
                 r"\smallskip\footnotesize", *(f"{latex_text(note)}\n" for note in notes(report, backbone)),
                 r"\end{table}"]
        if figures and backbone in figures:
            body += [r"\begin{figure}[ht]", r"\centering",
                     rf"\includegraphics[width=\textwidth]{{{figures[backbone]}}}",
                     rf"\caption{{{latex_text(backbone)}: difference from {latex_text(report.baseline)} "
                     r"(mean and std over seeds) and test metric per method.}", r"\end{figure}"]
        body.append(r"\clearpage")
    return "\n".join([r"\documentclass{article}", r"\usepackage{graphicx}", r"\begin{document}", *body,
                      r"\end{document}", ""])


def write_report(runs: pd.DataFrame, out: str | Path, baseline: str = BASELINE) -> tuple[Report, list[Path]]:
    """report.md, report.tex, report.csv and the figures (PNG and PDF per backbone) into ``out``."""
    from sealab.sweep.figures import save_figures  # matplotlib only where figures are drawn

    report, out = build_report(runs, baseline), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(report, out)
    pdfs = {backbone: paths[-1].name for backbone, paths in figures.items()}
    written = {"report.md": to_markdown(report), "report.tex": to_latex(report, pdfs)}
    for name, text in written.items():
        atomic_write_bytes(out / name, lambda p, text=text: p.write_text(text))
    atomic_write_bytes(out / "report.csv", lambda p: report.numbers().to_csv(p, index=False))
    return report, [*(out / name for name in [*written, "report.csv"]), *(p for ps in figures.values() for p in ps)]


def describe(report: Report, written: list[Path]) -> str:
    """What a report run prints: the files it wrote and each backbone's headline."""
    lines = [f"Report in {written[0].parent}: {', '.join(p.name for p in written)}"]
    return "\n".join([*lines, *(f"- {backbone}: {report.headline(backbone)}" for backbone in report.backbones)])
