"""sealab-train end to end, as a user runs it (subprocess, offline)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch
from helpers import QUIET, metrics_files, read_metrics, run_train

RECORD_FIELDS = {"dataset", "backbone", "method", "seed", "metrics", "primary_metric", "fit_seconds",
                 "extract_seconds", "cache_hit", "git_sha", "config"}


def test_default_run_writes_metrics_and_second_run_hits_the_cache(tmp_path):
    first = run_train(tmp_path, "method.epochs=3")
    second = run_train(tmp_path, "method.epochs=3", "seed=1")
    records = sorted((read_metrics(p) for p in metrics_files(tmp_path / "outputs")), key=lambda r: r["seed"])
    assert len(records) == 2
    for record in records:
        assert RECORD_FIELDS <= record.keys()
        assert (record["dataset"], record["backbone"], record["method"]) == ("digits", "random_features", "sea")
        assert record["primary_metric"] == "test/top1"
        assert {"test/top1", "test/mean_per_class", "val/top1", "val/mean_per_class"} <= record["metrics"].keys()
        assert all(0 <= v <= 1 for v in record["metrics"].values())
    assert [r["cache_hit"] for r in records] == [False, True]
    assert "extracted 3 split(s)" in first.stdout + first.stderr
    assert "no extraction" in second.stdout + second.stderr
    assert "test/top1" in second.stdout  # the console table
    # One line per event: Lightning's lines once (not also through its own handler), no tips, no
    # known deprecation warnings.
    for proc in (first, second):
        output = proc.stdout + proc.stderr
        events = [line.split("] - ", 1)[-1] for line in output.splitlines() if line.strip()]
        assert "GPU available: False, used: False" in events
        assert all(events.count(event) == 1 for event in events if "%" not in event), output
        assert "INFO: " not in output and "litlogger" not in output and "LeafSpec" not in output


def test_a_bare_run_shows_sea_beating_the_published_step(tmp_path):
    run_train(tmp_path)  # the quickstart: SeA with its step chosen on val
    run_train(tmp_path, "experiment=none")  # published eta=0.8: collapses on these features
    tuned, published = (read_metrics(p) for p in metrics_files(tmp_path / "outputs"))
    assert tuned["config"]["method"]["augmenter"]["eta"] == 0.3
    assert published["config"]["method"]["augmenter"]["eta"] == 0.8
    assert tuned["metrics"]["test/top1"] > 0.95
    assert tuned["metrics"]["test/top1"] > published["metrics"]["test/top1"] + 0.1


def test_precomputed_features_run_without_a_backbone(tmp_path):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=gen) * 3
    for split, n in (("train", 200), ("test", 80)):
        y = torch.arange(n) % 4
        torch.save(centers[y] + torch.randn(n, 16, generator=gen), tmp_path / f"{split}_feat.pt")
        torch.save(y.tolist(), tmp_path / f"{split}_label.pt")  # a list, as the paper's code saves
    run_train(tmp_path, "dataset=features", f"dataset.train_features={tmp_path}/train_feat.pt",
              f"dataset.train_labels={tmp_path}/train_label.pt", f"dataset.test_features={tmp_path}/test_feat.pt",
              f"dataset.test_labels={tmp_path}/test_label.pt", "method=linear", "method.epochs=5")
    (record,) = (read_metrics(p) for p in metrics_files(tmp_path / "outputs"))
    assert (record["dataset"], record["backbone"]) == ("features", "precomputed")
    assert record["metrics"]["test/top1"] > 0.9
    assert not (tmp_path / "cache").exists()  # no backbone ran


def test_timm_backbone_path(tmp_path):
    run_train(tmp_path, "backbone=resnet10t_random_init", "method=linear", "method.epochs=2", "norm=center_l2")
    (record,) = (read_metrics(p) for p in metrics_files(tmp_path / "outputs"))
    assert record["backbone"] == "resnet10t_random_init"
    assert record["metrics"]["test/top1"] > 0.3  # random conv features still separate digits


def test_multirun_returns_one_table(tmp_path):
    proc = run_train(tmp_path, "method=linear,sea", "method.epochs=2", multirun=True)
    (summary,) = tmp_path.glob("multirun/*/*/summary.md")
    text = summary.read_text()
    # method.epochs=2 is set on every job: it labels no row
    assert "| linear |" in text and "| sea |" in text and "epochs" not in text
    assert "digits/random_features" in text.splitlines()[0]
    assert "Results (primary test metric" in proc.stdout
    assert len(metrics_files(tmp_path / "multirun")) == 2


def test_unknown_choice_fails_with_the_available_options(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sealab.train", "method=nope"], capture_output=True,
                          text=True, cwd=tmp_path, env={"SEALAB_ROOT": str(tmp_path), "PATH": ""})
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and "sea" in proc.stderr


def sealab_train(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sealab.train", *args], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "SEALAB_ROOT": str(tmp_path)}, timeout=300)


def test_old_choices_and_missing_plugins_name_their_fix(tmp_path):
    for args, fix in ((["trainer=cpu"], "use device=cpu"), (["-m", "seed=0,1", "trainer=gpu"], "use device=cuda"),
                      (["-m", "hydra/launcher=ray", "method=linear"], "pip install 'sealab[launchers]'")):
        proc = sealab_train(tmp_path, *args)
        assert proc.returncode == 1 and fix in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "multirun").exists()  # stopped before any sweep began


def test_help_opens_with_the_common_commands_then_the_config_groups(tmp_path):
    text = sealab_train(tmp_path, "--help").stdout
    assert text.startswith("sealab-train: ")
    header = text[:text.index("== Configuration groups ==")]
    for command in ("sealab-train   ", "sealab-train -m ", "method.grid=", "sealab-summary ", "--cfg job"):
        assert command in header
    assert "powered by Hydra" not in text and "method: finetune, gda" in text


def test_wandb_logger_runs_offline(tmp_path):
    run_train(tmp_path, "logger=wandb", "method=linear", "method.epochs=2")
    (metrics,) = metrics_files(tmp_path / "outputs")
    offline_runs = list(metrics.parent.glob("wandb/offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))


def train_process(root, *overrides, multirun=False) -> subprocess.Popen:
    env = {**os.environ, "SEALAB_ROOT": str(root), "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "sealab.train", *(["-m"] if multirun else []), *overrides, *QUIET],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_missing_features_file_fails_with_the_key_at_fault_and_the_traceback_in_the_log(tmp_path):
    for split in ("train", "test"):
        torch.save({"features": torch.randn(40, 8), "labels": torch.arange(40) % 4}, tmp_path / f"{split}.pt")
    proc = train_process(tmp_path, "dataset=features", f"dataset.train_features={tmp_path}/train.pt",
                         f"dataset.test_features={tmp_path}/test.pt", f"dataset.val_features={tmp_path}/val.pt",
                         "method=linear", f"hydra.run.dir={tmp_path}/run")
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, output[-3000:]
    failed = json.loads((tmp_path / "run" / "failed.json").read_text())
    # sealab's own error, naming the key and the file, not Hydra's wrapper around it.
    assert failed["error"] == (f"FileNotFoundError: dataset.val_features={tmp_path}/val.pt: file not found. "
                               f"Point dataset.val_features at an existing .pt/.pth/.npy/.npz file.")
    assert (failed["dataset"], failed["backbone"], failed["status"]) == ("features", "precomputed", "failed")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "feature_files.py" in log  # where it was raised
    assert "InstantiationException" in log
    # The console: the message alone, and where the traceback is.
    assert "Traceback" not in output and f"dataset.val_features={tmp_path}/val.pt: file not found" in output
    assert f"(the traceback is in {tmp_path}/run/train.log)" in output


def test_a_config_error_prints_its_message_without_a_traceback_unless_asked(tmp_path):
    proc = train_process(tmp_path, "method.epochs=0", f"hydra.run.dir={tmp_path}/run")
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, output[-3000:]
    assert "method.epochs=0: must be an integer >= 1" in output and "Traceback" not in output
    assert "Traceback (most recent call last)" in (tmp_path / "run" / "train.log").read_text()
    full = subprocess.run([sys.executable, "-m", "sealab.train", "method.epochs=0", f"hydra.run.dir={tmp_path}/run2"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "SEALAB_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr
    assert "check_run_config" in full.stderr  # where sealab raised it


def test_sigterm_during_training_stops_the_sweep_with_failed_json_and_lists_the_job_not_started(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_process(tmp_path, "method=finetune", "backbone=resnet10t_random_init", "seed=0,1",
                         "method.epochs=50", "method.checkpoint_every_n_steps=1", f"hydra.sweep.dir={sweep}",
                         multirun=True)
    deadline = time.monotonic() + 600  # the first checkpoint: training has started
    while not (checkpoints := list(sweep.glob("0_*/checkpoints/last.ckpt"))):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends to pre-empt a job
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]  # was 0, with nothing written
    (checkpoint,) = checkpoints
    job = checkpoint.parents[1]
    failed = json.loads((job / "failed.json").read_text())
    assert failed["status"] == "interrupted" and failed["seed"] == 0
    assert failed["error"].startswith("JobInterrupted: interrupted by SIGTERM (a scheduler such as SLURM")
    assert failed["error"].endswith(f"start the same command again with hydra.sweep.dir={sweep} resume=true: the "
                                    f"finished jobs are skipped and this one continues from its last checkpoint "
                                    f"({checkpoint}).")
    assert checkpoint.is_file() and not (job / "metrics.json").exists()
    log = (job / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "sealab.interrupt.JobInterrupted" in log
    runs = pd.read_csv(sweep / "runs.csv")
    assert list(runs["status"]) == ["interrupted", "not started"] and list(runs["seed"]) == [0, 1]
    summary = (sweep / "summary.md").read_text()
    assert summary.startswith("No job finished.") and "2 job(s) without a result" in summary
    assert "| job 1 | method=finetune backbone=resnet10t_random_init seed=1 " in summary
