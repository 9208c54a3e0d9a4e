"""Nearest class mean: cosine similarity to each class's (re-normalised) mean feature."""

from __future__ import annotations

import torch.nn.functional as F

from sealab.heads.closed_form import ClosedFormMethod, LinearScorer, positive_targets, require_every_class
from sealab.methods import Features, FitContext


class NearestClassMean(ClosedFormMethod):
    """``score_c(x) = cos(x, m_c)`` with ``m_c`` the mean of the L2-normalised training features
    of class ``c`` (multi-label: of the examples where ``c`` is positive). Needs no validation."""

    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> LinearScorer:
        x, y = train
        t = positive_targets(y, ctx.num_classes, ctx.multilabel, x.dtype)
        counts = t.sum(0)
        require_every_class(counts, self.name)
        means = (t.T @ F.normalize(x, dim=1)) / counts[:, None]
        return LinearScorer(F.normalize(means, dim=1), cosine=True)
