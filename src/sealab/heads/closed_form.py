"""What the closed-form and other non-SGD methods share: input checks, targets, device, scorer."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sealab.data.base import check_labels
from sealab.features.extract import resolve_device
from sealab.methods import Features, FitContext, Method


def check_features(data: Features, ctx: FitContext, split: str) -> None:
    """Features must be n x d and targets must match the task declared by ``ctx``."""
    x, y = data
    if x.ndim != 2:
        raise ValueError(f"{split} features must be a 2-d (n x d) tensor, got shape {tuple(x.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{split}: {len(x)} feature rows but {len(y)} targets; they must match")
    if len(x) == 0:
        raise ValueError(f"{split} split is empty: a closed-form method needs training examples")
    if ctx.multilabel:
        if y.ndim != 2 or y.shape[1] != ctx.num_classes:
            raise ValueError(f"{split}: multi-label targets must be n x {ctx.num_classes} "
                             f"(multi-hot), got shape {tuple(y.shape)}")
    else:
        if y.ndim != 1 or y.is_floating_point():
            raise ValueError(f"{split}: multi-class targets must be a 1-d integer tensor of class "
                             f"indices, got {y.dtype} of shape {tuple(y.shape)}")
        check_labels(y, ctx.num_classes, split)


def positive_targets(y: torch.Tensor, num_classes: int, multilabel: bool,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n x C matrix of 1 (positive) / 0: one-hot for class indices; for multi-hot targets the
    VOC "difficult" marker (-1) counts as not positive."""
    if multilabel:
        return (y > 0).to(dtype)
    return F.one_hot(y.long(), num_classes).to(dtype)


def require_every_class(counts: torch.Tensor, method: str) -> None:
    """Class-mean methods cannot score a class that has no training example."""
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"{method}: classes {missing[:10]}{'...' if len(missing) > 10 else ''} have "
                         "no positive training example, so their mean is undefined. Use a split "
                         "containing every class, or method=logreg / method=knn.")


class LinearScorer(nn.Module):
    """Fixed affine scorer ``x W^T + b`` (optionally of the L2-normalised ``x``), computed in
    the dtype of ``weight`` (float64 keeps an ill-conditioned solve's precision)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, cosine: bool = False):
        super().__init__()
        self.cosine = cosine
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", weight.new_zeros(len(weight)) if bias is None
                             else bias.detach().to(weight.dtype).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            x = F.normalize(x, dim=1)
        return x.to(self.weight.dtype) @ self.weight.T + self.bias


def _to(data: Features | None, device: torch.device) -> Features | None:
    return None if data is None else (data[0].to(device), data[1].to(device))


class ClosedFormMethod(Method):
    """A method fitted directly on the whole feature matrix, in closed form or by full-batch
    optimisation: no Lightning trainer, no augmenter.

    Subclasses implement ``solve`` on inputs already checked and moved to the compute device.
    ``selected`` holds what the method chose itself (e.g. a validation-selected
    hyper-parameter); the run records it in metrics.json.
    """

    def __init__(self, name: str, device: str = "auto"):
        super().__init__(name)
        self.device = device
        self.selected: dict[str, Any] = {}

    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> nn.Module:
        check_features(train, ctx, "train")
        if val is not None:
            check_features(val, ctx, "val")
            if val[0].shape[1] != train[0].shape[1]:
                raise ValueError(f"val features have {val[0].shape[1]} dims, train {train[0].shape[1]}")
        device = resolve_device(self.device, fallback=train[0].device)  # else where the features are
        self.selected = {}
        return self.solve(_to(train, device), _to(val, device), ctx).cpu().eval()

    @abstractmethod
    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> nn.Module: ...
