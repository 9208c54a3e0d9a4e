"""SeA: semantic adversarial augmentation (Qian, Xu, Hu, ECCV 2024), and its ablations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.step import SpanStep
from sealab.heads.linear import LinearHead

MODES = ("clean", "faithful")
PUBLISHED_EPS = 1e-12  # F.normalize's default, as the reference code uses it


def gradient_dots(head: LinearHead, x: torch.Tensor, y: torch.Tensor,
                  reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_i . x_j)`` (B x B) and ``||g_i||`` (B) for ``g = d loss / d x``, without forming ``g``.

    With ``r = d loss / d logits`` (B x C) and ``g_i = W^T r_i``: ``g_i . x_j = r_i . (W x_j)``
    reuses the logits, and ``||g_i||^2 = r_i^T (W W^T) r_i`` needs only the C x C Gram matrix,
    which saves the two B x d products of the direct route (about 40% of a SeA step).
    """
    logits = head(x)
    r = head.logit_grad(logits, y, reduction)
    norms = ((r @ (head.weight @ head.weight.T)) * r).sum(dim=1).clamp_min(0).sqrt()
    return r @ logits.T, norms


class SeA(SpanStep):
    """Push each feature along its loss-increasing direction projected onto the span of the
    other examples of the batch: ``x~ = normalize(x + eta * normalize(sum_j q_ij x_j))`` with
    ``q_i = softmax_{j != i}(ghat_i . x_j / alpha)`` and ``ghat_i`` the normalised gradient.

    ``mode="clean"`` normalises every gradient row exactly, masks the example itself before
    the softmax and leaves a batch of one unaugmented. ``mode="faithful"`` reproduces the
    reference implementation: gradient of the batch-mean loss normalised with eps 1e-12,
    softmax over all j, diagonal zeroed and renormalised (a batch of one gives NaN).
    """

    def __init__(self, eta: float = 0.8, alpha: float = 0.01, mode: str = "clean"):
        super().__init__(eta)
        if mode not in MODES:
            raise ValueError(f"SeA mode={mode!r} is unknown: choose one of {MODES}")
        self.alpha, self.mode = alpha, mode

    def scores(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        dots, norms = gradient_dots(head, x, y, reduction="sum")
        return dots / norms.clamp_min(torch.finfo(x.dtype).tiny)[:, None] / self.alpha

    def direction_weights(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        if self.mode == "clean":
            return super().direction_weights(x, y, head)
        dots, norms = gradient_dots(head, x, y, reduction="mean")
        q = torch.softmax(dots / norms.clamp_min(PUBLISHED_EPS)[:, None] / self.alpha, dim=1)
        q = q - torch.diag_embed(torch.diagonal(q))
        return q / q.sum(dim=1, keepdim=True)

    def direction(self, x, y, head):
        if self.mode == "clean":
            return super().direction(x, y, head)
        # No guard: a batch of one gives NaN, as in the reference code.
        return F.normalize(self.direction_weights(x, y, head) @ x, dim=1), None


class SameClassSeA(SeA):
    """``sea_sameclass``: SeA projecting onto the span of same-class examples only
    (``j != i`` with ``y_j == y_i``; multi-label: sharing at least one label).
    An example with no such partner in the batch stays unaugmented."""

    def __init__(self, eta: float = 0.8, alpha: float = 0.01, mode: str = "clean"):
        if mode != "clean":
            raise ValueError(f"same-class SeA has no mode={mode!r} (the reference code has no such "
                             "variant): use mode=clean")
        super().__init__(eta, alpha, mode)

    def partners(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 2:  # multi-hot; -1 ("difficult", ignored) is not a label the two share
            positive = (y > 0).float()
            same = (positive @ positive.T) > 0
        else:
            same = y[:, None] == y[None, :]
        return same & ~torch.eye(len(y), dtype=torch.bool, device=y.device)


class RandomSpan(SpanStep):
    """``sea_random``: SeA's step along a *random* direction in the span of the other
    examples: ``q_i ~ Dirichlet(concentration)`` over ``j != i`` (1: uniform on the simplex;
    large: close to the batch mean of the others). Drawn from torch's global RNG, so a
    seeded run is deterministic."""

    def __init__(self, eta: float = 0.8, concentration: float = 1.0):
        super().__init__(eta)
        if concentration <= 0:
            raise ValueError(f"concentration must be positive, got {concentration}")
        self.concentration = concentration

    def scores(self, x: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        # softmax(log g) = g / sum(g) with g ~ Gamma(c, 1): a Dirichlet(c) draw over the partners.
        c = torch.tensor(self.concentration, dtype=x.dtype, device=x.device)
        gamma = torch.distributions.Gamma(c, torch.ones_like(c)).sample((len(x), len(x)))
        return gamma.clamp_min(torch.finfo(x.dtype).tiny).log()
