"""Isotropic Gaussian noise in feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sealab.augment.base import Augmented, FeatureAugmenter


class GaussianNoise(FeatureAugmenter):
    """``x~ = normalize(x + sigma * N(0, I))`` (per-coordinate std ``sigma``; the noise
    vector's length is about ``sigma * sqrt(d)``, so pick ``sigma`` with ``d`` in mind)."""

    def __init__(self, sigma: float = 0.02):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def plan(self, batch, logits, head):
        return Augmented(batch.y, features=F.normalize(batch.x + self.sigma * torch.randn_like(batch.x), dim=1))
