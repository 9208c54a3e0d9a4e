"""ISDA: implicit semantic data augmentation (Wang et al., NeurIPS 2019) for the linear head."""

from __future__ import annotations

import torch

from sealab.augment.base import AUGMENTER, Augmented, FeatureAugmenter
from sealab.heads.linear import LinearHead
from sealab.rules import number, validate


class ClassCovariance:
    """Running per-class mean and covariance (divided by n) of every feature seen so far,
    merged batch by batch with the pooled-statistics update (as ISDA's EstimatorCV)."""

    def __init__(self):
        self.count = self.mean = self.cov = None

    def reset(self) -> None:
        self.count = self.mean = self.cov = None

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        if self.count is None:
            d = x.shape[1]
            self.count = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
            self.mean = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device)
            self.cov = torch.zeros(num_classes, d, d, dtype=x.dtype, device=x.device)
        # One pass per class present: n_c d^2 work in total, in place, no B x d x d intermediate.
        for c in y.unique().tolist():
            xc = x[y == c]
            n = len(xc)
            w = n / (float(self.count[c]) + n)  # the batch's share of the pooled data
            batch_mean = xc.mean(dim=0)
            centred = xc - batch_mean
            shift = self.mean[c] - batch_mean
            self.cov[c].addmm_(centred.T, centred, beta=1 - w, alpha=w / n)
            self.cov[c].addr_(shift, shift, alpha=w * (1 - w))
            self.mean[c].mul_(1 - w).add_(batch_mean, alpha=w)
            self.count[c] += n


class ISDA(FeatureAugmenter):
    """Trains on the closed-form upper bound of the expected loss over infinitely many
    augmented features ``x ~ N(x, lam * Sigma_y)``: logits ``z_j`` become
    ``z_j + (lam / 2) (w_j - w_y)^T Sigma_y (w_j - w_y)``, fed to the head's
    temperature/margin cross entropy. (Because the head divides logits by its temperature
    ``lamda``, this is exactly the bound for feature noise of covariance ``lam * lamda * Sigma_y``.)

    ``Sigma_y`` is estimated online from the training batches (features are constants);
    ``lam`` ramps linearly from 0 to ``lambda0`` over training, as in the paper.
    The estimator holds C x d x d numbers. Multi-class targets only.
    """

    RULES = {"lambda0": number(0)}
    capturable = False  # the class loop reads the batch's labels on the host; autograd for dL/dW

    def __init__(self, lambda0: float = 0.5):
        validate(type(self).__name__, self.RULES, prefix=AUGMENTER, lambda0=lambda0)
        super().__init__()
        self.lambda0, self.strength = lambda0, 0.0
        self.estimator = ClassCovariance()

    def on_train_epoch_start(self, epoch: int, max_epochs: int) -> None:
        if epoch == 0:  # a new fit: forget the features of any earlier one
            self.estimator.reset()
        self.strength = self.lambda0 * epoch / max_epochs

    def plan(self, batch, logits, head):
        x, y = batch.x, batch.y
        if y.ndim != 1:
            raise ValueError("ISDA needs multi-class targets (one class index per example); this "
                             "dataset is multi-label or the targets are soft: use another method")
        self.estimator.update(x, y, head.task.num_classes)
        return Augmented(y)

    def augmented_logits(self, logits: torch.Tensor, y: torch.Tensor, head: LinearHead) -> torch.Tensor:
        w = head.weight
        # Every (y, j) pair at once: gathering the covariances of the classes present would
        # copy up to C d^2 numbers, which costs more than the extra rows of the product.
        diff = w[None] - w[:, None]  # C x C x d: [y, j] = w_j - w_y
        quad = ((diff @ self.estimator.cov) * diff).sum(dim=-1)
        return logits + 0.5 * self.strength * quad[y]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, head: LinearHead) -> torch.Tensor:
        return head.loss(self.augmented_logits(logits, targets, head), targets)

    def loss_and_grad(self, plan, logits, x, head):
        # The loss depends on W beyond the logits (the covariance term): autograd gives dL/dW.
        with torch.enable_grad():
            loss = self.loss(head(x), plan.targets, head)
            (grad,) = torch.autograd.grad(loss, head.weight)
        return loss.detach(), grad, None
