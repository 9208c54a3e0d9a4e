"""The paper's table from a sweep (sealab-summary --report): a small sweep of fabricated records
(two backbones, two datasets with different metrics, linear / SeA with two etas / fine-tuning,
three seeds, one seed missing), its numbers checked against pandas and scipy computed here from
the fabricated values, its Markdown and LaTeX, its figure, and what goes to wandb."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats

from sealab import loggers
from sealab.sweep.callback import SweepSummary
from sealab.sweep.figures import DPI, backbone_figure, figure_size
from sealab.sweep.report import AVERAGE, build_report, latex_text, to_latex, to_markdown
from sealab.sweep.summary import collect, main

METRICS = {"cars": "top1", "pets": "mean_per_class"}
# (backbone, dataset, method, eta) -> test metric in % per seed (None: that seed did not run).
# SeA's eta=0.8 is far better on test but worse on validation: the report must keep eta=0.3.
TEST = {
    ("rn50", "cars", "linear", None): [70.0, 71.0, 72.0],
    ("rn50", "pets", "linear", None): [80.0, 80.5, 81.0],
    ("rn50", "cars", "sea", 0.3): [72.0, 73.1, 73.9],  # +2.0, +2.1, +1.9: significant
    ("rn50", "pets", "sea", 0.3): [80.4, 80.2, None],  # +0.4, -0.3: not significant, seed 2 missing
    ("rn50", "cars", "sea", 0.8): [90.0, 90.0, 90.0],
    ("rn50", "pets", "sea", 0.8): [95.0, 95.0, 95.0],
    ("rn50", "cars", "finetune", None): [74.0, 74.5, 75.0],  # SeA's 73.0 is more than 1 pt below
    ("rn50", "pets", "finetune", None): [81.0, 81.2, 80.8],  # SeA's 80.3 is within 1 pt
    ("vit", "cars", "linear", None): [60.0, 61.0, 62.0],
    ("vit", "cars", "sea", 0.3): [61.0, 61.0, 61.0],  # +1, 0, -1
}
VAL_GAP = {0.3: 5.0, 0.8: 30.0, None: 2.0}  # validation = test - gap (points)


def fabricate(root):
    """One metrics.json per run, as a run writes it (see tests/sweep/test_summary.py): its
    overrides and a resolved config holding the settings that make it what it is."""
    for (backbone, dataset, method, eta), values in TEST.items():
        for seed, value in enumerate(values):
            if value is None:
                continue
            run = root / f"{backbone}-{dataset}-{method}-{eta}-{seed}"
            run.mkdir(parents=True)
            method_cfg = {"name": method, "epochs": 3, **({"augmenter": {"eta": eta}} if eta else {})}
            metric = METRICS[dataset]
            (run / "metrics.json").write_text(json.dumps({
                "dataset": dataset, "backbone": backbone, "method": method, "seed": seed,
                "metrics": {f"test/{metric}": value / 100, f"val/{metric}": (value - VAL_GAP[eta]) / 100},
                "primary_metric": f"test/{metric}", "fit_seconds": 1.0,
                "overrides": [f"dataset={dataset}", f"backbone={backbone}", f"method={method}", f"seed={seed}",
                              *([f"method.augmenter.eta={eta}"] if eta else [])],
                "config": {"seed": seed, "norm": "l2", "fit_on": "train", "paths": {"root_dir": str(root)},
                           "dataset": {"name": dataset}, "backbone": {"name": backbone}, "method": method_cfg}}))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    fabricate(root)
    return root


@pytest.fixture(scope="module")
def report(sweep):
    return build_report(collect(sweep))


@pytest.fixture(scope="module")
def truth():
    """The fabricated runs SeA's validation choice keeps (eta=0.3 everywhere: its mean
    validation score is higher), one row per seed."""
    rows = [{"backbone": b, "dataset": d, "method": m, "eta": eta, "seed": s, "test": v}
            for (b, d, m, eta), values in TEST.items() for s, v in enumerate(values) if v is not None]
    runs = pd.DataFrame(rows)
    return runs[runs["eta"].isna() | (runs["eta"] == 0.3)]


def expected_difference(truth, backbone, method, dataset):
    """Mean and std of the seed-matched differences from linear, and scipy's paired t-test."""
    def seeds(m):
        cell = truth[(truth["backbone"] == backbone) & (truth["method"] == m) & (truth["dataset"] == dataset)]
        return cell.set_index("seed")["test"]

    both = pd.concat([seeds(method), seeds("linear")], axis=1, keys=["m", "b"], join="inner")
    diff = both["m"] - both["b"]
    return diff.mean(), diff.std(), len(diff), stats.ttest_rel(both["m"], both["b"]).pvalue


def row(frame, **where):
    mask = np.logical_and.reduce([frame[key] == value for key, value in where.items()])
    (index,) = np.flatnonzero(mask)
    return frame.iloc[index]


def test_cells_are_mean_std_and_n_over_seeds_of_the_variant_chosen_on_validation(report, truth):
    expected = truth.groupby(["backbone", "dataset", "method"])["test"].agg(["mean", "std", "count"])
    cells = report.scores[report.scores["dataset"] != AVERAGE].set_index(["backbone", "dataset", "method"])
    assert sorted(cells.index) == sorted(expected.index)
    for key, want in expected.iterrows():
        got = cells.loc[key]
        assert (got["mean"], got["n"]) == (pytest.approx(want["mean"]), want["count"]), key
        assert got["std"] == pytest.approx(want["std"]), key
    assert cells.loc[("rn50", "cars", "sea"), "mean"] == pytest.approx(73.0)  # not eta=0.8's 90
    assert set(cells["metric"]) == {"top-1", "mean per-class"}
    assert cells.loc[("rn50", "pets", "linear"), "metric"] == "mean per-class"


def test_the_average_is_over_datasets_and_its_std_over_the_seeds_that_ran_them_all(report, truth):
    for (backbone, method), runs in truth.groupby(["backbone", "method"]):
        per_seed = runs.pivot(index="seed", columns="dataset", values="test")
        got = row(report.scores, backbone=backbone, method=method, dataset=AVERAGE)
        assert got["mean"] == pytest.approx(per_seed.mean().mean())
        complete = per_seed.dropna().mean(axis=1)
        assert got["n"] == len(complete)
        assert got["std"] == pytest.approx(complete.std())
    assert row(report.scores, backbone="rn50", method="sea", dataset=AVERAGE)["n"] == 2  # seed 2 lacks pets


def test_differences_are_seed_matched_with_a_paired_t_test(report, truth):
    for backbone, dataset, method in [("rn50", "cars", "sea"), ("rn50", "pets", "sea"), ("rn50", "cars", "finetune"),
                                      ("rn50", "pets", "finetune"), ("vit", "cars", "sea")]:
        mean, std, pairs, p = expected_difference(truth, backbone, method, dataset)
        got = row(report.differences, backbone=backbone, dataset=dataset, method=method)
        assert (got["delta"], got["delta_std"], got["pairs"], got["p"]) == (
            pytest.approx(mean), pytest.approx(std), pairs, pytest.approx(p)), (backbone, dataset, method)
        assert got["significant"] == (p < 0.05)
    assert row(report.differences, backbone="rn50", dataset="cars", method="sea")["significant"]
    assert not row(report.differences, backbone="rn50", dataset="pets", method="sea")["significant"]
    assert row(report.differences, backbone="rn50", dataset="pets", method="sea")["pairs"] == 2
    assert set(report.differences["method"]) == {"sea", "finetune"}  # never the baseline itself


def test_the_average_difference_pairs_each_seeds_mean_over_the_datasets(report, truth):
    rn50 = truth[truth["backbone"] == "rn50"]
    averages = {m: rn50[rn50["method"] == m].pivot(index="seed", columns="dataset", values="test").dropna().mean(axis=1)
                for m in ("sea", "linear")}
    both = pd.concat(averages, axis=1, join="inner")
    got = row(report.differences, backbone="rn50", dataset=AVERAGE, method="sea")
    cars, pets = (expected_difference(truth, "rn50", "sea", d)[0] for d in ("cars", "pets"))
    assert got["delta"] == pytest.approx((cars + pets) / 2)
    assert got["pairs"] == 2
    assert got["delta_std"] == pytest.approx((both["sea"] - both["linear"]).std())
    assert got["p"] == pytest.approx(stats.ttest_rel(both["sea"], both["linear"]).pvalue)


def test_constant_differences_are_not_tested_and_count_as_ties(tmp_path):
    # Every seed +1 pt: the t statistic is undefined (scipy gives NaN); no star, a tie.
    for seed in range(3):
        for method, value in (("linear", 0.5 + seed / 100), ("sea", 0.51 + seed / 100)):
            run = tmp_path / f"{method}{seed}"
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps({
                "dataset": "a", "backbone": "bb", "method": method, "seed": seed,
                "metrics": {"test/top1": value, "val/top1": value}, "primary_metric": "test/top1",
                "fit_seconds": 1.0, "overrides": []}))
    report = build_report(collect(tmp_path))
    got = row(report.differences, dataset="a", method="sea")
    assert got["delta"] == pytest.approx(1.0) and math.isnan(got["p"]) and not got["significant"]
    assert report.wins_ties_losses("bb", "sea") == (0, 1, 0)
    assert report.headline("bb") == "SeA is +1.0 pt over linear on average (wins 0, ties 1, losses 0 of 1)."
    assert build_report(collect(tmp_path), baseline="sea").headline("bb") == (
        "linear is 1.0 pt below sea on average (wins 0, ties 1, losses 0 of 1).")


def test_win_tie_loss_comparable_and_the_headline(report, truth):
    assert report.wins_ties_losses("rn50", "sea") == (1, 1, 0)
    assert report.wins_ties_losses("vit", "sea") == (0, 1, 0)
    assert report.comparable_count("rn50", "sea") == (1, 2)  # pets only
    assert report.comparable_count("rn50", "linear") == (1, 2)
    delta = np.mean([expected_difference(truth, "rn50", "sea", d)[0] for d in ("cars", "pets")])
    assert report.headline("rn50") == (f"SeA is {delta:+.1f} pt over linear on average (wins 1, ties 1, losses 0 "
                                       "of 2); comparable to fine-tuning on 1 of 2.")
    assert report.headline("vit") == "SeA is +0.0 pt over linear on average (wins 0, ties 1, losses 0 of 1)."


def test_markdown_blocks_columns_rows_and_notes(report, truth):
    text = to_markdown(report)
    rn50, vit = text.split("## rn50")[1].split("## vit")
    assert "| method | cars (top-1) | pets (mean per-class) | Average | W/T/L vs linear |" in rn50
    assert "| method | cars (top-1) | Average | W/T/L vs linear |" in vit
    assert [line.split(" | ")[0] for line in rn50.splitlines() if line.startswith("| ") and "---" not in line] == [
        "| method", "| linear", "| sea", "| finetune", "| Δ sea − linear", "| Δ finetune − linear",
        "| linear ≈ finetune", "| sea ≈ finetune"]
    sea = truth[(truth["backbone"] == "rn50") & (truth["method"] == "sea")]
    cars, pets = (sea[sea["dataset"] == d]["test"] for d in ("cars", "pets"))
    mean, std, _, _ = expected_difference(truth, "rn50", "sea", "cars")
    assert (f"| sea | {cars.mean():.2f} ± {cars.std():.2f} | {pets.mean():.2f} ± {pets.std():.2f} (n=2) |"
            in rn50)
    assert f"| Δ sea − linear | +{mean:.2f} ± {std:.2f}* | " in rn50 and "| 1/1/0 |" in rn50
    assert "| sea ≈ finetune | no | yes | 1 of 2 |  |" in rn50
    assert "scipy.stats.ttest_rel" in rn50 and "* p < 0.05" in rn50 and "paired t-test" in rn50
    assert "larger of 1 pt and fine-tuning's std" in rn50
    assert "Chosen on validation: sea method.augmenter.eta=0.3 (cars, pets)." in rn50
    assert "eta=0.8" not in text and "finetune" not in vit
    assert report.headline("rn50") in rn50


def check_latex(text: str) -> None:
    """What pdflatex would refuse in a standard article: unbalanced environments, braces or math,
    unescaped specials, characters beyond ASCII, table rows with the wrong number of cells."""
    assert text.startswith("\\documentclass{article}") and text.isascii()
    assert re.findall(r"\\usepackage\{(\w+)\}", text) == ["graphicx"]
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([a-z*]+)\}", text):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    plain = re.sub(r"\\[\\{}$&%#_]", "", text)  # escaped specials (and \\ line ends) out of the way
    assert plain.count("{") == plain.count("}")
    for line in plain.splitlines():
        assert line.count("$") % 2 == 0, line
        assert not re.search(r"[%#_^~]", line.replace("^{*}", "")), line
    for spec, body in re.findall(r"\\begin\{tabular\}\{([lcr|]+)\}(.*?)\\end\{tabular\}", text, re.S):
        columns = len(spec.replace("|", ""))
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", r)) == columns - 1 for r in rows)


def test_latex_is_a_standard_article_with_escaped_names(report, tmp_path):
    text = to_latex(report, {"rn50": "figure-rn50.pdf"})
    check_latex(text)
    assert text.count("\\begin{tabular}") == 2 and text.count("\\includegraphics") == 1
    assert "$\\Delta$ sea $-$ linear & +" in text and "mean per-class" in text
    assert latex_text("vit_b & 50% #1 {x} ~ ^ \\ ±") == (
        "vit\\_b \\& 50\\% \\#1 \\{x\\} \\textasciitilde{} \\textasciicircum{} \\textbackslash{} $\\pm$")
    if shutil.which("pdflatex"):  # not installed here: the checks above stand in for it
        (tmp_path / "report.tex").write_text(to_latex(report))
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "report.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]


def bars(ax):
    """{method: [(x, height, colour), ...]} of an axes' bar containers."""
    return {c.get_label(): [(p.get_x(), p.get_height(), p.get_facecolor()) for p in c.patches]
            for c in ax.containers if isinstance(c, BarContainer)}


def test_figure_differences_scores_metric_labels_and_fixed_colours(report, truth):
    fig = backbone_figure(report, "rn50")
    top, bottom = fig.axes
    ticks = [t.get_text() for t in bottom.get_xticklabels()]
    assert ticks == ["cars\ntop-1", "pets\nmean per-class", "Average"]
    assert bottom.get_ylim()[0] == 0 and bottom.get_ylim()[1] == 100  # scores from 0
    differences, scores = bars(top), bars(bottom)
    assert list(differences) == ["sea", "finetune"] and list(scores) == ["linear", "sea", "finetune"]
    mean = expected_difference(truth, "rn50", "sea", "pets")[0]
    assert differences["sea"][1][1] == pytest.approx(mean)  # pets, sea minus linear
    colour = {m: {c for _, _, c in scores[m]} for m in scores}
    assert all(len(c) == 1 for c in colour.values()) and len({c.pop() for c in colour.values()}) == 3
    assert {c for _, _, c in differences["sea"]} == {scores["sea"][0][2]}
    # the same method keeps its colour in another backbone's figure
    assert bars(backbone_figure(report, "vit").axes[-1])["sea"][0][2] == scores["sea"][0][2]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    width, height = Image.open(buffer).size
    assert width <= 3000 and width <= 4 * height


@pytest.mark.parametrize("groups", [2, 12, 40])
@pytest.mark.parametrize("panels", [1, 2])
def test_figures_fit_a_page_at_any_number_of_datasets(groups, panels):
    width, height = figure_size(groups, panels)
    assert width * DPI <= 3000 and width <= 4 * height


def test_the_command_writes_report_files_and_prints_headlines(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(sweep), "--report", "--out", str(out)])
    printed = capsys.readouterr().out
    names = {"report.md", "report.tex", "report.csv", "figure-rn50.png", "figure-rn50.pdf", "figure-vit.png",
             "figure-vit.pdf", "summary.md", "runs.csv"}
    assert {p.name for p in out.iterdir()} == names
    assert "- rn50: SeA is +1.0 pt over linear on average" in printed
    check_latex((out / "report.tex").read_text())
    assert "\\includegraphics[width=\\textwidth]{figure-vit.pdf}" in (out / "report.tex").read_text()
    assert Image.open(out / "figure-rn50.png").size[0] <= 3000
    numbers = pd.read_csv(out / "report.csv")
    assert numbers["mean"].dtype == float and numbers["p"].dtype == float
    main([str(sweep), "--report", "--baseline", "finetune", "--out", str(tmp_path / "ft")])
    assert "Δ sea − finetune" in (tmp_path / "ft" / "report.md").read_text()


class FakeWandb(types.ModuleType):
    """The part of wandb the summary run uses, recording what is logged."""

    def __init__(self):
        super().__init__("wandb")
        self.logged, self.inits = {}, []
        fake = self

        class Table:
            def __init__(self, columns, data):
                self.columns, self.data = columns, data

        class Image:
            def __init__(self, path):
                self.path = path

        class Run:
            def log(self, items):
                fake.logged.update(items)

            def finish(self):
                pass

        self.Table, self.Image, self.Run = Table, Image, Run

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self.Run()


def test_a_wandb_sweep_ends_with_its_report_numeric_cells_and_figures(sweep, tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("atexit.register", lambda hook: None)
    logger = {"_target_": "lightning.pytorch.loggers.wandb.WandbLogger", "project": "p", "offline": True}
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}, "logger": logger})
    callback = SweepSummary()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    assert (root / "report.md").is_file() and fake.inits[0]["name"] == "summary"
    table = fake.logged["report"]
    numbers = pd.read_csv(root / "report.csv")
    assert table.columns == list(numbers.columns)
    cells = pd.DataFrame(table.data, columns=table.columns)
    sea = cells[(cells["backbone"] == "rn50") & (cells["dataset"] == "cars") & (cells["method"] == "sea")].iloc[0]
    assert isinstance(sea["mean"], float) and sea["mean"] == pytest.approx(73.0)
    assert isinstance(sea["significant"], bool) and sea["significant"]
    assert cells[cells["method"] == "linear"]["delta"].isna().all()  # empty cells are None, not "nan"
    assert not any(isinstance(value, float) and math.isnan(value) for r in table.data for value in r)
    figures = {key: image.path for key, image in fake.logged.items() if key.startswith("figure/")}
    assert figures == {"figure/rn50": str(root / "figure-rn50.png"), "figure/vit": str(root / "figure-vit.png")}
    assert "summary" in fake.logged  # the sweep's table as before


def test_a_sweep_without_wandb_writes_no_report(sweep, tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    monkeypatch.setattr("atexit.register", lambda hook: None)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}, "logger": {"_target_": "x.CSVLogger"}})
    callback = SweepSummary()
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)
    assert (root / "summary.md").is_file() and not (root / "report.md").exists()
    assert not loggers.is_wandb(config.logger)


def test_variants_without_a_validation_score_are_left_out_and_named(tmp_path):
    # fit_on=trainval keeps no val split: SeA's two etas cannot be chosen between, so SeA is not
    # reported rather than reported by its best test score; linear, one variant, needs no choice.
    for seed in range(2):
        for method, eta, value in (("linear", None, 0.70), ("sea", 0.3, 0.72), ("sea", 0.8, 0.90)):
            run = tmp_path / f"{method}{eta}{seed}"
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps({
                "dataset": "a", "backbone": "bb", "method": method, "seed": seed,
                "metrics": {"test/top1": value + seed / 100}, "primary_metric": "test/top1", "fit_seconds": 1.0,
                "overrides": [], "config": {"fit_on": "trainval", "method": {"name": method, "eta": eta}}}))
    report = build_report(collect(tmp_path))
    assert list(report.scores["method"].unique()) == ["linear"] and report.differences.empty
    text = to_markdown(report)
    assert "Left out, no validation score to choose a variant on (fit_on=trainval): sea on a." in text
    assert "No method to compare with linear on bb." in text and "90.00" not in text


def test_runs_that_share_no_seed_are_not_paired(tmp_path):
    for method, seed in (("linear", 0), ("sea", 1)):
        run = tmp_path / method
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "a", "backbone": "bb", "method": method, "seed": seed,
            "metrics": {"test/top1": 0.5, "val/top1": 0.5}, "primary_metric": "test/top1", "fit_seconds": 1.0,
            "overrides": []}))
    report = build_report(collect(tmp_path))
    assert report.headline("bb") == "SeA and linear share no seed on bb: no difference."
    assert "| Δ sea − linear |  |  | 0/0/0 |" in to_markdown(report)


# (dataset, method) -> per seed (test %, its control's test %): each method against its own runs'
# controls. Dataset "c" is a grid run per seed (eta 0.3 chosen on val) whose heads' controls differ.
CONTROLLED = {("a", "sea"): [(80.0, 78.0), (81.0, 80.0), (83.0, 80.0)],
              ("b", "sea"): [(70.0, 70.0), (71.0, 70.0), (72.0, 71.5)],
              ("a", "noise"): [(79.0, 79.0), (80.0, 79.5), (81.0, 80.0)],
              ("a", "linear"): [(60.0, None), (61.0, None), (62.0, None)]}
GRID_HEADS = {0.3: [(75.0, 74.0), (76.0, 74.0), (77.0, 76.5)], 0.8: [(90.0, 50.0)] * 3}  # eta 0.8: worse on val


def controlled_record(dataset, method, seed, test, control, **extra):
    def metrics(value):
        return {"test/top1": value / 100, "val/top1": (value - 1) / 100}
    return {"dataset": dataset, "backbone": "bb", "method": method, "seed": seed, "metrics": metrics(test),
            **({"control": metrics(control)} if control is not None else {}), "primary_metric": "test/top1",
            "fit_seconds": 1.0, "overrides": [f"method={method}", f"seed={seed}"], **extra}


def test_the_control_baseline_pairs_each_run_with_its_own_control_head(tmp_path, capsys):
    for (dataset, method), values in CONTROLLED.items():
        for seed, (test, control) in enumerate(values):
            (tmp_path / f"{dataset}-{method}-{seed}").mkdir()
            (tmp_path / f"{dataset}-{method}-{seed}" / "metrics.json").write_text(
                json.dumps(controlled_record(dataset, method, seed, test, control)))
    for seed in range(3):
        heads = [{"values": {"augmenter.eta": eta}, "metrics": {"test/top1": h[seed][0] / 100,
                                                                 "val/top1": (h[seed][0] - (1 if eta == 0.3 else 40)) / 100},
                  "control": {"test/top1": h[seed][1] / 100, "val/top1": h[seed][1] / 100}}
                 for eta, h in GRID_HEADS.items()]
        (tmp_path / f"c-sea-{seed}").mkdir()
        (tmp_path / f"c-sea-{seed}" / "metrics.json").write_text(json.dumps(controlled_record(
            "c", "sea", seed, *GRID_HEADS[0.3][seed], grid=heads)))
    report = build_report(collect(tmp_path), baseline="control")
    expected = {**CONTROLLED, ("c", "sea"): GRID_HEADS[0.3]}
    for (dataset, method), values in expected.items():
        if method == "linear":
            continue
        ours, theirs = np.array(values).T
        got = row(report.differences, backbone="bb", dataset=dataset, method=method)
        assert (got["delta"], got["delta_std"], got["pairs"], got["p"]) == (
            pytest.approx(np.mean(ours - theirs)), pytest.approx(np.std(ours - theirs, ddof=1)), 3,
            pytest.approx(stats.ttest_rel(ours, theirs).pvalue)), (dataset, method)
    assert set(report.differences["method"]) == {"sea", "noise"}  # linear recorded no control
    sea = [np.mean([values[s][0] - values[s][1] for values in (CONTROLLED[("a", "sea")], CONTROLLED[("b", "sea")],
                                                               GRID_HEADS[0.3])]) for s in range(3)]
    assert row(report.differences, backbone="bb", dataset=AVERAGE, method="sea")["delta"] == pytest.approx(np.mean(sea))
    assert report.headline("bb").startswith(f"SeA is {np.mean(sea):+.1f} pt over its control head (no augmentation) "
                                            "on average")
    main([str(tmp_path), "--report", "--baseline", "control", "--out", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| Δ sea − control |" in markdown and "| Δ noise − control |" in markdown
    assert "control: each run's own control head" in markdown
    assert "- bb: SeA is" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "'control': each run's own control head" in " ".join(capsys.readouterr().out.split())
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["control_primary"].notna().sum() == len(runs) - 3  # every row but linear's
