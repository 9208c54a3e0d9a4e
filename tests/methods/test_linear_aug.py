"""Linear probing with augmentation: the backbone stays exactly as it was, the head learns,
and `sealab-train method=linear_aug` runs with the default experiment."""

import re

import lightning as L
import pytest
import torch
from helpers import compose_train, fit_context, metrics_files, read_metrics, run_train
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from test_finetune import ColourImages, Recorder, one_thread, snapshot, tiny_backbone  # noqa: F401 (fixture)

from sealab.features.extract import run_model
from sealab.task import MultiClass


def test_it_trains_only_the_head_and_learns_colours(tmp_path):
    L.seed_everything(0)
    backbone = tiny_backbone()  # a ResNet: BatchNorm running statistics would move in train mode
    before = snapshot(backbone)
    halving = "{_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}"
    method = instantiate(compose_train(["method=linear_aug", "method.epochs=4", "method.batch_size=16",
                                        f"method.scheduler={halving}"], output_dir=tmp_path).method)
    recorder = Recorder()
    classifier = method.fit_images(ColourImages(48, seed=0), ColourImages(12, seed=1), backbone,
                                   fit_context(3, callbacks=[recorder], run_dir=tmp_path)).scorer
    assert recorder.lrs == [lr for lr in (1.6, 0.8, 0.4, 0.2) for _ in range(3)]  # the probe's kind of scheduler
    for key, value in backbone.state_dict().items():
        assert torch.equal(before[key], value), key
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert classifier.backbone is backbone and classifier.normalize.mode == "l2"
    scores, y = run_model(classifier, ColourImages(60, seed=2), backbone.transform, torch.device("cpu"))
    assert MultiClass(3).metrics(scores, y)["top1"] > 0.9  # chance: 1/3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("override, message", [
    ("method.scheduler=cosine", "method.scheduler='cosine'"),
    ("norm=unit", "norm='unit'"),
    ("method.accumulate_grad_batches=0", "method.accumulate_grad_batches=0"),
])
def test_bad_settings_are_named_before_training(tmp_path, override, message):
    with pytest.raises(InstantiationException, match=re.escape(message)):
        instantiate(compose_train(["method=linear_aug", override], output_dir=tmp_path).method)


def test_sealab_train_runs_it_with_the_default_experiment(tmp_path):
    run_train(tmp_path, "experiment=quickstart", "method=linear_aug", "method.epochs=2")
    (path,) = metrics_files(tmp_path / "outputs")
    record = read_metrics(path)
    assert (record["method"], record["backbone"]) == ("linear_aug", "random_features")
    assert {"val/top1", "test/top1"} <= record["metrics"].keys()
    assert record["metrics"]["test/top1"] > 0.3  # 10 classes: chance 0.1
    assert record["extract_seconds"] == 0 and not (tmp_path / "cache").exists()
