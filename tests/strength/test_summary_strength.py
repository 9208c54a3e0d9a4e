"""sealab-summary where mutation testing (make mutants) found the suite blind: whole files and
printed output worked by hand for a small sweep (cells as mean ± sample std over seeds, a failed
job's row), --select's file and note, --columns-by, and the command line's own checks."""

import json

import pandas as pd
import pytest

from sealab.sweep.outcome import FAILED
from sealab.sweep.summary import main, summarize


def write_run(root, name, method, seed, test, val=None, eta=None, fit_on="train"):
    run = root / name
    run.mkdir(parents=True)
    method_config = {"name": method, "epochs": 3, **({"augmenter": {"eta": eta}} if eta is not None else {})}
    metrics = {"test/top1": test, **({"val/top1": val} if val is not None else {})}
    (run / "metrics.json").write_text(json.dumps({
        "dataset": "d", "backbone": "b", "method": method, "seed": seed, "metrics": metrics,
        "primary_metric": "test/top1", "fit_seconds": 2.5,
        "config": {"seed": seed, "norm": "l2", "fit_on": fit_on, "dataset": {"name": "d"}, "method": method_config},
        "overrides": [f"method={method}", f"seed={seed}", *([f"method.augmenter.eta={eta}"] if eta else [])]}))
    return run


def sweep(root):
    """linear: two seeds (0.80, 0.90); sea: eta 0.3 (val 0.7, test 0.85) and eta 0.8 (val 0.6, test 0.95)."""
    write_run(root, "0", "linear", 0, 0.80, val=0.5)
    write_run(root, "1", "linear", 1, 0.90, val=0.6)
    write_run(root, "2", "sea", 0, 0.85, val=0.7, eta=0.3)
    write_run(root, "3", "sea", 0, 0.95, val=0.6, eta=0.8)
    failed = root / "4"
    failed.mkdir()
    (failed / FAILED).write_text(json.dumps({
        "dataset": "d", "backbone": "b", "method": "sea", "seed": 1, "overrides": ["method=sea", "seed=1"],
        "error": "ValueError: a | b", "status": "failed"}))


TABLE = ("| method | d/b |\n"
         "|---|---|\n"
         "| linear | 85.00 ± 7.07 |\n"
         "| sea (method.augmenter.eta=0.3) | 85.00 |\n"
         "| sea (method.augmenter.eta=0.8) | 95.00 |\n")
FAILURES = ("\n1 job(s) without a result:\n\n"
            "| run | overrides | error |\n"
            "|---|---|---|\n"
            "| 4 | method=sea seed=1 | ValueError: a / b |\n")


def test_the_summary_file_is_the_table_then_the_jobs_without_a_result(tmp_path):
    sweep(tmp_path)
    table, markdown = summarize(tmp_path)
    assert markdown == TABLE + FAILURES
    assert (tmp_path / "summary.md").read_text() == markdown
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(rows["status"]) == ["failed", "ok", "ok", "ok", "ok"]
    ok = rows[rows["status"] == "ok"].sort_values("run_dir")
    assert ok["primary"].tolist() == [0.80, 0.90, 0.85, 0.95]
    assert ok["val_primary"].tolist() == [0.5, 0.6, 0.7, 0.6]
    assert ok["primary_metric"].tolist() == ["test/top1"] * 4 and ok["fit_seconds"].tolist() == [2.5] * 4
    assert ok["run_dir"].tolist() == [str(tmp_path / name) for name in "0123"]
    assert ok["overrides"].tolist()[0] == str(["method=linear", "seed=0"])


def test_select_writes_its_own_file_with_mean_std_and_n(tmp_path):
    sweep(tmp_path)
    _, markdown = summarize(tmp_path, select=True)
    # sea's variant with the best validation score is eta=0.3 (0.7 > 0.6), whatever its test score
    assert markdown == ("| method | d/b |\n|---|---|\n| linear | 85.00 ± 7.07 (n=2) |\n"
                        "| sea | 85.00 (n=1; method.augmenter.eta=0.3) |\n" + FAILURES)
    assert (tmp_path / "selected.md").read_text() == markdown
    assert not (tmp_path / "summary.md").exists()


def test_a_variant_without_validation_scores_is_not_selected_and_the_note_says_what_to_do(tmp_path):
    write_run(tmp_path, "0", "sea", 0, 0.85, eta=0.3, fit_on="trainval")
    write_run(tmp_path, "1", "sea", 0, 0.95, eta=0.8, fit_on="trainval")
    _, markdown = summarize(tmp_path, select=True)
    assert markdown == ("| method | d/b |\n|---|---|\n| sea | not selected: no val score |\n\n"
                        "not selected: no val score: these runs have no validation metric to choose a variant on "
                        "(fit_on=trainval refits on train+val). Select with fit_on=train, then refit the chosen "
                        "variant with fit_on=trainval.\n")


def test_the_command_prints_where_the_table_went_then_the_table(tmp_path, capsys):
    sweep(tmp_path)
    main([str(tmp_path)])
    assert capsys.readouterr().out == (f"\nResults (primary test metric, %), also in {tmp_path / 'summary.md'}; "
                                       f"every row in {tmp_path / 'runs.csv'}:\n" + TABLE + FAILURES)
    main([str(tmp_path), "--select"])
    assert f"also in {tmp_path / 'selected.md'};" in capsys.readouterr().out


def test_columns_by_puts_a_settings_values_in_the_columns(tmp_path, capsys):
    write_run(tmp_path, "0", "sea", 0, 0.85, eta=0.3)
    write_run(tmp_path, "1", "sea", 0, 0.95, eta=0.8)
    main([str(tmp_path), "--columns-by", "method.augmenter.eta"])
    out = capsys.readouterr().out
    assert out.endswith("| method | d/b method.augmenter.eta=0.3 | d/b method.augmenter.eta=0.8 |\n"
                        "|---|---|---|\n| sea | 85.00 | 95.00 |\n")


def test_several_folders_need_out_and_the_command_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: several DIRs are merged into one table: name its folder with --out DIR\n")


def test_the_usage_line_names_the_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = " ".join(capsys.readouterr().out.split("\n\n")[0].split())
    assert usage.endswith("[-h] [--out DIR] [--select] [--columns-by KEY [KEY ...]] [--report] "
                          "[--baseline METHOD] DIR [DIR ...]")


def test_the_files_go_into_a_new_nested_out_folder_and_the_csv_has_no_index_column(tmp_path):
    sweep(tmp_path / "sweep")
    out = tmp_path / "results" / "paper" / "v1"
    table, _ = summarize(tmp_path / "sweep", out=out)
    assert table.index.name == "method" and list(table.index) == sorted(table.index)
    assert (out / "summary.md").is_file()
    assert (out / "runs.csv").read_text().startswith("dataset,backbone,method,seed,overrides,")


def test_a_sweep_where_every_job_failed_has_an_empty_table_and_says_so(tmp_path):
    failed = tmp_path / "0"
    failed.mkdir()
    (failed / FAILED).write_text(json.dumps({
        "dataset": "d", "backbone": "b", "method": "sea", "seed": 0, "overrides": ["method=sea"],
        "error": "RuntimeError: out of memory"}))
    table, markdown = summarize(tmp_path)
    assert table.empty
    assert markdown == ("No job finished.\n\n1 job(s) without a result:\n\n| run | overrides | error |\n|---|---|---|\n"
                        "| 0 | method=sea | RuntimeError: out of memory |\n")
    assert pd.read_csv(tmp_path / "runs.csv")["status"].tolist() == ["failed"]


def test_a_run_whose_latest_attempt_failed_is_left_out_and_the_others_are_kept(tmp_path):
    retried = write_run(tmp_path, "0", "linear", 0, 0.10)
    (retried / FAILED).write_text(json.dumps({"dataset": "d", "backbone": "b", "method": "linear", "seed": 0,
                                              "overrides": ["method=linear"], "error": "KeyboardInterrupt"}))
    write_run(tmp_path, "1", "linear", 1, 0.90)
    table, _ = summarize(tmp_path)
    assert table.loc["linear", "d/b"] == "90.00"


def test_two_settings_that_vary_label_a_row_together(tmp_path):
    write_run(tmp_path, "0", "sea", 0, 0.85, eta=0.3)
    run = write_run(tmp_path, "1", "sea", 0, 0.95, eta=0.8)
    record = json.loads((run / "metrics.json").read_text())
    record["config"]["method"]["epochs"] = 5
    (run / "metrics.json").write_text(json.dumps(record))
    table, _ = summarize(tmp_path)
    assert list(table.index) == ["sea (method.augmenter.eta=0.3, method.epochs=3)",
                                 "sea (method.augmenter.eta=0.8, method.epochs=5)"]


def test_folders_without_any_run_are_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError) as missing:
        summarize([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out")
    assert str(missing.value) == (f"no metrics.json below {tmp_path / 'a'}, {tmp_path / 'b'}: "
                                  "is this a sealab run or sweep folder?")


def test_the_help_says_what_the_command_and_each_option_do(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Collect the records of one or more sweeps into one table (CSV + Markdown), failed and" in text
    for said in ["DIR sweep folders (or any folders above sealab run dirs), merged into one table",
                 "--out DIR where runs.csv, summary.md and the report go (default: the one DIR; required with "
                 "several)",
                 "--select one row per method: the variant with the best validation score (into selected.md)",
                 "--columns-by KEY [KEY ...] settings whose values become columns",
                 "--report also the paper's table: report.md, report.tex, report.csv and figures (PNG, PDF), "
                 "one block per backbone, each method's variant chosen on validation --baseline",
                 "--baseline METHOD the method the report's differences are taken from (default: linear)"]:
        assert said in text, said


def test_a_record_without_overrides_and_a_grids_heads_are_rows_of_their_own(tmp_path):
    plain = write_run(tmp_path, "0", "linear", 0, 0.80)
    record = json.loads((plain / "metrics.json").read_text())
    del record["overrides"]
    (plain / "metrics.json").write_text(json.dumps(record))
    grid = write_run(tmp_path, "1", "sea", 0, 0.0)
    record = json.loads((grid / "metrics.json").read_text())
    record["grid"] = [{"values": {"augmenter.eta": eta}, "metrics": {"test/top1": top1, "val/top1": 0.5}}
                      for eta, top1 in [(0.3, 0.70), (0.8, 0.75)]]
    (grid / "metrics.json").write_text(json.dumps(record))
    table, _ = summarize(tmp_path)
    assert table["d/b"].to_dict() == {"linear": "80.00", "sea (method.augmenter.eta=0.3)": "70.00",
                                      "sea (method.augmenter.eta=0.8)": "75.00"}
    rows = pd.read_csv(tmp_path / "runs.csv").sort_values("primary")
    assert rows["overrides"].tolist() == [
        str(["method=sea", "seed=0", "method.augmenter.eta=0.3"]), str(["method=sea", "seed=0", "method.augmenter.eta=0.8"]),
        str([])]


def test_a_column_setting_some_runs_lack_leaves_their_column_plain(tmp_path, capsys):
    write_run(tmp_path, "0", "linear", 0, 0.80)
    run = write_run(tmp_path, "1", "linear", 1, 0.90)
    record = json.loads((run / "metrics.json").read_text())
    del record["config"]["norm"]
    (run / "metrics.json").write_text(json.dumps(record))
    table, _ = summarize(tmp_path, columns_by=("norm",))
    assert sorted(table.columns) == ["d/b", "d/b norm=l2"]


def test_a_failed_jobs_row_in_runs_csv_keeps_its_variant(tmp_path):
    write_run(tmp_path, "0", "sea", 0, 0.85, eta=0.3)
    failed = tmp_path / "1"
    failed.mkdir()
    (failed / FAILED).write_text(json.dumps({
        "dataset": "d", "backbone": "b", "method": "sea", "seed": 0, "error": "ValueError: x",
        "overrides": ["method=sea", "seed=0", "method.augmenter.eta=0.8"]}))
    summarize(tmp_path)
    rows = pd.read_csv(tmp_path / "runs.csv")
    assert rows.loc[rows["status"] == "failed", "variant"].tolist() == ["method.augmenter.eta=0.8"]


def test_a_job_hydra_started_that_left_nothing_else_is_listed_as_unfinished(tmp_path):
    hydra = tmp_path / "0" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("seed: 3\n")
    (hydra / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices: {dataset: d, backbone: b, method: sea}\n  overrides:\n    task: [seed=3]\n")
    notes = tmp_path / "0" / "notes"  # Hydra's two files outside .hydra: no job
    notes.mkdir()
    for name in ("config.yaml", "hydra.yaml"):
        (notes / name).write_text((hydra / name).read_text())
    _, markdown = summarize(tmp_path)
    assert markdown == ("No job finished.\n\n1 job(s) without a result:\n\n| run | overrides | error |\n|---|---|---|\n"
                        "| 0 | seed=3 | no result: still running, or killed |\n")
