"""Mixup of features and targets (Zhang et al., ICLR 2018), applied in feature space."""

from __future__ import annotations

import torch

from sealab.augment.base import AUGMENTER, Augmented, FeatureAugmenter
from sealab.rules import positive, validate


class Mixup(FeatureAugmenter):
    """``x~_i = l_i x_i + (1 - l_i) x_p(i)`` and the same mix of (one-hot / multi-hot)
    targets, with ``l_i ~ Beta(alpha, alpha)`` per example and ``p`` a random permutation
    of the batch. Features are not renormalised: the mixed logits are then exactly the
    mix of the two examples' logits, matching the mixed target."""

    # alpha: both parameters of the Beta distribution of the mixing weight (SeA's alpha is another setting).
    RULES = {"alpha": positive()}
    capturable = False  # Beta's argument check synchronises with the host

    def __init__(self, alpha: float = 1.0):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, alpha=alpha)
        super().__init__()
        self.alpha = alpha

    def plan(self, batch, logits, head):
        x = batch.x
        a = torch.tensor(self.alpha, dtype=x.dtype, device=x.device)
        lam = torch.distributions.Beta(a, a).sample((len(x), 1))
        partner = torch.randperm(len(x), device=x.device)
        t = head.task.targets(batch.y, x.dtype)
        mixed = lam * t + (1 - lam) * t[partner]
        # A label ignored (-1, VOC "difficult") in either example stays ignored.
        mixed = mixed.masked_fill((t < 0) | (t[partner] < 0), -1)
        # Row i of the mixing matrix: lam_i at i, 1 - lam_i at its partner (the same when paired with itself).
        mixing = torch.diag_embed(lam.squeeze(1))
        mixing[torch.arange(len(x), device=x.device), partner] += (1 - lam).squeeze(1)
        return Augmented(mixed, mixing=mixing)
