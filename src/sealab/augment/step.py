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


class SpanStep(DirectionStep):
    """The direction ``normalize(sum_j q_ij x_j)`` lies in the span of other examples:
    ``q_i = softmax_j(scores_ij)`` over the partners ``j`` of ``i`` (by default every
    ``j != i``). A row without partners gets zero weights and is left unaugmented."""

    def scores(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """B x B logits of the weights; only partner entries are used."""
        raise NotImplementedError

    def partners(self, y: torch.Tensor) -> torch.Tensor | None:
        """B x B bool: may example ``j`` contribute to the direction of example ``i``?
        None means every ``j != i`` (the common case, without building a mask)."""
        return None

    @staticmethod
    def weights(scores: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """Softmax of ``scores`` over each row's partners; a row without any gets zeros."""
        if allowed is None:
            if len(scores) < 2:
                return torch.zeros_like(scores)
            return torch.softmax(scores.fill_diagonal_(float("-inf")), dim=1)
        alone = ~allowed.any(dim=1, keepdim=True)
        scores = scores.masked_fill(~allowed, float("-inf"))
        # An all -inf row would give 0/0 = NaN: give it finite scores, then zero weights.
        return torch.softmax(scores.masked_fill(alone, 0.0), dim=1).masked_fill(alone, 0.0)

    def direction_weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """``q`` (B x B): rows sum to 1 over partners (0 elsewhere), or are all 0 without any."""
        return self.weights(self.scores(x, y, head), self.partners(y))

    def direction(self, x, y, head):
        allowed = self.partners(y)
        q = self.weights(self.scores(x, y, head), allowed)
        if allowed is not None:
            moved = allowed.any(dim=1)
        else:  # every row moves, unless the batch has a single example
            moved = None if len(x) > 1 else torch.zeros(len(x), dtype=torch.bool, device=x.device)
        return F.normalize(q @ x, dim=1), moved
