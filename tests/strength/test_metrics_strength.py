"""Metrics on hand-worked examples where mutation testing (make mutants) found the suite blind:
an 11-point AP whose recall lands exactly on a threshold, tied scores, no examples at all, and
the warning about classes without a positive."""

import logging
import math
from fractions import Fraction

import torch

from sealab.metrics import mean_average_precision_11, multiclass_metrics, voc11_average_precision


def test_a_recall_of_exactly_one_tenth_counts_for_the_threshold_one_tenth():
    # 10 positives: one at rank 1, then 9 negatives, then the other 9 positives (ranks 11-19).
    # Thresholds 0 and 0.1: rank 1 (precision 1). Thresholds 0.2..1: the best precision at
    # recall >= t is the last one, 10/19. AP = (2 * 1 + 9 * 10/19) / 11 = 128/209.
    targets = torch.tensor([1] + [0] * 9 + [1] * 9)
    scores = torch.linspace(1, 0, len(targets), dtype=torch.float64)
    ap = voc11_average_precision(scores[:, None], targets[:, None])
    assert ap.dtype == torch.float64
    assert math.isclose(ap.item(), Fraction(128, 209), rel_tol=1e-15)


def test_tied_scores_are_ranked_in_input_order():
    # Equal scores, 50 negatives listed before 50 positives: a stable ranking puts every
    # negative first, so the best precision at any recall is the last one, 50/100.
    targets = torch.tensor([0] * 50 + [1] * 50)
    ap = voc11_average_precision(torch.full((100, 1), 0.5), targets[:, None])
    assert ap.item() == 0.5


def test_no_examples_give_nan_metrics_not_an_error():
    metrics = multiclass_metrics(torch.empty(0, 3), torch.empty(0, dtype=torch.long), 3)
    assert math.isnan(metrics["top1"]) and math.isnan(metrics["mean_per_class"])


def test_the_warning_names_the_classes_left_out_and_what_the_mean_is_over(caplog):
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.6, 0.7, 0.2], [0.1, 0.3, 0.9]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    with caplog.at_level(logging.WARNING, logger="sealab.metrics"):
        value = mean_average_precision_11(scores, targets, class_names=["cat", "dog", "cow"])
    # cat: ranks 1 and 2 of 4 are its positives (AP 1); dog: ranks 1 and 3 (precision 1 up to
    # recall 0.5, then 2/3): AP = (6 + 5 * 2/3) / 11 = 28/33. cow has no positive.
    assert math.isclose(value, (1 + Fraction(28, 33)) / 2, rel_tol=1e-15)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == ("11-point mAP: 1 of 3 classes have no positive example among the 4 evaluated examples "
                       "and are left out of the mean (mAP over 2 classes): classes cow")
