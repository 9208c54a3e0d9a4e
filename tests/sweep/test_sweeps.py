"""Sweeps end to end through sealab-train in a subprocess (offline): resume after a kill with a
failed job summarised, the launchers, an Optuna search."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import QUIET, metrics_files, read_metrics, run_train
from omegaconf import OmegaConf

from sealab.sweep.launch import available_cores

# Job 0 fails (linear has no augmenter for a grid on eta), jobs 1-3 succeed: 4 result rows
# (sea's grid gives two) and one failure.
GRID_WITH_ONE_FAILURE = ["experiment=none", "method=linear,sea", "method.grid={augmenter.eta:[0.1,0.3]},null",
                         "method.epochs=1"]  # experiment=none: sea without a grid is the published eta=0.8


def start_sweep(root, *overrides) -> subprocess.Popen:
    env = {**os.environ, "SEALAB_ROOT": str(root), "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "sealab.train", "-m", *overrides, *QUIET], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_a_killed_sweep_resumes_where_it_stopped_and_summarises_its_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(tmp_path, *GRID_WITH_ONE_FAILURE, f"hydra.sweep.dir={sweep}")
    wait_for(sweep / "1_digits_random_features_linear" / "metrics.json", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    failed_first = sweep / "0_digits_random_features_linear" / "failed.json"
    kept = sweep / "1_digits_random_features_linear" / "metrics.json"
    stamps = failed_first.stat().st_mtime_ns, kept.stat().st_mtime_ns

    resumed = start_sweep(tmp_path, *GRID_WITH_ONE_FAILURE, f"hydra.sweep.dir={sweep}", "resume=true")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode != 0, output[-3000:]  # job 0 failed again
    assert output.count("not run again") == 1
    assert kept.stat().st_mtime_ns == stamps[1]  # the finished job was skipped
    assert failed_first.stat().st_mtime_ns > stamps[0]  # the failed one ran again
    assert len(metrics_files(sweep)) == 3
    error = json.loads(failed_first.read_text())["error"]
    assert error.startswith("ValueError: method.grid key 'augmenter.eta' is not a hyper-parameter of method=linear")

    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs["status"]) == ["failed"] + ["ok"] * 4
    assert runs.loc[runs["status"] == "failed", "error"].item() == error
    summary = (sweep / "summary.md").read_text()
    # resume and hydra.sweep.dir are no variants, nor is method.epochs=1, which every job set
    assert "| linear |" in summary and "epochs" not in summary.split("without a result")[0]
    assert "| sea (method.augmenter.eta=0.3) |" in summary and "| sea (method.augmenter.eta=0.8) |" in summary
    assert "1 job(s) without a result" in summary and error in summary
    assert "Results (primary test metric" in output


def plugin(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (pip install 'sealab[launchers]')")


def test_joblib_jobs_on_one_dataset_backbone_extract_once_with_a_share_of_the_cores(tmp_path):
    plugin("hydra_plugins.hydra_joblib_launcher")
    run_train(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=linear", "method.epochs=1",
              "seed=0,1", multirun=True)
    records = [read_metrics(p) for p in metrics_files(tmp_path / "multirun")]
    # The cache lock made one job wait for the other's split: each split extracted exactly once.
    assert sorted(split for r in records for split in r["extracted"]) == ["test", "train", "val"]
    assert [r["config"]["num_threads"] for r in records] == [max(1, available_cores() // 2)] * 2


def test_submitit_local_runs_a_job(tmp_path):
    plugin("hydra_plugins.hydra_submitit_launcher")
    run_train(tmp_path, "hydra/launcher=submitit_local", "method=linear", "method.epochs=1", multirun=True)
    (record,) = (read_metrics(p) for p in metrics_files(tmp_path / "multirun"))
    assert record["config"]["num_threads"] == 1  # cpus_per_task
    (sweep,) = tmp_path.glob("multirun/*/*")
    assert any((sweep / ".submitit").rglob("*_result.pkl")) and (sweep / "summary.md").exists()


@pytest.mark.slow  # Ray takes 10-30 s to start, the job as long again
def test_ray_runs_a_job_on_a_local_instance(tmp_path):
    plugin("hydra_plugins.hydra_ray_launcher")
    run_train(tmp_path, "hydra/launcher=ray", "+hydra.launcher.ray.init._node_ip_address=127.0.0.1",
              "method=linear", "method.epochs=1", multirun=True)
    (record,) = (read_metrics(p) for p in metrics_files(tmp_path / "multirun"))
    assert record["config"]["num_threads"] == 1  # the task's num_cpus


def test_optuna_search_maximises_the_validation_metric_and_never_sees_test(tmp_path):
    plugin("hydra_plugins.hydra_optuna_sweeper")
    run_train(tmp_path, "hparams_search=sea_optuna", "hydra.sweeper.n_trials=3", "method.epochs=2")
    records = [read_metrics(p) for p in metrics_files(tmp_path / "multirun")]
    assert len(records) == 3
    (results,) = tmp_path.glob("multirun/*/*/optimization_results.yaml")
    best = OmegaConf.load(results)
    # Optuna saw each trial's val/top1 (test/top1 differs in every trial here) and kept the largest.
    assert all(r["metrics"]["val/top1"] != r["metrics"]["test/top1"] for r in records)
    winner = max(records, key=lambda r: r["metrics"]["val/top1"])
    assert best.best_value == winner["metrics"]["val/top1"]
    assert {f"{k}={v}" for k, v in best.best_params.items()} <= set(winner["overrides"])
    searched = {r["config"]["method"]["augmenter"]["eta"] for r in records}
    assert len(searched) == 3 and all(0.02 <= eta <= 1.0 for eta in searched)


def test_a_sweep_whose_methods_lack_a_key_says_which_and_how_to_run_them_and_reports_no_empty_folder(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(tmp_path, "method=linear,sea,logreg", "method.epochs=5", f"hydra.sweep.dir={sweep}")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0
    # Hydra composes every job before it runs any: none ran; sealab says why and what to run.
    assert "This sweep ran no job: Hydra's basic sweeper composes every job before it starts any, and 1 of its 3 " \
           "jobs cannot be composed." in output
    assert "method.epochs is not a key of method=logreg (it is of method=linear, method=sea)." in output
    assert "sealab-train -m method=linear,sea method.epochs=5 trainer.enable_progress_bar=false" in output
    assert "sealab-train -m method=logreg trainer.enable_progress_bar=false" in output
    assert "no metrics.json" not in output and "sealab run or sweep folder" not in output
    assert not (sweep / "summary.md").exists() and not metrics_files(sweep)
