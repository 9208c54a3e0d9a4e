"""SeA: semantic adversarial augmentation (Qian, Xu, Hu, ECCV 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import FeatureAugmenter
from sealab.heads.linear import LinearHead

MODES = ("clean", "faithful")
PUBLISHED_EPS = 1e-12  # F.normalize's default, as the reference code uses it


class SeA(FeatureAugmenter):
    """Push each feature along its loss-increasing direction projected onto the span of the
    other examples of the batch: ``x~ = normalize(x + eta * normalize(sum_j q_ij x_j))`` with
    ``q_i = softmax_{j != i}(ghat_i . x_j / alpha)`` and ``ghat_i`` the normalised gradient.

    ``mode="clean"`` normalises every gradient row exactly, masks the example itself before
    the softmax and leaves a batch of one unaugmented. ``mode="faithful"`` reproduces the
    reference implementation: gradient of the batch-mean loss normalised with eps 1e-12,
    softmax over all j, diagonal zeroed and renormalised (a batch of one gives NaN).
    """

    def __init__(self, eta: float = 0.8, alpha: float = 0.01, mode: str = "clean"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"SeA mode={mode!r} is unknown: choose one of {MODES}")
        self.eta, self.alpha, self.mode = eta, alpha, mode

    def direction_weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        """``q`` (B x B): weights of the other examples, rows sum to 1, zero diagonal."""
        if self.mode == "faithful":
            g_hat = F.normalize(head.input_grad(x, y), dim=1, eps=PUBLISHED_EPS)
            q = torch.softmax(g_hat @ x.T / self.alpha, dim=1)
            q = q - torch.diag_embed(torch.diagonal(q))
            return q / q.sum(dim=1, keepdim=True)
        # The 1/B factor only risks underflow; the direction does not depend on it.
        g = head.input_grad(x, y, reduction="sum")
        g_hat = g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        scores = (g_hat @ x.T / self.alpha).fill_diagonal_(float("-inf"))
        return torch.softmax(scores, dim=1)

    def augment(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "clean" and len(x) < 2:
            return x, y  # no other example to span a direction
        direction = F.normalize(self.direction_weights(x, y, head) @ x, dim=1)
        return F.normalize(x + self.eta * direction, dim=1), y
