"""The bias-free linear head with SeA's temperature/margin loss and its closed-form gradient."""

from __future__ import annotations

import math

import torch
from torch import nn

from sealab.rules import number, positive, validate
from sealab.task import Task


class LinearHead(nn.Module):
    """``logits = x W^T`` (no bias) trained with the task's loss at temperature ``lamda`` and
    margin ``delta``:

        multi-class:  lamda * CE((logits - delta * T) / lamda, T)            (mean over the batch)
        multi-label:  lamda * BCE((logits - delta * (2Y - 1)) / lamda, Y)    (mean over the kept entries)

    ``input_grad`` gives d loss / d x in closed form, so augmenters need no second backward pass.
    """

    # The config node (``method.head``, a partial) sets lamda and delta; the method passes the rest.
    RULES = {"lamda": positive(), "delta": number()}

    def __init__(self, in_features: int, task: Task, lamda: float = 0.1, delta: float = 0.0):
        validate(type(self).__name__, self.RULES, prefix="method.head.", lamda=lamda, delta=delta)
        super().__init__()
        self.task, self.lamda, self.delta = task, lamda, delta
        self.weight = nn.Parameter(torch.empty(task.num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.loss(logits, y, self.lamda, self.delta)

    def weight_gram(self) -> torch.Tensor:
        """``W W^T`` (C x C)."""
        return self.weight @ self.weight.T

    def loss_and_logit_grad(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and d loss / d logits, computed together (the probe's training step)."""
        return self.task.loss_and_logit_grad(logits, y, self.lamda, self.delta)

    def logit_grad(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d logits. ``reduction="sum"`` drops the averaging factor (1/B, or 1/kept
        entries when multi-label)."""
        return self.task.logit_grad(logits, y, self.lamda, self.delta, reduction)

    def input_grad(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """d loss / d x with ``W`` held fixed: ``logit_grad @ W``."""
        return self.logit_grad(self(x), y, reduction) @ self.weight
