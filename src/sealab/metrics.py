"""Evaluation metrics of the transfer protocol: top-1, mean per-class accuracy, 11-point mAP.

Classes absent from the evaluated targets are left out of the per-class averages rather than
counted as 0 or dropped silently:

- mean per-class accuracy averages the recall of the classes present in the targets (as
  scikit-learn's ``balanced_accuracy_score``; torchmetrics' macro average would count an absent
  class as 0 and so understate it on a split that lacks some classes);
- 11-point mAP averages the AP of the classes with at least one positive (a class without one
  has no defined AP). Each evaluation that leaves classes out logs a warning naming them and
  how many classes were scored; the metrics dict holds only metrics in [0, 1], so tables and
  model selection read it unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch

log = logging.getLogger(__name__)

# Names as they appear in metrics.json ("test/<name>") and in dataset configs.
TOP1, MEAN_PER_CLASS, MAP11 = "top1", "mean_per_class", "map11"


def mean_of_fractions(values: Iterable[float]) -> float:
    """The mean of fractions in [0, 1], never above 1 (nan for none). ``math.fsum`` rounds the
    exact sum once, so it cannot exceed the count, and one correctly rounded division by the
    count then cannot exceed 1; a float32 or pairwise sum can (torchmetrics' macro accuracy
    of a perfect 10-class prediction is 1.0000001192)."""
    values = [float(v) for v in values]
    return math.fsum(values) / len(values) if values else float("nan")


def voc11_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class 11-point interpolated AP of PASCAL VOC2007.

    ``targets`` is B x C with 1 (positive), 0 (negative) and optionally -1 ("difficult":
    left out of that class's ranking, as the VOC devkit does). For each class, AP is the
    mean over recall thresholds t in {0, 0.1, ..., 1} of the best precision at recall >= t.
    """
    aps = []
    thresholds = torch.linspace(0, 1, 11, dtype=torch.float64)
    for c in range(scores.shape[1]):
        keep = targets[:, c] >= 0
        s, t = scores[keep, c].double(), targets[keep, c].double()
        positives = t.sum()
        if positives == 0:
            aps.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        order = torch.argsort(s, descending=True, stable=True)
        tp = torch.cumsum(t[order], 0)
        precision = tp / torch.arange(1, len(t) + 1, dtype=torch.float64)
        recall = tp / positives
        best = [precision[recall >= th].max() if (recall >= th).any() else 0.0 for th in thresholds]
        aps.append(torch.tensor(mean_of_fractions(best), dtype=torch.float64))
    return torch.stack(aps)


def mean_average_precision_11(scores: torch.Tensor, targets: torch.Tensor,
                              class_names: Sequence[str] | None = None) -> float:
    """11-point mAP over the classes with at least one positive; a warning names the others."""
    aps = voc11_average_precision(scores, targets)
    unscored = torch.isnan(aps).nonzero().flatten().tolist()
    if unscored:
        named = [class_names[c] if class_names else c for c in unscored]
        log.warning("11-point mAP: %d of %d classes have no positive example among the %d evaluated "
                    "examples and are left out of the mean (mAP over %d classes): %s",
                    len(unscored), len(aps), len(targets), len(aps) - len(unscored),
                    "classes " + ", ".join(map(str, named)))
    return mean_of_fractions(aps[~torch.isnan(aps)])


def mean_per_class_accuracy(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """The mean over the classes present in ``targets`` of the fraction of their examples
    predicted right (classes absent from ``targets`` are left out, not counted as 0)."""
    targets = targets.long()
    count = torch.bincount(targets, minlength=num_classes).double()
    right = torch.bincount(targets[predictions == targets], minlength=num_classes).double()
    present = count > 0
    return mean_of_fractions(right[present] / count[present])


def multiclass_metrics(scores: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 and mean per-class accuracy of ``argmax scores``, as fractions in [0, 1]."""
    predictions = scores.argmax(dim=1)
    top1 = int((predictions == targets).sum()) / len(targets) if len(targets) else float("nan")
    return {TOP1: top1, MEAN_PER_CLASS: mean_per_class_accuracy(predictions, targets, num_classes)}
