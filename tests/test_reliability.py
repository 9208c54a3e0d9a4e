"""Faults of docs/reliability.md without a home elsewhere: precomputed features named by their
own backbone, misspelt keys, a stale lock file and NaN features from a backbone."""

import json
import os

import pytest
import torch
from helpers import compose_train, metrics_files, read_metrics, run_train
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sealab.features.locks import key_lock
from sealab.features.store import check_features


def feature_files(root):
    gen = torch.Generator().manual_seed(0)
    paths = []
    for split, n in (("train", 60), ("test", 30)):
        y = torch.arange(n) % 3
        torch.save(torch.randn(n, 8, generator=gen) + 3 * torch.nn.functional.one_hot(y, 8), root / f"{split}_x.pt")
        torch.save(y, root / f"{split}_y.pt")
        paths += [f"dataset.{split}_features={root / f'{split}_x.pt'}", f"dataset.{split}_labels={root / f'{split}_y.pt'}"]
    return paths


def test_a_features_sweep_names_the_features_backbone_not_the_default_config(tmp_path):
    proc = run_train(tmp_path, "dataset=features", *feature_files(tmp_path), "dataset.backbone=dinov2_vitb14",
                     "method=ncm", multirun=True)
    runs = metrics_files(tmp_path / "multirun")
    assert [p.parent.name for p in runs] == ["0_features_dinov2_vitb14_ncm"]
    record = read_metrics(runs[0])
    assert record["backbone"] == "dinov2_vitb14" and record["config"]["backbone"] is None
    assert "features / dinov2_vitb14 / ncm" in proc.stdout  # the console table's title
    assert "random_features" not in proc.stdout + runs[0].read_text()


def test_unnamed_features_are_called_precomputed_in_sweep_dirs(tmp_path):
    cfg = compose_train(["dataset=features"], output_dir=tmp_path)
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "0_features_precomputed_sea"
    assert OmegaConf.select(compose_train([], tmp_path), "hydra.sweep.subdir") == "0_digits_random_features_sea"


@pytest.mark.parametrize("override, named", [("method.augmentr.eta=0.3", "method.augmentr.eta"),
                                             ("epochs=3", "epochs")])
def test_a_misspelt_key_is_refused_naming_it(override, named, tmp_path):
    with pytest.raises(ConfigCompositionException, match=rf"Could not override '{named}'"):
        compose_train([override], output_dir=tmp_path)


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    # what a killed extraction leaves: its lock file and its holder record (a pid no longer alive)
    (tmp_path / "k.lock").write_text("")
    (tmp_path / "k.holder.json").write_text(json.dumps({"pid": 2**22 + 7, "host": os.uname().nodename,
                                                        "since": "yesterday"}))
    # timeout 0: one attempt, no waiting, so a lock file that blocked would raise TimeoutError here
    with key_lock(tmp_path, "k", timeout=0):
        assert json.loads((tmp_path / "k.holder.json").read_text())["pid"] == os.getpid()


def test_nan_features_from_a_backbone_are_refused_naming_the_split():
    x = torch.ones(4, 3)
    x[2, 1] = float("inf")
    with pytest.raises(ValueError, match="train: 1 feature rows contain NaN/Inf"):
        check_features(x, "train")
    check_features(torch.ones(4, 3), "train")
