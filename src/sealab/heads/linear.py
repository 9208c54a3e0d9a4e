"""The bias-free linear head with SeA's temperature/margin loss and its closed-form gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Module):
    """``logits = x W^T`` (no bias) trained with

        multi-class:  lamda * CE((logits - delta * T) / lamda, T)            (mean over the batch)
        multi-label:  lamda * BCE((logits - delta * (2Y - 1)) / lamda, Y)    (mean over batch x classes)

    where ``T`` is the one-hot (or soft, e.g. mixup) target. ``input_grad`` gives
    d loss / d x in closed form, so augmenters need no second backward pass.
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

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y)
        z = self._scaled(logits, t)
        if self.multilabel:
            return self.lamda * F.binary_cross_entropy_with_logits(z, t)
        return self.lamda * F.cross_entropy(z, t)

    def logit_grad(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d logits. ``reduction="sum"`` drops the 1/B (and 1/C) averaging factor."""
        t = self.targets(y)
        z = self._scaled(logits, t)
        if self.multilabel:
            grad = torch.sigmoid(z) - t
            scale = logits.numel()
        else:
            grad = torch.softmax(z, dim=1) - t
            scale = logits.shape[0]
        return grad / scale if reduction == "mean" else grad

    def input_grad(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d x with ``W`` held fixed: ``logit_grad @ W``."""
        return self.logit_grad(self(x), y, reduction) @ self.weight
