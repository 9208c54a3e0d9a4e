"""The augmenter interface the probe calls, once per head and batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from sealab.heads.linear import LinearHead

# Where an augmenter's node sits in a config: its constructor's messages name the key a user sets.
AUGMENTER = "method.augmenter."
HALVED_GRAM_ROWS = 128


class cached_property:  # noqa: N801 (named as the functools one it replaces)
    """``functools.cached_property`` without its lock: Python 3.11's takes an RLock, which
    torch.compile cannot trace (``method.compile=inductor`` compiles the step that uses it)."""

    def __init__(self, compute: Callable[[Any], Any]):
        self.compute, self.name = compute, compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.compute(obj)
        return value


class SharedBatch:
    """A clean training batch and what the augmenters of every head may share, each computed
    at most once per batch: the Gram matrix ``X X^T`` and the squared row lengths."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None):
        self.x, self.y = x, y

    @cached_property
    def gram(self) -> torch.Tensor:
        """``X X^T`` from three quarters of the multiply-adds: it is symmetric, so the upper-right
        block is the mirror of the lower-left one (below ``HALVED_GRAM_ROWS`` rows the extra
        kernels cost more than the quarter saved; torch.compile cannot trace products written
        into slices of ``out``)."""
        x = self.x
        if len(x) < HALVED_GRAM_ROWS or torch.compiler.is_compiling():
            return x @ x.T
        h = len(x) // 2
        top, bottom = x[:h], x[h:]
        gram = torch.empty(len(x), len(x), dtype=x.dtype, device=x.device)
        torch.mm(top, top.T, out=gram[:h, :h])
        torch.mm(bottom, top.T, out=gram[h:, :h])
        torch.mm(bottom, bottom.T, out=gram[h:, h:])
        gram[:h, h:] = gram[h:, :h].T
        return gram

    @cached_property
    def sq_norms(self) -> torch.Tensor:
        if "gram" in self.__dict__:
            return self.gram.diagonal()
        return (self.x * self.x).sum(dim=1)

    def span_moments(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``||(Q X)_i||^2`` and ``x_i . (Q X)_i`` for a B x B ``Q``, by the cheaper route: from
        ``Q X`` (B^2 d multiply-adds) when d < B, else from the Gram matrix (B^3, shared by all
        heads): ``(Q G Q^T)_ii`` and ``(Q G)_ii``."""
        if self.x.shape[1] < len(self.x):
            qx = q @ self.x
            return (qx * qx).sum(dim=-1), (qx * self.x).sum(dim=-1)
        qg = q @ self.gram
        return (qg * q).sum(dim=-1), qg.diagonal(dim1=-2, dim2=-1)


@dataclass
class Augmented:
    """What the augmented batch is: ``mixing @ x`` (a B x B matrix: SeA, its span ablations and
    mixup move each feature to a combination of the batch's features), new ``features``
    (B x d), or, with neither, the clean features; with its (possibly soft) ``targets``.

    A mixing matrix lets the head train in logit space: ``(M X) W^T = M (X W^T)``, so the
    augmented logits cost a B x B x C product instead of a B x d x C one.
    """

    targets: torch.Tensor
    mixing: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing is not None:
            return self.mixing @ x
        return x if self.features is None else self.features

    def logits(self, clean_logits: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """The head's logits of the augmented batch, from those of the clean one."""
        if self.mixing is not None:
            return self.mixing @ clean_logits
        return clean_logits if self.features is None else head(self.features)

    def weight_grad_factors(self, logit_grad: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, F)`` with ``A @ F`` the weight gradient ``logit_grad^T (augmented batch)``. With
        a mixing matrix ``A = logit_grad^T M`` (C x B x B) and ``F`` the clean batch: no B x d
        product, and heads whose ``F`` is the clean batch share one product."""
        if self.mixing is not None:
            return logit_grad.mT @ self.mixing, x
        return logit_grad.mT, x if self.features is None else self.features


class FeatureAugmenter(nn.Module):
    """Decides, under ``torch.no_grad()``, how a training batch of normalised features is
    augmented for one head (``plan``); the result is a constant for the update.
    ``loss_and_grad`` gives the training loss on the augmented batch and its weight gradient
    in closed form; augmenters that change the loss itself (ISDA) override it."""

    # Whether a CUDA graph can capture the step (``method.compile``): no host synchronisation
    # (``.item()``, ``.tolist()``, a distribution's argument check) and no autograd in it.
    capturable = True

    def plan(self, batch: SharedBatch, logits: torch.Tensor, head: LinearHead) -> Augmented:
        """``logits`` are ``head(batch.x)``, which the probe has computed already."""
        raise NotImplementedError

    def loss_and_grad(self, plan: Augmented, logits: torch.Tensor, x: torch.Tensor,
                      head: LinearHead) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(loss, A, F)``: the head's loss on the augmented batch and its weight gradient as
        ``A @ F`` (``plan.weight_grad_factors``); ``F`` None means ``A`` is the gradient itself.
        ``logits`` are the clean batch's, ``x`` the clean batch."""
        loss, logit_grad = head.loss_and_logit_grad(plan.logits(logits, head), plan.targets)
        return loss, *plan.weight_grad_factors(logit_grad, x)

    @torch.no_grad()
    def augment(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented features and targets themselves (for inspection and tests)."""
        plan = self.plan(SharedBatch(x, y), head(x), head)
        return plan.apply(x), plan.targets

    def on_train_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Hook for schedules (e.g. ISDA's ramp); nothing by default."""
