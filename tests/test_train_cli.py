"""sealab-train end to end, as a user runs it (subprocess, offline)."""

import subprocess
import sys

import torch
from helpers import metrics_files, read_metrics, run_train

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


def test_quickstart_shows_sea_beating_the_published_step(tmp_path):
    run_train(tmp_path, "experiment=quickstart")
    run_train(tmp_path, "method=sea")  # published eta=0.8: collapses on these features
    tuned, published = (read_metrics(p) for p in metrics_files(tmp_path / "outputs"))
    assert tuned["config"]["method"]["augmenter"]["eta"] == 0.3
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


def test_wandb_logger_runs_offline(tmp_path):
    run_train(tmp_path, "logger=wandb", "method=linear", "method.epochs=2")
    (metrics,) = metrics_files(tmp_path / "outputs")
    offline_runs = list(metrics.parent.glob("wandb/offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))
