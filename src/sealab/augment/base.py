"""The augmenter interface the probe module calls."""

from __future__ import annotations

import torch
from torch import nn

from sealab.heads.linear import LinearHead


class FeatureAugmenter(nn.Module):
    """Transforms a training batch of normalised features before the head sees it.

    ``augment`` runs under ``torch.no_grad()``: the result is a constant for the update.
    It may also return new targets (soft ones, e.g. for mixup). ``loss`` is the training
    loss on the augmented batch; augmenters that change the loss itself (ISDA) override it.
    """

    def augment(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        return head.loss(head(x), y)

    def on_train_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Hook for schedules (e.g. ISDA's ramp); nothing by default."""
