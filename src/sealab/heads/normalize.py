"""Feature normalisation shared by every method; fitted on the training split."""

from __future__ import annotations

import torch
from torch import nn

from sealab.features.ondisk import NpyRows
from sealab.rules import problem
from sealab.settings import NORMS, rule

EPS = 1e-12  # F.normalize's


def unsafe_norms(norms: torch.Tensor) -> torch.Tensor:
    """Rows whose norm, summed in the features' own precision, cannot be trusted: the sum of
    squares overflowed (entries above ~1e19 in float32 give inf) or its small terms underflowed
    (a norm below ``sqrt(tiny) / eps``: entries below ~1e-19 square to 0 in float32)."""
    info = torch.finfo(norms.dtype)
    return ~torch.isfinite(norms) | (norms < info.tiny ** 0.5 / info.eps)


class FeatureNormalizer(nn.Module):
    """``l2`` (the paper's), ``center_l2`` (subtract the training mean, then L2) or ``none``.

    The training mean is a buffer, so it is saved with the classifier and applied to every
    split exactly as it was during training. L2 gives the same unit rows at any scale of the
    features (1e20 or 1e-30 included).
    """

    def __init__(self, mode: str = "l2", dim: int | None = None):
        super().__init__()
        if (found := problem("norm", mode, rule("norm"))) is not None:
            raise ValueError(found)
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
        # As F.normalize computes it, so features of ordinary scale keep their exact numbers;
        # streamed and in-memory features both come through here and stay bit-identical.
        norms = x.norm(dim=1, keepdim=True)
        unsafe = unsafe_norms(norms).flatten().nonzero().flatten()
        if len(unsafe):
            # Scaled by its largest entry first, a row's norm is summed without overflow or
            # underflow (a row of zeros stays zeros).
            rows = x[unsafe]
            rows.div_(rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny))
            x[unsafe] = rows
            norms[unsafe] = rows.norm(dim=1, keepdim=True)
        return x.div_(norms.clamp_min(EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mode == "none" else self.normalize_(x.clone())
