"""Gaussian discriminant analysis with one shared, shrunk covariance (linear, training-free)."""

from __future__ import annotations

import torch

from sealab.methods.base import METHOD, Features, FitContext, FitResult, Method
from sealab.methods.closed_form import (
    ClosedFormMethod,
    LinearScorer,
    require_every_class,
)
from sealab.rules import number, validate
from sealab.task import MultiClass


def ledoit_wolf_shrinkage(xc: torch.Tensor) -> float:
    """Ledoit-Wolf (2004) shrinkage ``a`` of the covariance ``S = xc^T xc / n`` of centred rows
    towards ``mu I`` (``mu = tr S / d``):

        delta = ||S - mu I||_F^2 / d                            (distance of S to the target)
        beta  = (mean_i ||x_i||^4 - ||S||_F^2) / (n d)          (estimation error of S)
        a     = min(beta, delta) / delta
    """
    n, d = xc.shape
    cov = xc.T @ xc / n
    mu = cov.trace() / d
    fro2 = cov.square().sum()
    delta = (fro2 - d * mu**2) / d
    beta = (xc.square().sum(1).square().mean() - fro2) / (n * d)
    return 0.0 if float(delta) <= 0 else float(torch.clamp(beta, min=0).minimum(delta) / delta)


class GaussianDiscriminant(ClosedFormMethod):
    """``method=gda``: classes are Gaussians with means ``mu_c`` and one covariance ``S``:

        S_a = (1 - a) S + a (tr S / d) I       (S: pooled within-class covariance, divided by n)
        W_c = S_a^-1 mu_c,   b_c = log p_c - mu_c^T S_a^-1 mu_c / 2

    i.e. scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=a)``.
    ``shrinkage="auto"`` takes ``a`` from Ledoit-Wolf on the class-centred features
    (scikit-learn's "auto" instead standardises each class's features first). Solved in
    float64 by Cholesky; the chosen ``a`` is reported in ``selected``.
    """

    RULES = {**Method.RULES, "shrinkage": number(0, 1, also=("auto",))}  # auto: Ledoit-Wolf

    def __init__(self, name: str, shrinkage: float | str = "auto"):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, shrinkage=shrinkage)
        super().__init__(name)
        self.shrinkage = shrinkage

    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        if not isinstance(ctx.task, MultiClass):
            raise ValueError("gda models one class per example and cannot fit multi-label targets: "
                             "use method=logreg, knn or ncm for multi-label datasets")
        x = train[0].double()
        t = ctx.task.positives(train[1], x.dtype)
        counts = t.sum(0)
        require_every_class(counts, self.name)
        means = (t.T @ x) / counts[:, None]
        xc = x - means[train[1]]
        a = ledoit_wolf_shrinkage(xc) if self.shrinkage == "auto" else float(self.shrinkage)
        cov = (1 - a) * (xc.T @ xc / len(x))
        cov.diagonal().add_(a * float(xc.square().sum()) / (len(x) * x.shape[1]))
        chol, info = torch.linalg.cholesky_ex(cov)
        if info != 0:
            raise ValueError(f"gda: the shrunk covariance (shrinkage={a:g}) is singular; "
                             "set method.shrinkage=auto or a larger value")
        weight = torch.cholesky_solve(means.T, chol).T
        bias = torch.log(counts / len(x)) - 0.5 * (means * weight).sum(1)
        return FitResult(LinearScorer(weight, bias), selected={"shrinkage": a})
