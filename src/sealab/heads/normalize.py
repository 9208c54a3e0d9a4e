"""Feature normalisation shared by every method; fitted on the training split."""

from __future__ import annotations

import torch
from torch import nn

from sealab.features.ondisk import NpyRows

NORMS = ("l2", "center_l2", "none")
EPS = 1e-12  # F.normalize's


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

    def fit_rows(self, rows: NpyRows, block_rows: int) -> "FeatureNormalizer":
        """``fit`` on features left on disk: the mean is accumulated block by block (in float64,
        so it may differ from ``fit``'s float32 mean in the last bits)."""
        self.mean = rows.mean(block_rows) if self.mode == "center_l2" else torch.zeros(rows.dim)
        return self

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` in place on ``x`` (a streamed block: no second copy of it is made)."""
        if self.mode == "none":
            return x
        if self.mode == "center_l2":
            x.sub_(self.mean)
        # As F.normalize computes it, so streamed and in-memory features are bit-identical.
        return x.div_(x.norm(dim=1, keepdim=True).clamp_min(EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mode == "none" else self.normalize_(x.clone())
