"""Fine-tuning on the GPU in bf16: one epoch, its checkpoint, a killed job resumed from it that
ends where the uninterrupted run does."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from gpu_helpers import fit_context
from helpers import compose_train
from hydra.utils import instantiate

from sealab.backbones.timm_backbone import TimmBackbone
from sealab.data.imagefolder import ImageFolderDataset

EPOCHS, BATCH = 2, 4


class Killed(Exception):
    pass


class Seen(L.Callback):
    """The precision the trainer ran in, the step training started at, the batches trained; a
    job killed right after optimiser step ``kill_at`` (before any checkpoint of that step)."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.precision, self.start, self.batches = kill_at, None, None, 0

    def on_train_start(self, trainer, module):
        self.precision, self.start = trainer.precision, trainer.global_step

    def on_train_batch_end(self, trainer, *args):
        self.batches += 1
        if trainer.global_step == self.kill_at:
            raise Killed


def finetune(train, device, run_dir, seen: Seen) -> dict[str, torch.Tensor]:
    cfg = compose_train(["method=finetune", "method.precision=bf16-mixed", "method.optimizer.lr=0.05",
                         f"method.epochs={EPOCHS}",
                         f"method.batch_size={BATCH}"])
    L.seed_everything(0, verbose=False)
    backbone = TimmBackbone("resnet10t", pretrained=False, img_size=32, name="resnet10t_random_init")
    scorer = instantiate(cfg.method).fit_images(train, None, backbone, fit_context(device, 3, run_dir=run_dir,
                                                                                    callbacks=[seen])).scorer
    return {k: v.clone() for k, v in scorer.state_dict().items()}


@pytest.mark.gpu
def test_one_bf16_epoch_then_a_resumed_job_ends_with_the_uninterrupted_weights(device, image_folder, tmp_path):
    train = ImageFolderDataset(root=image_folder).split("train")
    steps = -(-len(train) // BATCH)  # an epoch's optimiser steps (no last batch of one image here)
    assert len(train) % BATCH != 1
    uninterrupted = finetune(train, device, None, Seen())

    killed = Seen(kill_at=steps + 1)  # one epoch done and saved, then one step of the next
    with pytest.raises(Killed):
        finetune(train, device, tmp_path, killed)
    assert killed.precision == "bf16-mixed"
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == steps

    resumed = Seen()
    weights = finetune(train, device, tmp_path, resumed)  # the same command in the same run dir
    assert (resumed.precision, resumed.start, resumed.batches) == ("bf16-mixed", steps, (EPOCHS - 1) * steps)
    assert weights.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.isfinite(weights[key].float()).all(), key
        # bf16 autocast and cuDNN's non-deterministic kernels: close, not bit-equal, on a GPU.
        torch.testing.assert_close(weights[key], value, rtol=1e-2, atol=1e-3, msg=key)
    # The epoch after the checkpoint moved the weights beyond that tolerance.
    assert not torch.allclose(saved["state_dict"]["heads.0.weight"], uninterrupted["head.weight"],
                              rtol=1e-2, atol=1e-3)
