"""Evaluation metrics of the transfer protocol: top-1, mean per-class accuracy, 11-point mAP."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_accuracy

# Names as they appear in metrics.json ("test/<name>") and in dataset configs.
TOP1, MEAN_PER_CLASS, MAP11 = "top1", "mean_per_class", "map11"


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
        best = [precision[recall >= th].max() if (recall >= th).any() else torch.tensor(0.0, dtype=torch.float64)
                for th in thresholds]
        aps.append(torch.stack(best).mean())
    return torch.stack(aps)


def multiclass_metrics(scores: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 and mean per-class accuracy of ``argmax scores``, as fractions in [0, 1]."""
    predictions = scores.argmax(dim=1)
    return {
        TOP1: float(multiclass_accuracy(predictions, targets, num_classes, average="micro")),
        MEAN_PER_CLASS: float(multiclass_accuracy(predictions, targets, num_classes, average="macro")),
    }
