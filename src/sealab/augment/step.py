"""Augmenters that move each feature one step along a unit direction and back onto the sphere.

SeA and its ablations differ only in the direction: the loss gradient itself
(``GradientStep``), or a convex combination of other examples of the batch (``SpanStep``)
whose weights come from the gradient (SeA), from chance (``sea_random``) or from the
gradient restricted to same-class examples (``sea_sameclass``). A span step is a B x B
mixing matrix (``span_mixing``), so the head trains on it in logit space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import AUGMENTER, Augmented, FeatureAugmenter, SharedBatch
from sealab.heads.linear import LinearHead
from sealab.rules import number, validate

NORMALIZE_EPS = 1e-12  # F.normalize's: lengths below it are clamped, as in the reference code
ETA = number(0)  # the step's length on the unit sphere (0: no augmentation)


def unit_gradient(head: LinearHead, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss / d x_i normalised to unit length per row (a zero gradient stays zero), from the
    batch's logits. The "sum" reduction drops the 1/B factor, which only risks underflow:
    the direction does not depend on it."""
    g = head.logit_grad(logits, y, reduction="sum") @ head.weight
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


class GradientStep(FeatureAugmenter):
    """``sea_noproj``: SeA without the projection, the normalised gradient is the direction
    (an L2 FGSM step in feature space): ``x~ = normalize(x + eta * ghat)``."""

    RULES = {"eta": ETA}

    def __init__(self, eta: float = 0.8):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, eta=eta)
        super().__init__()
        self.eta = eta

    def plan(self, batch, logits, head):
        step = batch.x + self.eta * unit_gradient(head, logits, batch.y)
        return Augmented(batch.y, features=F.normalize(step, dim=1))


def span_softmax(scores: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Softmax of ``scores`` (B x B, or K x B x B for K heads) over each row's partners; a row
    without any gets zeros. ``allowed`` (B x B) None means every ``j != i`` (the common case,
    without building a mask)."""
    if allowed is None:
        if scores.shape[-1] < 2:
            return torch.zeros_like(scores)
        scores.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
        return torch.softmax(scores, dim=-1)
    alone = ~allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    # An all -inf row would give 0/0 = NaN: give it finite scores, then zero weights.
    return torch.softmax(scores.masked_fill(alone, 0.0), dim=-1).masked_fill(alone, 0.0)


def rows_with_partners(allowed: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """Which rows ``span_softmax`` gives weights to (None: every row)."""
    if allowed is not None:
        return allowed.any(dim=1)
    # Every row has partners, unless the batch has a single example.
    return None if batch_size > 1 else torch.zeros(batch_size, dtype=torch.bool, device=device)


def span_mixing(q: torch.Tensor, batch: SharedBatch, eta: float | torch.Tensor,
                moved: torch.Tensor | None) -> torch.Tensor:
    """The B x B matrix ``M`` with ``M X = normalize(X + eta * normalize(Q X))`` row by row
    (rows not ``moved`` stay as they are), from three numbers per row
    (``batch.span_moments``, ``batch.sq_norms``):

        ||(Q X)_i||^2,   x_i . (Q X)_i,   ||x_i||^2

    so the augmented batch itself (B x d) is never formed. Lengths are clamped at F.normalize's eps.
    K heads at once: ``q`` K x B x B and ``eta`` a K x 1 column give K matrices.
    """
    span_sq, cross = batch.span_moments(q)
    # 1 / max(||v||, eps) as one rsqrt of max(||v||^2, eps^2): fewer kernels per step
    c = span_sq.clamp_min(NORMALIZE_EPS**2).rsqrt_().mul_(eta)  # eta / ||(Q X)_i||
    # ||x_i + eta d_i||^2 = ||x_i||^2 + c (2 x_i . (Q X)_i + c ||(Q X)_i||^2), d_i = (Q X)_i / ||(Q X)_i||
    step_sq = torch.addcmul(cross, c, span_sq, value=0.5).mul_(2 * c).add_(batch.sq_norms)
    inv_step = step_sq.clamp_min_(NORMALIZE_EPS**2).rsqrt_()
    mixing = q * (c * inv_step)[..., None]
    mixing.diagonal(dim1=-2, dim2=-1).add_(inv_step)
    if moved is not None:
        mixing = torch.where(moved[:, None], mixing, torch.eye(q.shape[-1], dtype=q.dtype, device=q.device))
    return mixing


class SpanStep(FeatureAugmenter):
    """``x~ = normalize(x + eta * normalize(sum_j q_ij x_j))``: the direction lies in the span
    of other examples, ``q_i = softmax_j(scores_ij)`` over the partners ``j`` of ``i`` (by
    default every ``j != i``). A row without partners is left unaugmented."""

    RULES = {"eta": ETA}

    def __init__(self, eta: float):
        validate(type(self).__name__, SpanStep.RULES, prefix=AUGMENTER, eta=eta)
        super().__init__()
        self.eta = eta

    def scores(self, batch: SharedBatch, logits: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """B x B logits of the weights; only partner entries are used."""
        raise NotImplementedError

    def partners(self, y: torch.Tensor, head: LinearHead) -> torch.Tensor | None:
        """B x B bool: may example ``j`` contribute to the direction of example ``i``?
        None means every ``j != i``."""
        return None

    def weights(self, batch: SharedBatch, logits: torch.Tensor, head: LinearHead,
                allowed: torch.Tensor | None) -> torch.Tensor:
        """``q`` (B x B): rows sum to 1 over partners (0 elsewhere), or are all 0 without any."""
        return span_softmax(self.scores(batch, logits, head), allowed)

    def moved(self, allowed: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        return rows_with_partners(allowed, len(x), x.device)

    @torch.no_grad()
    def direction_weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        return self.weights(SharedBatch(x, y), head(x), head, self.partners(y, head))

    def plan(self, batch, logits, head):
        allowed = self.partners(batch.y, head)
        q = self.weights(batch, logits, head, allowed)
        return Augmented(batch.y, mixing=span_mixing(q, batch, self.eta, self.moved(allowed, batch.x)))
