"""What the closed-form and other non-SGD methods share: input checks, the device, a scorer."""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from sealab.methods.base import Features, FitContext, FitResult, Method


def check_features(data: Features, ctx: FitContext, split: str) -> None:
    """Features must be a non-empty n x d matrix with one valid target per row."""
    x, y = data
    if x.ndim != 2:
        raise ValueError(f"{split} features must be a 2-d (n x d) tensor, got shape {tuple(x.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{split}: {len(x)} feature rows but {len(y)} targets; they must match")
    if len(x) == 0:
        raise ValueError(f"{split} split is empty: a closed-form method needs training examples")
    ctx.task.check_targets(y, split)


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
    optimisation, on the run's device: no Lightning trainer, no augmenter.

    Subclasses implement ``solve`` on inputs already checked and moved to ``ctx.device``.
    """

    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        check_features(train, ctx, "train")
        if val is not None:
            check_features(val, ctx, "val")
            if val[0].shape[1] != train[0].shape[1]:
                raise ValueError(f"val features have {val[0].shape[1]} dims, train {train[0].shape[1]}")
        result = self.solve(_to(train, ctx.device), _to(val, ctx.device), ctx)
        result.scorer = result.scorer.cpu().eval()
        return result

    @abstractmethod
    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult: ...
