"""L2-regularised logistic regression by full-batch L-BFGS, weight decay chosen on validation."""

from __future__ import annotations

import logging

import numpy as np
import torch

from sealab.methods.base import METHOD, Features, FitContext, FitResult, Method
from sealab.methods.closed_form import ClosedFormMethod, LinearScorer
from sealab.rules import BOOL, COUNT, number, one_of, positive, text, validate
from sealab.task import Task

log = logging.getLogger(__name__)
Solution = tuple[torch.Tensor, torch.Tensor]


class LogisticProblem:
    """The objective ``sum_i loss_i(W x_i + b) + weight_decay / 2 * ||W||_F^2`` on one dataset.

    Multi-class: softmax cross-entropy. Multi-label: binary cross-entropy summed over classes
    (= one independent binary problem per class, as one-vs-rest), "difficult" (-1) entries
    left out. The bias is not penalised. The optimiser sees the objective divided by ``n``
    (same minimiser, O(1) values and gradients).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, task: Task):
        # Tensors made under inference_mode (the feature extractor's) cannot enter autograd.
        self.x, self.y = (t.clone() if t.is_inference() else t for t in (x, y))
        self.task = task

    def mean_objective(self, weight: torch.Tensor, bias: torch.Tensor, weight_decay: float) -> torch.Tensor:
        penalty = weight_decay / 2 * weight.square().sum()
        return (self.task.log_loss(self.x @ weight.T + bias, self.y) + penalty) / len(self.x)

    def solve(self, weight_decay: float, init: Solution | None = None, max_iter: int = 100,
              tol: float = 1e-6, history_size: int = 20) -> tuple[Solution, int]:
        """Minimiser (from zeros or ``init``) and the number of L-BFGS iterations it took."""
        d = self.x.shape[1]
        weight, bias = (self.x.new_zeros(self.task.num_classes, d), self.x.new_zeros(self.task.num_classes)) \
            if init is None else (init[0].clone(), init[1].clone())
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                      tolerance_change=1e-12, history_size=history_size,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self.mean_objective(weight, bias, weight_decay)
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        return (weight.detach(), bias.detach()), optimizer.state[weight]["n_iter"]


class LogisticRegression(ClosedFormMethod):
    """``method=logreg``: the closed-form reference of the transfer protocol (Ericsson et al. 2021).

    Weight decay ``lambda`` is scikit-learn's ``1 / C``: the minimiser of
    ``sum_i CE_i + lambda / 2 * ||W||^2`` equals that of ``LogisticRegression(C=1/lambda)``
    (lbfgs, multinomial, intercept unpenalised), whose objective is
    ``C * sum_i CE_i + ||W||^2 / 2``. In SGD terms it is weight decay ``lambda / n`` on the
    mean loss. This is the convention of the protocol's grid (its code sets ``C = 1 / wd``).

    With a validation split and ``weight_decay: null``: fit on train for every value of
    ``logspace(log10(grid_min), log10(grid_max), grid_size)`` (strongest first, each
    warm-started from the previous solution), keep the value with the best validation
    ``selection_metric`` (ties: the smallest), then refit on train+val with it (``refit``).
    The run then reports the validation scores of the selected value measured before the
    refit (``val_metrics``), not scores on data the final classifier was trained on. Without validation (``fit_on=trainval``) a fixed
    ``weight_decay`` is required.
    """

    DTYPES = {"float32": torch.float32, "float64": torch.float64}  # what the solver computes in
    # weight_decay null: selected on val; selection_metric null: the task's primary metric (the
    # task checks the name: it depends on the dataset)
    RULES = {**Method.RULES, "weight_decay": number(0, nullable=True), "grid_min": positive(),
             "grid_max": positive(), "grid_size": COUNT, "selection_metric": text(nullable=True), "refit": BOOL,
             "max_iter": COUNT, "tol": positive(), "history_size": COUNT, "dtype": one_of(*DTYPES)}

    def __init__(self, name: str, weight_decay: float | None = None, grid_min: float = 1e-6,
                 grid_max: float = 1e5, grid_size: int = 45, selection_metric: str | None = None,
                 refit: bool = True, max_iter: int = 100, tol: float = 1e-6, history_size: int = 20,
                 dtype: str = "float32"):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, weight_decay=weight_decay,
                 grid_min=grid_min, grid_max=grid_max, grid_size=grid_size, selection_metric=selection_metric,
                 refit=refit, max_iter=max_iter, tol=tol, history_size=history_size, dtype=dtype)
        if grid_min > grid_max:  # a relation between two settings, not a rule of one
            raise ValueError(f"method.grid_min={grid_min} > method.grid_max={grid_max}: the grid runs "
                             "from grid_min up to grid_max")
        super().__init__(name)
        self.weight_decay, self.selection_metric, self.refit = weight_decay, selection_metric, refit
        self.grid = np.logspace(np.log10(grid_min), np.log10(grid_max), grid_size)
        self.solver = {"max_iter": max_iter, "tol": tol, "history_size": history_size}
        self.dtype = self.DTYPES[dtype]

    def _problem(self, data: Features, ctx: FitContext) -> LogisticProblem:
        return LogisticProblem(data[0].to(self.dtype), data[1], ctx.task)

    def _fit(self, problem: LogisticProblem, weight_decay: float, init: Solution | None = None,
             warn: bool = True) -> tuple[Solution, bool]:
        """Solution and whether L-BFGS reached ``tol`` within ``max_iter`` iterations."""
        solution, iterations = problem.solve(weight_decay, init, **self.solver)
        converged = iterations < self.solver["max_iter"]
        if warn and not converged:
            log.warning("logreg: weight_decay=%.3g stopped at max_iter=%d before reaching tol=%g",
                        weight_decay, self.solver["max_iter"], self.solver["tol"])
        return solution, converged

    def solve(self, train: Features, val: Features | None, ctx: FitContext) -> FitResult:
        if self.weight_decay is not None:
            solution, _ = self._fit(self._problem(train, ctx), self.weight_decay)
            return FitResult(LinearScorer(*solution), selected={"weight_decay": float(self.weight_decay)})
        if val is None:
            raise ValueError("logreg selects weight decay on the validation split, but this run has "
                             "none (fit_on=trainval): set method.weight_decay=<value>, e.g. the "
                             "selected.weight_decay of a fit_on=train run")
        metric = (ctx.task.metric(self.selection_metric, "selection_metric") if self.selection_metric
                  else ctx.task.primary_metric)
        wd, solution, val_scores = self._select(train, val, ctx, metric)
        selected = {"weight_decay": wd, "selection_metric": f"val/{metric}"}
        if not self.refit:
            return FitResult(LinearScorer(*solution), selected)
        trainval = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
        solution, _ = self._fit(self._problem(trainval, ctx), wd, init=solution)
        # val is now training data: report the scores measured before the refit.
        return FitResult(LinearScorer(*solution), selected,
                         val_metrics={f"val/{name}": value for name, value in val_scores.items()})

    def _select(self, train: Features, val: Features, ctx: FitContext,
                metric: str) -> tuple[float, Solution, dict[str, float]]:
        """Walk the grid from strong to weak regularisation; the best validation ``metric`` wins.
        Returns the weight decay, its solution on train and its validation scores."""
        problem, x_val = self._problem(train, ctx), val[0].to(self.dtype)
        best, solution, unconverged = None, None, 0
        for wd in sorted(self.grid, reverse=True):
            solution, converged = self._fit(problem, float(wd), init=solution, warn=False)
            unconverged += not converged
            values = ctx.task.metrics(x_val @ solution[0].T + solution[1], val[1])
            log.debug("logreg weight_decay=%.3g: val %s %.4f", wd, metric, values[metric])
            if best is None or values[metric] >= best[2][metric]:  # >= as lambda falls: ties -> smallest
                best = (float(wd), solution, values)
        if unconverged:
            log.warning("logreg: %d of %d grid values stopped at max_iter=%d before reaching tol=%g",
                        unconverged, len(self.grid), self.solver["max_iter"], self.solver["tol"])
        log.info("logreg: selected weight_decay=%.3g (val %s %.4f)", best[0], metric, best[2][metric])
        return best
