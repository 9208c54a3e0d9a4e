"""Nearest class mean: cosine similarity to each class's (re-normalised) mean feature."""

from __future__ import annotations

import torch.nn.functional as F

from sealab.methods.base import Features, FitContext, FitResult
from sealab.methods.closed_form import (
    ClosedFormMethod,
    LinearScorer,
    require_every_class,
)


class NearestClassMean(ClosedFormMethod):
    """``score_c(x) = cos(x, m_c)`` with ``m_c`` the mean of the L2-normalised training features
    of class ``c`` (multi-label: of the examples where ``c`` is positive). Needs no validation."""

    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        x, y = train
        t = ctx.task.positives(y, x.dtype)
        counts = t.sum(0)
        require_every_class(counts, self.name)
        means = (t.T @ F.normalize(x, dim=1)) / counts[:, None]
        return FitResult(LinearScorer(F.normalize(means, dim=1), cosine=True))
