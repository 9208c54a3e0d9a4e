"""dataset=features: no backbone runs, so nothing names the default backbone config
(random_features); the run directories, console and metrics.json name the features' own."""

import torch
from helpers import compose_train, metrics_files, read_metrics, run_train
from omegaconf import OmegaConf


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
