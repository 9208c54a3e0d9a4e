"""Isotropic Gaussian noise in feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import AUGMENTER, Augmented, FeatureAugmenter
from sealab.rules import number, validate


class GaussianNoise(FeatureAugmenter):
    """``x~ = normalize(x + sigma * N(0, I))`` (per-coordinate std ``sigma``; the noise
    vector's length is about ``sigma * sqrt(d)``, so pick ``sigma`` with ``d`` in mind)."""

    RULES = {"sigma": number(0)}

    def __init__(self, sigma: float = 0.02):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, sigma=sigma)
        super().__init__()
        self.sigma = sigma

    def plan(self, batch, logits, head):
        return Augmented(batch.y, features=F.normalize(batch.x + self.sigma * torch.randn_like(batch.x), dim=1))
