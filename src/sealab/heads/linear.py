"""The bias-free linear head with SeA's temperature/margin loss and its closed-form gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Module):
    """``logits = x W^T`` (no bias) trained with

        multi-class:  lamda * CE((logits - delta * T) / lamda, T)            (mean over the batch)
        multi-label:  lamda * BCE((logits - delta * (2Y - 1)) / lamda, Y)    (mean over the kept entries)

    where ``T`` is the one-hot (or soft, e.g. mixup) target. Multi-label targets are 1, 0 or
    -1; -1 ("difficult" in VOC) entries are left out of the loss and get zero gradient.
    ``input_grad`` gives d loss / d x in closed form, so augmenters need no second backward pass:
    the lamda scaling cancels, leaving softmax(z) - T (multi-class) and mask * (sigmoid(z) - Y)
    (multi-label), averaged over the batch or over the kept entries respectively.
    """

    def __init__(self, in_features: int, num_classes: int, lamda: float = 0.1,
                 delta: float = 0.0, multilabel: bool = False):
        super().__init__()
        if lamda <= 0:
            raise ValueError(f"lamda must be positive, got {lamda}")
        self.lamda, self.delta, self.multilabel = lamda, delta, multilabel
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Float target matrix (B x C) from class indices, soft targets or multi-hot labels."""
        if y.ndim == 2:
            return y.to(self.weight.dtype)
        return F.one_hot(y, self.num_classes).to(self.weight.dtype)

    def _scaled(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        margin = (2 * t - 1) if self.multilabel else t
        return (logits - self.delta * margin) / self.lamda

    @staticmethod
    def _kept(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Multi-label ``(targets with ignored entries set to 0, 0/1 mask, number kept)``."""
        mask = (t >= 0).to(t.dtype)
        return t * mask, mask, mask.sum().clamp_min(1)  # a fully ignored batch has zero loss

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y)
        if self.multilabel:
            t, mask, kept = self._kept(t)
            z = self._scaled(logits, t)
            bce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
            return self.lamda * (bce * mask).sum() / kept
        return self.lamda * F.cross_entropy(self._scaled(logits, t), t)

    def logit_grad(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d logits. ``reduction="sum"`` drops the averaging factor (1/B, or 1/kept
        entries when multi-label)."""
        t = self.targets(y)
        if self.multilabel:
            t, mask, kept = self._kept(t)
            grad = (torch.sigmoid(self._scaled(logits, t)) - t) * mask
            scale = kept
        else:
            grad = torch.softmax(self._scaled(logits, t), dim=1) - t
            scale = logits.shape[0]
        return grad / scale if reduction == "mean" else grad

    def input_grad(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d x with ``W`` held fixed: ``logit_grad @ W``."""
        return self.logit_grad(self(x), y, reduction) @ self.weight
