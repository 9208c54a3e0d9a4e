"""Fine-tuning: it trains the whole backbone (a copy), learns, anneals to 0, runs end to end."""

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train, fit_context, metrics_files, read_metrics, run_train
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import Dataset

from sealab.backbones.random_features import RandomReLUFeatures
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import extract_features, run_model
from sealab.task import MultiClass, MultiLabel

COLOURS = np.array([(220, 30, 30), (30, 200, 40), (40, 40, 230)], dtype=np.uint8)


class ColourImages(Dataset):
    """Noisy single-colour 12x12 images; the target is the colour (or, multi-label, which of
    the red/green/blue channels are lit, with ``ignored`` entries set to -1)."""

    def __init__(self, n: int, seed: int, multilabel: bool = False, ignored: float = 0.0):
        rng = np.random.default_rng(seed)
        if multilabel:
            self.targets = rng.integers(0, 2, size=(n, 3)).astype(np.float32)
            self.targets[self.targets.sum(1) == 0, 0] = 1
            colours = self.targets * 220 + 20
            self.targets[rng.random((n, 3)) < ignored] = -1
        else:
            self.targets = np.arange(n) % 3
            colours = COLOURS[self.targets].astype(np.float32)
        noise = rng.normal(0, 25, size=(n, 12, 12, 3))
        self.images = np.clip(colours[:, None, None, :] + noise, 0, 255).astype(np.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        target = self.targets[i]
        return Image.fromarray(self.images[i]), (torch.from_numpy(target) if target.ndim else int(target))


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Convolutions on 32x32 images are too small to gain from threads, and on a busy machine a
    second thread makes every op wait for a time slice (10-40x slower): use one, here and in
    the subprocess."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def tiny_backbone():
    return TimmBackbone("resnet10t", pretrained=False, img_size=32, name="resnet10t_random_init")


class Recorder(L.Callback):
    """The learning rate used by every step and the mean training loss of every epoch."""

    def __init__(self):
        self.lrs, self.losses, self.final_lr = [], [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, module):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_train_end(self, trainer, module):
        self.final_lr = trainer.optimizers[0].param_groups[0]["lr"]


def make_ctx(recorder=None, multilabel=False):
    return fit_context(3, multilabel, callbacks=[recorder] if recorder else [])


def finetune(tmp_path, *overrides):
    """``method=finetune`` as configured in conf/, with a larger lr for these few steps."""
    cfg = compose_train(["method=finetune", "method.optimizer.lr=0.05", "method.batch_size=16",
                         *overrides], output_dir=tmp_path)
    return instantiate(cfg.method)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_finetuning_trains_a_copy_of_the_backbone_and_leaves_the_configured_one_frozen(tmp_path):
    backbone = tiny_backbone()
    before = snapshot(backbone)
    classifier = finetune(tmp_path, "method.epochs=1").fit_images(ColourImages(40, seed=0), None, backbone, make_ctx()).scorer
    tuned = classifier.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], tuned[k])}
    assert any(k.endswith("conv1.0.weight") for k in changed)  # the first convolution was trained
    assert any(k.endswith("running_mean") for k in changed)  # BatchNorm ran in train mode
    for key, value in backbone.state_dict().items():  # the probe's extractor is untouched
        assert torch.equal(before[key], value), key
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not any(m.training for m in backbone.modules())
    classifier.train()  # the returned classifier is frozen again: a fixed model
    assert not any(m.training for m in classifier.backbone.modules())


def test_unfreeze_is_explicit_and_freeze_restores_the_frozen_path():
    backbone = tiny_backbone()
    assert backbone.frozen and not backbone.train().training
    backbone.unfreeze()
    assert all(m.training for m in backbone.modules())
    assert all(p.requires_grad for p in backbone.parameters())
    backbone.eval()
    assert not backbone.training and not backbone.frozen
    # Extraction always freezes: its features never depend on batch statistics or move weights.
    before = snapshot(backbone)
    extract_features(backbone, ColourImages(10, seed=1), torch.device("cpu"), batch_size=4)
    assert backbone.frozen and not backbone.train().training
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_it_learns_colours_well_above_chance(tmp_path):
    backbone, recorder = tiny_backbone(), Recorder()
    classifier = finetune(tmp_path, "method.epochs=4").fit_images(ColourImages(48, seed=0), ColourImages(12, seed=1),
                                               backbone, make_ctx(recorder)).scorer
    scores, y = run_model(classifier, ColourImages(60, seed=2), backbone.transform, torch.device("cpu"), batch_size=32)
    assert MultiClass(3).metrics(scores, y)["top1"] > 0.9  # chance: 1/3
    assert recorder.losses[-1] < 0.5 * recorder.losses[0]


def test_learning_rate_follows_the_cosine_to_zero(tmp_path):
    recorder, steps, lr = Recorder(), 6, 0.05
    method = finetune(tmp_path, f"method.steps={steps}", f"method.optimizer.lr={lr}")
    method.fit_images(ColourImages(24, seed=0), None, tiny_backbone(), make_ctx(recorder))
    expected = [lr * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert recorder.lrs == pytest.approx(expected, rel=1e-6)
    assert recorder.final_lr == pytest.approx(0.0, abs=1e-12)


def test_multilabel_fine_tuning_learns_with_ignored_targets(tmp_path):
    backbone = tiny_backbone()
    train = ColourImages(64, seed=0, multilabel=True, ignored=0.3)
    classifier = finetune(tmp_path, "method.epochs=4").fit_images(train, None, backbone, make_ctx(multilabel=True)).scorer
    scores, y = run_model(classifier, ColourImages(48, seed=3, multilabel=True, ignored=0.2), backbone.transform,
                          torch.device("cpu"))
    assert scores.shape == (48, 3) and torch.isfinite(scores).all()
    assert MultiLabel(3).metrics(scores, y)["map11"] > 0.8
    # The configured head's loss is plain binary cross-entropy over the entries that are not -1.
    kept = y >= 0
    assert (~kept).any()
    torch.testing.assert_close(classifier.head.loss(scores, y), F.binary_cross_entropy_with_logits(scores[kept], y[kept]))


def test_fine_tuning_needs_a_timm_backbone_and_images(tmp_path):
    with pytest.raises(TypeError, match="backbone=resnet10t_random_init"):
        finetune(tmp_path).fit_images(ColourImages(8, seed=0), None, RandomReLUFeatures(16, input_size=4), make_ctx())


def test_sealab_train_fine_tunes_end_to_end(tmp_path):
    run_train(tmp_path, "method=finetune", "backbone=resnet10t_random_init", "method.epochs=1")
    (path,) = metrics_files(tmp_path / "outputs")
    record = read_metrics(path)
    assert (record["method"], record["backbone"]) == ("finetune", "resnet10t_random_init")
    assert {"val/top1", "test/top1", "test/mean_per_class"} <= record["metrics"].keys()
    assert record["extract_seconds"] == 0 and record["cache_hit"] is False and record["fit_seconds"] > 0
    assert not (tmp_path / "cache").exists()  # nothing was extracted
    state = torch.load(path.parent / "classifier.pt", weights_only=True)
    assert "head.weight" in state and any(k.startswith("backbone.model.") for k in state)
