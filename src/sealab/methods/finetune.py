"""Full fine-tuning: the backbone and a new linear head trained together on augmented images."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from sealab.backbones.base import Backbone
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import image_loader, resolve_workers
from sealab.heads.linear import LinearHead
from sealab.methods.base import FitContext, FitResult, HeadModule, ImageMethod


def augmented_transform(backbone: TimmBackbone) -> v2.Compose:
    """The protocol's training augmentation: random-resized crop and horizontal flip at the
    backbone's input size, normalised with the model's own mean/std."""
    config = backbone.data_config
    return v2.Compose([
        v2.PILToTensor(),
        v2.RGB(),
        v2.RandomResizedCrop(backbone.img_size, interpolation=v2.InterpolationMode(config["interpolation"]),
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(config["mean"]), std=list(config["std"])),
    ])


class FineTuneModule(HeadModule):
    """Trains every weight of ``backbone`` and ``head``; the learning rate follows a cosine
    from its initial value to 0 over all optimiser steps of the run."""

    def __init__(self, backbone: Backbone, head: LinearHead, optimizer: Callable[..., torch.optim.Optimizer]):
        super().__init__([head])
        if not any(p.requires_grad for p in backbone.parameters()):
            raise ValueError(f"backbone {backbone.name} has no trainable weights: unfreeze() it first")
        self.backbone, self.optimizer_factory = backbone, optimizer

    @property
    def head(self) -> LinearHead:
        return self.heads[0]

    def head_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)).unsqueeze(1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, y = batch
        loss = self.head.loss(self.head(self.backbone(images)), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        # Stepped every batch, as the reference does: the decay ends at 0 however short the run.
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


class FineTune(ImageMethod):
    """``method=finetune``: the transfer benchmark's full fine-tuning baseline.

    A copy of the backbone is unfrozen (BatchNorm uses batch statistics while training) and
    trained with a new ``head`` on random-resized-crop + flip augmented images; the configured
    backbone itself stays frozen and unchanged. ``steps``, when set, replaces ``epochs``
    (the reference trains 5000 steps of batch 64).
    """

    def __init__(self, name: str, head: Callable[..., LinearHead],
                 optimizer: Callable[..., torch.optim.Optimizer], epochs: int = 50,
                 steps: int | None = None, batch_size: int = 64, num_workers: int | str = 0):
        super().__init__(name)
        self.head_factory, self.optimizer = head, optimizer
        self.epochs, self.steps, self.batch_size, self.num_workers = epochs, steps, batch_size, num_workers

    def fit_images(self, train: Dataset, val: Dataset | None, backbone: Backbone,
                   ctx: FitContext) -> FitResult:
        if not isinstance(backbone, TimmBackbone):
            raise TypeError(f"method={self.name} fine-tunes a timm model, but backbone {backbone.name} is a "
                            f"{type(backbone).__name__}: choose e.g. backbone=resnet10t_random_init or resnet50")
        tuned = copy.deepcopy(backbone).unfreeze()
        head = self.head_factory(in_features=backbone.feature_dim, task=ctx.task)
        module = FineTuneModule(tuned, head, self.optimizer)
        # A last batch of one image would make BatchNorm (in train mode) fail: drop only that one.
        workers = resolve_workers(self.num_workers, ctx.device)
        train_loader = image_loader(train, augmented_transform(backbone), self.batch_size, workers,
                                    shuffle=True, seed=ctx.seed, drop_last=len(train) % self.batch_size == 1)
        val_loader = None if val is None else image_loader(val, backbone.transform, self.batch_size,
                                                           workers)
        trainer = ctx.make_trainer(max_epochs=-1 if self.steps else self.epochs, max_steps=self.steps or -1,
                                   limit_val_batches=0 if val is None else 1.0)
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        return FitResult(nn.Sequential(OrderedDict(backbone=tuned.freeze(), head=head)).cpu().eval())
