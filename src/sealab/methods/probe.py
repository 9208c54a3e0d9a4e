"""The linear probe: one LightningModule for every feature augmenter, and its ``method``."""

from __future__ import annotations

from typing import Callable

import torch

from sealab.augment.base import FeatureAugmenter
from sealab.features.batches import FeatureDataModule
from sealab.heads.linear import LinearHead
from sealab.methods.base import Features, FitContext, FitResult, HeadModule, Method


class LinearProbeModule(HeadModule):
    """Trains ``head`` on (optionally augmented) fixed features; evaluates ``argmax W x``."""

    def __init__(self, head: LinearHead, augmenter: FeatureAugmenter | None,
                 optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None):
        super().__init__()
        self.head, self.augmenter = head, augmenter
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # (loss * batch size) per step, reduced once per epoch: a per-step ``self.log``
        # costs more than a whole linear training step on CPU.
        self._epoch_losses: list[torch.Tensor] = []
        self._epoch_examples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def training_step(self, batch: Features, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.augmenter is None:
            loss = self.head.loss(self.head(x), y)
        else:
            with torch.no_grad():
                x, y = self.augmenter.augment(x, y, self.head)
            loss = self.augmenter.loss(x, y, self.head)
        self._epoch_losses.append(loss.detach() * len(x))
        self._epoch_examples += len(x)
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_losses, self._epoch_examples = [], 0
        if self.augmenter is not None:
            self.augmenter.on_train_epoch_start(self.current_epoch, self.trainer.max_epochs)

    def on_train_epoch_end(self) -> None:
        if self._epoch_losses:  # the example-weighted mean, as ``self.log(on_epoch=True)`` gives
            self.log("train/loss", torch.stack(self._epoch_losses).sum() / self._epoch_examples)
        if not torch.isfinite(self.head.weight).all():
            raise FloatingPointError(
                f"classifier weights became NaN/Inf in epoch {self.current_epoch}. With SeA "
                "mode=faithful this is the reference code's failure on a last batch of one "
                "example (n = k*batch_size + 1): use mode=clean or method.drop_last=true; "
                "otherwise lower the learning rate."
            )

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.head.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


class LinearProbe(Method):
    """``method=linear`` and every feature augmenter: SGD on a bias-free linear head."""

    def __init__(self, name: str, head: Callable[..., LinearHead],
                 optimizer: Callable[..., torch.optim.Optimizer],
                 augmenter: FeatureAugmenter | None = None, scheduler=None, epochs: int = 100,
                 batch_size: int = 256, drop_last: bool = False):
        super().__init__(name)
        self.head_factory, self.optimizer, self.scheduler = head, optimizer, scheduler
        self.augmenter, self.epochs = augmenter, epochs
        self.batch_size, self.drop_last = batch_size, drop_last

    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        head = self.head_factory(in_features=train[0].shape[1], task=ctx.task)
        module = LinearProbeModule(head, self.augmenter, self.optimizer, self.scheduler)
        data = FeatureDataModule(train, val, batch_size=self.batch_size,
                                 drop_last=self.drop_last, seed=ctx.seed)
        # Without a validation split, switch the validation loop off (and its warning).
        trainer = ctx.make_trainer(max_epochs=self.epochs, **({} if val else {"limit_val_batches": 0}))
        trainer.fit(module, datamodule=data)
        return FitResult(head.cpu().eval())
