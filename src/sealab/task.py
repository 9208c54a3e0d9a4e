"""What kind of prediction a dataset asks for: multi-class (one class index per example) or
multi-label (a 0/1 vector per example, -1 marking an entry to ignore, as VOC's "difficult").

A task owns everything that differs between the two: how targets are checked and turned into
matrices, the head's training loss and its closed-form gradient, the metrics that apply and
which of them selects models. Every other module asks the task instead of branching on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from sealab.metrics import (
    MAP11,
    MEAN_PER_CLASS,
    TOP1,
    mean_average_precision_11,
    multiclass_metrics,
)


class Task(ABC):
    """The loss of a linear head is ``lamda * L((logits - delta * margin(T)) / lamda, T)`` with
    ``T`` the target matrix; ``logit_grad`` is its derivative in closed form (the ``lamda``
    scaling cancels), so augmenters need no second backward pass."""

    metric_names: tuple[str, ...]

    def __init__(self, num_classes: int, primary_metric: str | None = None):
        self.num_classes = num_classes
        self.primary_metric = self.metric(primary_metric)

    def metric(self, name: str | None, setting: str = "primary_metric") -> str:
        """``name`` if it applies to this task (None: the first that does), else an error
        naming the ``setting`` it came from."""
        if name is None:
            return self.metric_names[0]
        if name not in self.metric_names:
            raise ValueError(f"{setting}={name!r} does not apply to a {type(self).__name__} task: "
                             f"choose one of {self.metric_names}")
        return name

    @abstractmethod
    def check_targets(self, y: torch.Tensor, where: str) -> None:
        """Raise a ValueError naming ``where`` unless ``y`` holds valid targets for this task."""

    @abstractmethod
    def targets(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """B x C float targets (soft targets, e.g. mixup's, pass through unchanged)."""

    @abstractmethod
    def positives(self, y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(... x C) 1 where the example belongs to the class, 0 elsewhere, for targets of any
        leading shape (e.g. the k neighbours of each query)."""

    @abstractmethod
    def shares_a_class(self, y: torch.Tensor) -> torch.Tensor:
        """B x B bool: do examples ``i`` and ``j`` have a class in common?"""

    @abstractmethod
    def loss(self, logits: torch.Tensor, y: torch.Tensor, lamda: float, delta: float) -> torch.Tensor: ...

    @abstractmethod
    def log_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of plain (affine) logits, summed over the examples: the
        logistic-regression objective (multi-label: one binary problem per class)."""

    @abstractmethod
    def logit_grad(self, logits: torch.Tensor, y: torch.Tensor, lamda: float, delta: float,
                   reduction: str = "mean") -> torch.Tensor:
        """d loss / d logits. ``reduction="sum"`` drops the averaging factor."""

    def loss_and_logit_grad(self, logits: torch.Tensor, y: torch.Tensor, lamda: float,
                            delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss`` and its ``logit_grad`` (mean reduction) together: the probe's training step
        needs both, and a task may share their work."""
        return self.loss(logits, y, lamda, delta), self.logit_grad(logits, y, lamda, delta)

    @abstractmethod
    def metrics(self, scores: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Every metric of ``metric_names``, as fractions in [0, 1]."""


class MultiClass(Task):
    """Softmax cross-entropy; top-1 and mean per-class accuracy."""

    metric_names = (TOP1, MEAN_PER_CLASS)

    def check_targets(self, y, where):
        if y.ndim != 1 or y.is_floating_point():
            raise ValueError(f"{where}: multi-class targets must be a 1-d integer tensor of class "
                             f"indices, got {y.dtype} of shape {tuple(y.shape)}")
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"{where}: labels span [{int(y.min())}, {int(y.max())}] but num_classes is "
                f"{self.num_classes}; labels must lie in [0, num_classes). Fix the labels or set num_classes."
            )

    def targets(self, y, dtype):
        if y.ndim == 2:
            return y.to(dtype)
        return F.one_hot(y.long(), self.num_classes).to(dtype)

    def positives(self, y, dtype=torch.float32):
        return F.one_hot(y.long(), self.num_classes).to(dtype)  # indices of any shape

    def shares_a_class(self, y):
        return y[:, None] == y[None, :]

    def _scaled(self, logits, t, lamda, delta):
        return (logits - delta * t) / lamda

    def loss(self, logits, y, lamda, delta):
        t = self.targets(y, logits.dtype)
        return lamda * F.cross_entropy(self._scaled(logits, t, lamda, delta), t)

    def log_loss(self, logits, y):
        return F.cross_entropy(logits, y.long(), reduction="sum")

    def logit_grad(self, logits, y, lamda, delta, reduction="mean"):
        t = self.targets(y, logits.dtype)
        grad = torch.softmax(self._scaled(logits, t, lamda, delta), dim=-1) - t
        return grad / logits.shape[-2] if reduction == "mean" else grad

    def loss_and_logit_grad(self, logits, y, lamda, delta):
        # One log-softmax gives both: CE = -sum(t * log p) / B, d CE / d logits = (p - t) / B.
        # K x B x C logits (K heads, sealab.augment.batched) give K losses.
        t, batch = self.targets(y, logits.dtype), logits.shape[-2]
        log_p = torch.log_softmax(self._scaled(logits, t, lamda, delta), dim=-1)
        loss = (log_p * t).flatten(-2).sum(-1) * (-lamda / batch)
        return loss, log_p.exp_().sub_(t).div_(batch)

    def metrics(self, scores, y):
        return multiclass_metrics(scores, y, self.num_classes)


class MultiLabel(Task):
    """One-vs-rest binary cross-entropy, averaged over the kept (non -1) entries; 11-point mAP.
    The margin pushes positives up and negatives down: ``delta * (2T - 1)``."""

    metric_names = (MAP11,)

    def check_targets(self, y, where):
        if y.ndim != 2 or y.shape[1] != self.num_classes:
            raise ValueError(f"{where}: multi-label targets must be n x {self.num_classes} "
                             f"(multi-hot), got shape {tuple(y.shape)}")
        if y.numel() and not torch.isin(y, y.new_tensor([-1, 0, 1])).all():
            raise ValueError(f"{where}: multi-label targets must be 1 (positive), 0 (negative) "
                             "or -1 (ignored)")

    def targets(self, y, dtype):
        return y.to(dtype)

    def positives(self, y, dtype=torch.float32):
        return (y > 0).to(dtype)  # an ignored (-1) entry is not a positive

    def shares_a_class(self, y):
        positive = self.positives(y)
        return (positive @ positive.T) > 0

    @staticmethod
    def _kept(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(targets with ignored entries set to 0, 0/1 mask, number kept)``."""
        mask = (t >= 0).to(t.dtype)
        return t * mask, mask, mask.sum().clamp_min(1)  # a fully ignored batch has zero loss

    def _scaled(self, logits, t, lamda, delta):
        return (logits - delta * (2 * t - 1)) / lamda

    def loss(self, logits, y, lamda, delta):
        t, mask, kept = self._kept(self.targets(y, logits.dtype))
        bce = F.binary_cross_entropy_with_logits(self._scaled(logits, t, lamda, delta), t, reduction="none")
        return lamda * (bce * mask).sum() / kept

    def log_loss(self, logits, y):
        t, mask, _ = self._kept(self.targets(y, logits.dtype))
        return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * mask).sum()

    def logit_grad(self, logits, y, lamda, delta, reduction="mean"):
        t, mask, kept = self._kept(self.targets(y, logits.dtype))
        grad = (torch.sigmoid(self._scaled(logits, t, lamda, delta)) - t) * mask
        return grad / kept if reduction == "mean" else grad

    def metrics(self, scores, y):
        # classes without a positive are left out of the mean, with a warning naming them
        return {MAP11: mean_average_precision_11(scores, y)}


def class_indices(y: torch.Tensor, where: str) -> torch.Tensor:
    """``y`` as int64 class indices. Whole-number floats (0.0, 1.0, ...) are accepted; any other
    float is refused, naming ``where``: truncating 0.5 to 0 would silently merge classes."""
    if y.is_floating_point():
        fractional = (y != y.round()).flatten()  # NaN too
        if fractional.any():
            row = int(fractional.nonzero()[0])
            raise ValueError(
                f"{where}: class labels must be whole numbers 0..C-1, but {int(fractional.sum())} are not "
                f"(the first, at position {row}, is {y.flatten()[row].item()}). Fix the labels; for targets "
                "with several classes per example (n x C, 0/1) set dataset.multilabel=true.")
    return y.long()


def make_task(num_classes: int, multilabel: bool = False, primary_metric: str | None = None) -> Task:
    return (MultiLabel if multilabel else MultiClass)(num_classes, primary_metric)
