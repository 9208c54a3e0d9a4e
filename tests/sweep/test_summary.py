"""The sweep summary: one row per method variant (the settings that change numbers and differ
among a method's runs, read from each record's resolved config), mean +- std over seeds."""

import json

import pandas as pd
import pytest
import yaml

from sealab.sweep.outcome import FAILED, RESUMED
from sealab.sweep.summary import (
    collect,
    main,
    results_table,
    select_on_validation,
    summarize,
    variant,
)


def nested(dotted):
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    tree = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


GROUPS = ("dataset", "backbone", "method", "experiment", "debug", "logger", "local")


def write_run(root, name, dataset, method, seed, value, overrides=(), settings=None, val=0.01, grid=None):
    """A metrics.json as a run writes it: its overrides, and its resolved config (a few keys of each
    role, with real paths below ``root``) holding what they and ``settings`` set."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "norm": "l2", "fit_on": "train", "num_threads": None, "resume": False,
              "paths.root_dir": str(root), "paths.data_dir": f"{root}/data", "paths.output_dir": str(run),
              "dataset.name": dataset, "dataset.root": f"{root}/data/{dataset}", "method.name": method,
              "method.epochs": 3, "method.grid": None, "extract.cache_dtype": "float16",
              "extract.batch_size": 128, "trainer.enable_progress_bar": True, "trainer.default_root_dir": str(run),
              "logger.save_dir": str(run), **({"method.augmenter.eta": 0.8} if method == "sea" else {})}
    for override in overrides:
        key, _, text = override.lstrip("+").partition("=")
        if key not in GROUPS:  # a group's choice lands in the keys its file sets
            config[key] = yaml.safe_load(text)
    config.update(settings or {})
    metrics = {"test/top1": value}
    if val is not None:
        metrics["val/top1"] = value - val
    (run / "metrics.json").write_text(json.dumps({
        "dataset": dataset, "backbone": "bb", "method": method, "seed": seed, "metrics": metrics,
        "primary_metric": "test/top1", "fit_seconds": 1.0, "config": nested(config), **({"grid": grid} if grid else {}),
        "overrides": [f"method={method}", f"seed={seed}", *overrides]}))
    return run


def test_table_aggregates_seeds_and_keeps_variants_apart(tmp_path):
    write_run(tmp_path, "0", "a", "sea", 0, 0.90)
    write_run(tmp_path, "1", "a", "sea", 1, 0.94)
    write_run(tmp_path, "2", "a", "linear", 0, 0.80)
    write_run(tmp_path, "3", "b", "linear", 0, 0.70)
    write_run(tmp_path, "4", "a", "sea", 0, 0.50, ["method.augmenter.eta=0.3"])
    table = results_table(collect(tmp_path))
    # the runs that kept sea's eta are labelled with its value: it differs among sea's runs
    assert table.loc["sea (method.augmenter.eta=0.8)", "a/bb"] == "92.00 ± 2.83"
    assert table.loc["linear", "b/bb"] == "70.00"
    assert table.loc["sea (method.augmenter.eta=0.3)", "a/bb"] == "50.00"
    assert len(table) == 3
    _, markdown = summarize(tmp_path)
    assert (tmp_path / "summary.md").read_text() == markdown
    assert (tmp_path / "runs.csv").read_text().count("\n") == 6


def test_variant_ignores_cell_keys_and_cosmetics():
    assert variant(["dataset=x", "seed=3", "trainer.enable_progress_bar=false", "norm=center_l2"]) == "norm=center_l2"


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        collect(tmp_path)


def test_selection_uses_validation_never_test(tmp_path):
    # eta=0.3 is best on val, eta=0.8 best on test: the selection must report eta=0.3.
    for seed in (0, 1):
        write_run(tmp_path, f"a{seed}", "a", "sea", seed, 0.90, ["method.augmenter.eta=0.3"])
        write_run(tmp_path, f"b{seed}", "a", "sea", seed, 0.95, ["method.augmenter.eta=0.8"])
    for name in ("a0", "a1"):  # raise eta=0.3's val score above eta=0.8's
        path = tmp_path / name / "metrics.json"
        record = json.loads(path.read_text())
        record["metrics"]["val/top1"] = 0.99
        path.write_text(json.dumps(record))
    write_run(tmp_path, "c", "a", "linear", 0, 0.80)
    table, markdown = summarize(tmp_path, select=True)
    assert table.loc["sea", "a/bb"] == "90.00 ± 0.00 (n=2; method.augmenter.eta=0.3)"
    assert table.loc["linear", "a/bb"] == "80.00 (n=1)"
    assert "eta=0.8" not in markdown


def test_override_keys_can_become_columns(tmp_path):
    for seed, (norm, value) in enumerate([("l2", 0.6), ("center_l2", 0.9), ("l2", 0.7)]):
        write_run(tmp_path, str(seed), "a", "sea", seed, value, [f"norm={norm}", "method.augmenter.eta=0.3"])
    table = results_table(collect(tmp_path), columns_by=("norm",))
    assert list(table.columns) == ["a/bb norm=center_l2", "a/bb norm=l2"]
    # norm labels columns, not rows; eta=0.3, set on every run, labels nothing
    assert list(table.index) == ["sea"]
    assert table.loc["sea", "a/bb norm=l2"] == "65.00 ± 7.07"


def test_grid_heads_are_variants_like_a_sweeps(tmp_path):
    for seed, (val, test) in enumerate([(0.9, 0.80), (0.7, 0.60)]):
        grid = [{"values": {"augmenter.eta": 0.3}, "metrics": {"val/top1": val, "test/top1": test}},
                {"values": {"augmenter.eta": 0.8}, "metrics": {"val/top1": 0.5, "test/top1": 0.95}}]
        write_run(tmp_path, f"grid{seed}", "a", "sea", seed, test, ["method.grid={augmenter.eta:[0.3,0.8]}"],
                  grid=grid)
    runs = collect(tmp_path)
    assert sorted(runs["variant"]) == ["method.augmenter.eta=0.3"] * 2 + ["method.augmenter.eta=0.8"] * 2
    table = results_table(runs)
    assert table.loc["sea (method.augmenter.eta=0.3)", "a/bb"] == "70.00 ± 14.14"
    assert table.loc["sea (method.augmenter.eta=0.8)", "a/bb"] == "95.00 ± 0.00"
    # selection on the mean validation score, whatever the test scores say
    assert select_on_validation(runs).loc["sea", "a/bb"] == "70.00 ± 14.14 (n=2; method.augmenter.eta=0.3)"


def fake_hydra_dir(run_dir, overrides, seed=0):
    """What Hydra writes into a job's directory before running it."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text(f"seed: {seed}\n")
    (hydra_dir / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices: {dataset: a, backbone: bb, method: sea}\n"
        f"  overrides:\n    task: {json.dumps(overrides)}\n")


def test_failed_and_unfinished_jobs_are_rows_with_their_error(tmp_path):
    write_run(tmp_path, "0", "a", "sea", 0, 0.90)
    write_run(tmp_path, "1", "a", "sea", 1, 0.10)  # an old result, then a failed re-run
    failure = {"dataset": "a", "backbone": "bb", "method": "sea", "seed": 1, "overrides": ["seed=1"],
               "error": "ValueError: bad | value"}
    (tmp_path / "1" / FAILED).write_text(json.dumps(failure))
    fake_hydra_dir(tmp_path / "2", ["seed=2", "method.augmenter.eta=0.3"], seed=2)  # killed
    fake_hydra_dir(tmp_path / "3", ["seed=0"])  # resume reused run 0's result
    (tmp_path / "3" / RESUMED).write_text("{}")
    table, markdown = summarize(tmp_path)
    assert table.loc["sea", "a/bb"] == "90.00"  # the failed run's old result is not counted
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs["status"]) == ["ok", "failed", "unfinished"]
    assert list(runs["seed"]) == [0, 1, 2]
    assert runs["error"].iloc[1] == "ValueError: bad | value"
    assert "2 job(s) without a result" in markdown
    assert "| 1 | seed=1 | ValueError: bad / value |" in markdown  # a | would split the cell
    assert "| 2 | seed=2 method.augmenter.eta=0.3 | no result: still running, or killed |" in markdown


def test_a_sweep_where_every_job_failed_still_gets_a_summary(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / FAILED).write_text(json.dumps({"dataset": "a", "backbone": "bb", "method": "sea", "seed": 0,
                                                    "overrides": [], "error": "RuntimeError: boom"}))
    _, markdown = summarize(tmp_path)
    assert markdown.startswith("No job finished.") and "RuntimeError: boom" in markdown


def test_several_sweeps_merge_into_one_table(tmp_path, capsys):
    write_run(tmp_path / "s1", "0", "a", "sea", 0, 0.90)
    write_run(tmp_path / "s2", "0", "a", "sea", 1, 0.94)
    write_run(tmp_path / "s2", "1", "b", "linear", 0, 0.70)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "s1"), str(tmp_path / "s2")])
    assert "--out DIR" in capsys.readouterr().err
    main([str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "both")])
    text = (tmp_path / "both" / "summary.md").read_text()
    assert "| sea | 92.00 ± 2.83 |  |" in text and "| linear |  | 70.00 |" in text
    assert text in capsys.readouterr().out


def test_each_value_of_a_setting_that_changes_numbers_gets_its_own_row(tmp_path):
    # -m experiment=quickstart method=linear extract.cache_dtype=float16,float32 seed=0,1: the two
    # dtypes are two rows of two seeds each; method.epochs=3, set on every run, labels nothing.
    for i, (dtype, seed, value) in enumerate([("float16", 0, 0.80), ("float16", 1, 0.82),
                                              ("float32", 0, 0.60), ("float32", 1, 0.64)]):
        write_run(tmp_path, str(i), "a", "linear", seed, value,
                  ["experiment=quickstart", "method=linear", f"extract.cache_dtype={dtype}", f"seed={seed}",
                   "method.epochs=3"])
    table, markdown = summarize(tmp_path)
    assert list(table.index) == ["linear (extract.cache_dtype=float16)", "linear (extract.cache_dtype=float32)"]
    assert table.loc["linear (extract.cache_dtype=float16)", "a/bb"] == "81.00 ± 1.41"
    assert table.loc["linear (extract.cache_dtype=float32)", "a/bb"] == "62.00 ± 2.83"
    assert "epochs" not in markdown and "experiment" not in markdown


def test_settings_that_change_only_where_or_how_a_run_goes_label_nothing(tmp_path):
    # Each run with other threads, extraction batch, progress bar, paths and outputs: one cell.
    for seed in range(3):
        write_run(tmp_path / f"machine{seed}", "0", "a", "sea", seed, 0.9 + seed / 100,
                  [f"num_threads={seed + 1}", f"extract.batch_size={64 * (seed + 1)}",
                   f"trainer.enable_progress_bar={str(seed == 0).lower()}", f"resume={str(seed == 1).lower()}"],
                  settings={"wandb.entity": f"team{seed}", "extract.lock_timeout": seed})
    table = results_table(collect(tmp_path))
    assert table.to_dict() == {"a/bb": {"sea": "91.00 ± 1.00"}}


def test_a_debug_run_never_shares_a_cell_with_real_runs(tmp_path):
    write_run(tmp_path / "real", "0", "a", "linear", 0, 0.90)
    write_run(tmp_path / "real", "1", "a", "linear", 1, 0.92)
    write_run(tmp_path / "debug", "0", "a", "linear", 0, 0.10, ["debug=fast"],
              settings={"trainer.fast_dev_run": 1, "trainer.enable_progress_bar": False, "logger": None})
    table = results_table(collect(tmp_path))
    assert table.loc["linear (trainer.fast_dev_run=1)", "a/bb"] == "10.00"
    assert table.loc["linear (trainer.fast_dev_run=null)", "a/bb"] == "91.00 ± 1.41"


def test_a_setting_labels_rows_only_where_it_varies(tmp_path):
    # eta varies among sea's runs on dataset a only; an undeclared root key counts as changing numbers
    write_run(tmp_path, "0", "a", "sea", 0, 0.90, ["method.augmenter.eta=0.3"])
    write_run(tmp_path, "1", "a", "sea", 0, 0.80, ["method.augmenter.eta=0.5"])
    write_run(tmp_path, "2", "b", "sea", 0, 0.70, ["method.augmenter.eta=0.5"])
    write_run(tmp_path, "3", "a", "linear", 0, 0.60, ["+my_key=1"])
    write_run(tmp_path, "4", "a", "linear", 1, 0.50, ["+my_key=2"])
    runs = collect(tmp_path)
    assert list(runs["variant"]) == ["method.augmenter.eta=0.3", "method.augmenter.eta=0.5", "", "my_key=1",
                                     "my_key=2"]


def test_select_writes_its_own_file_with_mean_std_and_n(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path, f"a{seed}", "a", "sea", seed, 0.90 + seed / 50, ["method.augmenter.eta=0.3"], val=-0.1)
        write_run(tmp_path, f"b{seed}", "a", "sea", seed, 0.95, ["method.augmenter.eta=0.8"])
    write_run(tmp_path, "c", "a", "linear", 0, 0.80)
    summary = summarize(tmp_path)[1]
    main([str(tmp_path), "--select"])
    assert (tmp_path / "summary.md").read_text() == summary  # the sweep's table is kept
    selected = (tmp_path / "selected.md").read_text()
    assert "| sea | 91.00 ± 1.41 (n=2; method.augmenter.eta=0.3) |" in selected
    assert "| linear | 80.00 (n=1) |" in selected
    assert str(tmp_path / "selected.md") in capsys.readouterr().out


def test_select_without_validation_scores_says_why_instead_of_failing(tmp_path):
    # fit_on=trainval refits on train+val: no val metric to choose sea's eta on
    for eta, value in ((0.3, 0.9), (0.8, 0.7)):
        write_run(tmp_path, str(eta), "a", "sea", 0, value, [f"method.augmenter.eta={eta}", "fit_on=trainval"],
                  val=None)
    write_run(tmp_path, "linear", "a", "linear", 0, 0.8, ["fit_on=trainval"], val=None)
    table, markdown = summarize(tmp_path, select=True)
    assert table.loc["sea", "a/bb"] == "not selected: no val score"
    assert table.loc["linear", "a/bb"] == "80.00 (n=1)"  # a single variant needs no choice
    assert "fit_on=train" in markdown and "fit_on=trainval" in markdown
