"""Augmenters that move each feature one step along a unit direction and back onto the sphere.

SeA and its ablations differ only in the direction: the loss gradient itself
(``GradientStep``), or a convex combination of other examples of the batch (``SpanStep``)
whose weights come from the gradient (SeA), from chance (``sea_random``) or from the
gradient restricted to same-class examples (``sea_sameclass``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import FeatureAugmenter
from sealab.heads.linear import LinearHead


def unit_gradient(head: LinearHead, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss / d x_i normalised to unit length per row (a zero gradient stays zero).

    The "sum" reduction drops the 1/B factor, which only risks underflow: the direction
    does not depend on it.
    """
    g = head.input_grad(x, y, reduction="sum")
    return g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


class DirectionStep(FeatureAugmenter):
    """``x~ = normalize(x + eta * d)`` with ``d`` (unit rows) from ``direction``."""

    def __init__(self, eta: float):
        super().__init__()
        self.eta = eta

    def direction(self, x: torch.Tensor, y: torch.Tensor,
                  head: LinearHead) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The direction rows, and which rows to move (None: every row)."""
        raise NotImplementedError

    def augment(self, x: torch.Tensor, y: torch.Tensor,
                head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        d, moved = self.direction(x, y, head)
        x_aug = F.normalize(x + self.eta * d, dim=1)
        if moved is not None:
            x_aug = torch.where(moved[:, None], x_aug, x)
        return x_aug, y


class GradientStep(DirectionStep):
    """``sea_noproj``: SeA without the projection, the normalised gradient is the direction
    (an L2 FGSM step in feature space): ``x~ = normalize(x + eta * ghat)``."""

    def direction(self, x, y, head):
        return unit_gradient(head, x, y), None


def span_softmax(scores: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Softmax of ``scores`` (B x B) over each row's partners; a row without any gets zeros.
    ``allowed`` None means every ``j != i`` (the common case, without building a mask)."""
    if allowed is None:
        if len(scores) < 2:
            return torch.zeros_like(scores)
        return torch.softmax(scores.fill_diagonal_(float("-inf")), dim=1)
    alone = ~allowed.any(dim=1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    # An all -inf row would give 0/0 = NaN: give it finite scores, then zero weights.
    return torch.softmax(scores.masked_fill(alone, 0.0), dim=1).masked_fill(alone, 0.0)


def rows_with_partners(allowed: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """Which rows ``span_softmax`` gives weights to (None: every row)."""
    if allowed is not None:
        return allowed.any(dim=1)
    # Every row has partners, unless the batch has a single example.
    return None if batch_size > 1 else torch.zeros(batch_size, dtype=torch.bool, device=device)


class SpanStep(DirectionStep):
    """The direction ``normalize(sum_j q_ij x_j)`` lies in the span of other examples:
    ``q_i = softmax_j(scores_ij)`` over the partners ``j`` of ``i`` (by default every
    ``j != i``). A row without partners gets zero weights and is left unaugmented."""

    def scores(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """B x B logits of the weights; only partner entries are used."""
        raise NotImplementedError

    def partners(self, y: torch.Tensor, head: LinearHead) -> torch.Tensor | None:
        """B x B bool: may example ``j`` contribute to the direction of example ``i``?
        None means every ``j != i``."""
        return None

    def weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead,
                allowed: torch.Tensor | None) -> torch.Tensor:
        """``q`` (B x B): rows sum to 1 over partners (0 elsewhere), or are all 0 without any."""
        return span_softmax(self.scores(x, y, head), allowed)

    def moved(self, allowed: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        return rows_with_partners(allowed, len(x), x.device)

    def direction_weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        return self.weights(x, y, head, self.partners(y, head))

    def direction(self, x, y, head):
        allowed = self.partners(y, head)
        return F.normalize(self.weights(x, y, head, allowed) @ x, dim=1), self.moved(allowed, x)
