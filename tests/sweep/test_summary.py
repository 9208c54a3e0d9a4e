"""The sweep summary: one row per method variant, mean +- std over seeds."""

import json

import pandas as pd
import pytest

from sealab.sweep.outcome import FAILED, RESUMED, error_line
from sealab.sweep.summary import (
    collect,
    main,
    results_table,
    select_on_validation,
    summarize,
    variant,
)


def write_run(root, name, dataset, method, seed, value, overrides=()):
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "dataset": dataset, "backbone": "bb", "method": method, "seed": seed,
        "metrics": {"test/top1": value, "val/top1": value - 0.01}, "primary_metric": "test/top1",
        "fit_seconds": 1.0, "overrides": [f"method={method}", f"seed={seed}", *overrides]}))


def test_table_aggregates_seeds_and_keeps_variants_apart(tmp_path):
    write_run(tmp_path, "0", "a", "sea", 0, 0.90)
    write_run(tmp_path, "1", "a", "sea", 1, 0.94)
    write_run(tmp_path, "2", "a", "linear", 0, 0.80)
    write_run(tmp_path, "3", "b", "linear", 0, 0.70)
    write_run(tmp_path, "4", "a", "sea", 0, 0.50, ["method.augmenter.eta=0.8"])
    table = results_table(collect(tmp_path))
    assert table.loc["sea", "a/bb"] == "92.00 ± 2.83"
    assert table.loc["linear", "b/bb"] == "70.00"
    assert table.loc["sea (method.augmenter.eta=0.8)", "a/bb"] == "50.00"
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
    assert table.loc["sea", "a/bb"] == "90.00 (method.augmenter.eta=0.3)"
    assert table.loc["linear", "a/bb"] == "80.00"
    assert "eta=0.8" not in markdown


def test_override_keys_can_become_columns(tmp_path):
    for seed, (norm, value) in enumerate([("l2", 0.6), ("center_l2", 0.9), ("l2", 0.7)]):
        write_run(tmp_path, str(seed), "a", "sea", seed, value, [f"norm={norm}", "method.augmenter.eta=0.3"])
    table = results_table(collect(tmp_path), columns_by=("norm",))
    assert list(table.columns) == ["a/bb norm=center_l2", "a/bb norm=l2"]
    assert table.loc["sea (method.augmenter.eta=0.3)", "a/bb norm=l2"] == "65.00 ± 7.07"


def test_grid_heads_are_variants_like_a_sweeps(tmp_path):
    for seed, (val, test) in enumerate([(0.9, 0.80), (0.7, 0.60)]):
        run = tmp_path / f"grid{seed}"
        run.mkdir()
        grid = [{"values": {"augmenter.eta": 0.3}, "metrics": {"val/top1": val, "test/top1": test}},
                {"values": {"augmenter.eta": 0.8}, "metrics": {"val/top1": 0.5, "test/top1": 0.95}}]
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "a", "backbone": "bb", "method": "sea", "seed": seed, "metrics": grid[0]["metrics"],
            "primary_metric": "test/top1", "fit_seconds": 1.0, "grid": grid,
            "overrides": ["method=sea", f"seed={seed}", "method.grid={augmenter.eta:[0.3,0.8]}"]}))
    runs = collect(tmp_path)
    assert sorted(runs["variant"]) == ["method.augmenter.eta=0.3"] * 2 + ["method.augmenter.eta=0.8"] * 2
    table = results_table(runs)
    assert table.loc["sea (method.augmenter.eta=0.3)", "a/bb"] == "70.00 ± 14.14"
    assert table.loc["sea (method.augmenter.eta=0.8)", "a/bb"] == "95.00 ± 0.00"
    # selection on the mean validation score, whatever the test scores say
    assert select_on_validation(runs).loc["sea", "a/bb"] == "70.00 (method.augmenter.eta=0.3)"


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


def test_error_line_names_the_innermost_cause():
    try:
        try:
            raise ValueError("first line\nlast line")
        except ValueError as err:
            raise RuntimeError("Error in call to target\nfull_key: method") from err
    except RuntimeError as err:
        assert error_line(err) == "ValueError: last line"
