"""SeA: semantic adversarial augmentation (Qian, Xu, Hu, ECCV 2024), and its ablations."""

from __future__ import annotations

import torch

from sealab.augment.base import AUGMENTER
from sealab.augment.step import (
    NORMALIZE_EPS,
    SpanStep,
    rows_with_partners,
    span_softmax,
)
from sealab.heads.linear import LinearHead
from sealab.rules import one_of, positive, validate


def gradient_dots(head: LinearHead, logits: torch.Tensor, y: torch.Tensor,
                  reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_i . x_j)`` (B x B) and ``||g_i||^2`` (B) for ``g = d loss / d x``, without forming ``g``.

    With ``r = d loss / d logits`` (B x C) and ``g_i = W^T r_i``: ``g_i . x_j = r_i . (W x_j)``
    reuses the logits, and ``||g_i||^2 = r_i^T (W W^T) r_i`` needs only the C x C Gram matrix,
    which saves the two B x d products of the direct route. ``logits`` are ``head(x)``; K heads
    at once (``sealab.augment.batched``): K x B x C logits and a K x C x d weight give K x B x B
    and K x B.
    """
    r = head.logit_grad(logits, y, reduction)
    return r @ logits.mT, ((r @ head.weight_gram()) * r).sum(dim=-1)


def normalized_scores(dots: torch.Tensor, norms_sq: torch.Tensor, floor_sq: float,
                      alpha: float | torch.Tensor) -> torch.Tensor:
    """``dots_ij / (alpha max(||g_i||, sqrt(floor_sq)))``, in place of ``dots``: one rsqrt of the
    clamped squares, scaled by ``1 / alpha``, then one product (few kernels per step). K heads:
    ``dots`` K x B x B, ``norms_sq`` K x B, ``alpha`` a K x 1 column."""
    return dots.mul_(norms_sq.clamp_min(floor_sq).rsqrt_().mul_(1 / alpha)[..., None])


class CleanNumerics:
    """SeA as the paper states it: every gradient row normalised exactly (the 1/B factor of
    the batch mean dropped, so nothing underflows), the example itself masked before the
    softmax, a row without partners (a batch of one) left unaugmented."""

    reduction = "sum"

    def weights(self, dots, norms_sq, alpha, allowed):
        # A gradient shorter than sqrt(tiny) (~1e-19 in float32) is zero up to rounding: the floor
        # keeps its dots (zeros) finite.
        return span_softmax(normalized_scores(dots, norms_sq, torch.finfo(dots.dtype).tiny, alpha), allowed)

    def moved(self, allowed, x):
        return rows_with_partners(allowed, len(x), x.device)


class PublishedNumerics:
    """The reference implementation's numbers: the batch-mean gradient normalised with eps
    1e-12 (rows below it stay short, which flattens the softmax), softmax over all ``j``, then
    the diagonal zeroed and the rows renormalised. No guard: a batch of one gives NaN."""

    reduction = "mean"

    def weights(self, dots, norms_sq, alpha, allowed):
        if allowed is not None:
            raise ValueError("the reference code has no restricted span (same-class SeA): use mode=clean")
        q = torch.softmax(normalized_scores(dots, norms_sq, NORMALIZE_EPS**2, alpha), dim=-1)
        q.diagonal(dim1=-2, dim2=-1).zero_()  # q - diag(q): exact zeros
        return q.div_(q.sum(dim=-1, keepdim=True))

    def moved(self, allowed, x):
        return None


NUMERICS = {"clean": CleanNumerics(), "faithful": PublishedNumerics()}


class SeA(SpanStep):
    """Push each feature along its loss-increasing direction projected onto the span of the
    other examples of the batch: ``x~ = normalize(x + eta * normalize(sum_j q_ij x_j))`` with
    ``q_i = softmax_{j != i}(ghat_i . x_j / alpha)`` and ``ghat_i`` the normalised gradient.

    ``mode`` picks the numerics: ``clean`` (``CleanNumerics``) or ``faithful``
    (``PublishedNumerics``, the reference code's, to compare with published numbers).
    """

    # alpha: the temperature of the softmax over partners (mixup's alpha is another setting).
    RULES = {**SpanStep.RULES, "alpha": positive(), "mode": one_of(*NUMERICS)}

    def __init__(self, eta: float = 0.8, alpha: float = 0.01, mode: str = "clean"):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, eta=eta, alpha=alpha, mode=mode)
        super().__init__(eta)
        self.alpha, self.mode, self.numerics = alpha, mode, NUMERICS[mode]

    def weights(self, batch, logits, head, allowed):
        dots, norms_sq = gradient_dots(head, logits, batch.y, self.numerics.reduction)
        return self.numerics.weights(dots, norms_sq, self.alpha, allowed)

    def moved(self, allowed, x):
        return self.numerics.moved(allowed, x)


class SameClassSeA(SeA):
    """``sea_sameclass``: SeA projecting onto the span of same-class examples only
    (``j != i`` with ``y_j == y_i``; multi-label: sharing at least one label).
    An example with no such partner in the batch stays unaugmented."""

    def __init__(self, eta: float = 0.8, alpha: float = 0.01, mode: str = "clean"):
        super().__init__(eta, alpha, mode)
        if mode != "clean":
            raise ValueError(f"same-class SeA has no mode={mode!r} (the reference code has no such "
                             "variant): use mode=clean")

    def partners(self, y, head):
        same = head.task.shares_a_class(y)
        return same & ~torch.eye(len(y), dtype=torch.bool, device=y.device)


class RandomSpan(SpanStep):
    """``sea_random``: SeA's step along a *random* direction in the span of the other
    examples: ``q_i ~ Dirichlet(concentration)`` over ``j != i`` (1: uniform on the simplex;
    large: close to the batch mean of the others). Drawn from torch's global RNG, so a
    seeded run is deterministic."""

    RULES = {**SpanStep.RULES, "concentration": positive()}
    capturable = False  # Gamma's argument check synchronises with the host

    def __init__(self, eta: float = 0.8, concentration: float = 1.0):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, eta=eta, concentration=concentration)
        super().__init__(eta)
        self.concentration = concentration

    def scores(self, batch, logits, head):
        # softmax(log g) = g / sum(g) with g ~ Gamma(c, 1): a Dirichlet(c) draw over the partners.
        x = batch.x
        c = torch.tensor(self.concentration, dtype=x.dtype, device=x.device)
        gamma = torch.distributions.Gamma(c, torch.ones_like(c)).sample((len(x), len(x)))
        return gamma.clamp_min(torch.finfo(x.dtype).tiny).log()
