"""Fine-tuning: it trains the whole backbone (a copy), learns, anneals to 0, runs end to end;
a killed job resumes exactly; layer-wise lr decay, gradient accumulation, precision."""

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
from sealab.methods.image_training import checkpoint_to_resume, resolve_precision
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
    assert (path.parent / "checkpoints" / "last.ckpt").is_file()  # in the run dir, to resume from


class Killed(Exception):
    pass


class KillAt(L.Callback):
    """Stands for a job killed right after optimiser step ``step`` (before its checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Killed


class Steps(L.Callback):
    """The global step training starts at and the number of batches trained."""

    def __init__(self):
        self.start, self.batches = None, 0

    def on_train_start(self, trainer, module):
        self.start = trainer.global_step

    def on_train_batch_end(self, *args):
        self.batches += 1


RESUME_DATA, RESUME_EPOCHS, RESUME_BATCH = dict(n=12, seed=0), 3, 4  # 3 steps an epoch, 9 in all


def fit_for_resume(tmp_path, run_dir, *settings, callbacks=()):
    L.seed_everything(0)
    method = finetune(tmp_path, f"method.epochs={RESUME_EPOCHS}", f"method.batch_size={RESUME_BATCH}", *settings)
    ctx = fit_context(3, callbacks=callbacks, run_dir=run_dir)
    return snapshot(method.fit_images(ColourImages(**RESUME_DATA), None, tiny_backbone(), ctx).scorer)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run never killed (and never checkpointed), on one thread as the tests are."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield fit_for_resume(tmp_path_factory.mktemp("uninterrupted"), None)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("every, killed_at, saved_at, resume_from", [
    (2, 6, 4, None),  # mid-epoch checkpoint; relaunched in its own run dir: resumes automatically
    (None, 5, 3, "killed"),  # epoch-end checkpoint; another run dir, pointed at the killed one
])
def test_a_killed_job_resumes_at_its_saved_step_and_ends_with_the_uninterrupted_weights(
        tmp_path, uninterrupted, every, killed_at, saved_at, resume_from):
    every = f"method.checkpoint_every_n_steps={every or 'null'}"
    with pytest.raises(Killed):
        fit_for_resume(tmp_path, tmp_path / "killed", every, callbacks=[KillAt(killed_at)])
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == saved_at
    # The steps after the checkpoint still change the weights: equality below is not trivial.
    assert not torch.allclose(saved["state_dict"]["heads.0.weight"], uninterrupted["head.weight"], atol=1e-4)
    steps = Steps()
    resumed = fit_for_resume(tmp_path, tmp_path / ("killed" if resume_from is None else "relaunched"), every,
                             *([f"method.resume_from={tmp_path / resume_from}"] if resume_from else []),
                             callbacks=[steps])
    assert steps.start == saved_at
    assert steps.batches == RESUME_EPOCHS * RESUME_DATA["n"] // RESUME_BATCH - saved_at  # nothing replayed
    assert uninterrupted.keys() == resumed.keys()
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    """E.g. a sweep run again into the same dirs with another lr: not continued silently."""
    fit_for_resume(tmp_path, tmp_path / "job", "method.epochs=1")
    with pytest.raises(ValueError, match=r"other settings: optimizer: .*lr=0.05.* there, .*lr=0.1.* here"):
        fit_for_resume(tmp_path, tmp_path / "job", "method.epochs=1", "method.optimizer.lr=0.1")
    fit_for_resume(tmp_path, tmp_path / "job", "method.epochs=1", "method.checkpoint_every_n_steps=1")


def test_resume_from_names_what_it_needs(tmp_path):
    run_dir = tmp_path / "run"
    assert checkpoint_to_resume(None, run_dir) is None  # a fresh run
    with pytest.raises(FileNotFoundError, match="method.resume_from=last"):
        checkpoint_to_resume("last", run_dir)
    with pytest.raises(FileNotFoundError, match="no run dir"):
        checkpoint_to_resume("last", None)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.touch()
    assert checkpoint_to_resume(None, run_dir) == checkpoint_to_resume("last", run_dir) == last
    assert checkpoint_to_resume(str(run_dir), tmp_path / "new") == last
    assert checkpoint_to_resume(str(last), None) == last


def tiny_vit():
    return TimmBackbone("vit_tiny_patch16_224", pretrained=False, img_size=32, name="vit_tiny_random_init")


def test_layer_decay_gives_each_block_its_hand_worked_rate(tmp_path):
    lr, head_lr, decay, wd = 0.1, 0.3, 0.5, 1e-4
    method = finetune(tmp_path, f"method.optimizer.lr={lr}", f"method.head_lr={head_lr}",
                      f"method.layer_decay={decay}", f"method.optimizer.weight_decay={wd}")
    module = method.build(ColourImages(4, seed=0), tiny_vit(), make_ctx())
    rate = {id(p): (g["lr"], g.get("weight_decay", wd)) for g in module.param_groups for p in g["params"]}
    params = dict(module.backbone.model.named_parameters())
    assert len(rate) == len(params) + 1 == sum(len(g["params"]) for g in module.param_groups)
    # ViT-Tiny has 12 blocks: block i trains at 0.1 * 0.5^(12 - i) (block 11: 0.05, block 0:
    # 0.1 / 4096); the embeddings one step deeper (0.1 / 8192); the final norm as block 11.
    expected = {"cls_token": (0.1 / 8192, 0), "pos_embed": (0.1 / 8192, 0),
                "patch_embed.proj.weight": (0.1 / 8192, wd), "patch_embed.proj.bias": (0.1 / 8192, 0),
                "blocks.0.attn.qkv.weight": (0.1 / 4096, wd), "blocks.0.norm1.weight": (0.1 / 4096, 0),
                "blocks.5.mlp.fc1.weight": (0.1 / 128, wd), "blocks.11.mlp.fc2.bias": (0.05, 0),
                "blocks.11.attn.proj.weight": (0.05, wd), "norm.weight": (0.05, 0)}
    for name, (lr_, wd_) in expected.items():
        assert rate[id(params[name])] == pytest.approx((lr_, wd_), rel=1e-12), name
    assert rate[id(module.head.weight)] == (head_lr, wd)
    # Without layer decay: one backbone group at optimizer.lr, the head at head_lr.
    plain = finetune(tmp_path, f"method.head_lr={head_lr}").build(ColourImages(4, seed=0), tiny_vit(), make_ctx())
    assert [g.get("lr") for g in plain.param_groups] == [None, head_lr]


def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b(tmp_path):
    """A ViT (LayerNorm, no BatchNorm): a step on 2 accumulated batches of 4 is a step on the
    same 8 images (the sampler's order and augmentations do not depend on the batch size)."""
    train = ColourImages(24, seed=0)

    def fit(*settings):
        L.seed_everything(0)
        method = finetune(tmp_path, "method.epochs=1", "method.optimizer.lr=0.01", *settings)
        return snapshot(method.fit_images(train, None, tiny_vit(), make_ctx()).scorer)

    big = fit("method.batch_size=8")
    accumulated = fit("method.batch_size=4", "method.accumulate_grad_batches=2")
    for key, value in big.items():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-4, atol=1e-6, msg=key)
    small = fit("method.batch_size=4")  # twice the steps: far from it
    assert not torch.allclose(small["head.weight"], big["head.weight"], rtol=1e-3, atol=1e-5)


def test_precision_auto_is_32_on_the_cpu_and_bf16_mixed_on_a_bf16_gpu(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "32"
    assert resolve_precision(32, torch.device("cpu")) == "32"  # as YAML reads `precision: 32`
    assert resolve_precision("16-mixed", torch.device("cuda", 0)) == "16-mixed"
    with pytest.raises(ValueError, match="method.precision='fp16'"):
        resolve_precision("fp16", torch.device("cpu"))
