"""Feature normalisation shared by every method; fitted on the training split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("l2", "center_l2", "none")


class FeatureNormalizer(nn.Module):
    """``l2`` (the paper's), ``center_l2`` (subtract the training mean, then L2) or ``none``.

    The training mean is a buffer, so it is saved with the classifier and applied to every
    split exactly as it was during training.
    """

    def __init__(self, mode: str = "l2", dim: int | None = None):
        super().__init__()
        if mode not in NORMS:
            raise ValueError(f"norm={mode!r} is unknown: choose one of {NORMS}")
        self.mode = mode
        self.register_buffer("mean", torch.zeros(dim or 0))

    def fit(self, train_features: torch.Tensor) -> "FeatureNormalizer":
        self.mean = train_features.mean(dim=0) if self.mode == "center_l2" else torch.zeros(
            train_features.shape[1], dtype=train_features.dtype, device=train_features.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        return F.normalize(x - self.mean, dim=1)
