"""Metrics against scikit-learn and hand-worked values."""

import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torchmetrics.functional.classification import multiclass_accuracy

from sealab.metrics import mean_average_precision_11, mean_of_fractions
from sealab.task import MultiClass, MultiLabel


def test_top1_and_mean_per_class_match_sklearn():
    gen = torch.Generator().manual_seed(0)
    targets = torch.cat([torch.zeros(50), torch.ones(10), torch.full((5,), 2)]).long()  # imbalanced
    scores = torch.randn(len(targets), 3, generator=gen) + 1.5 * torch.nn.functional.one_hot(targets, 3)
    m = MultiClass(3).metrics(scores, targets)
    pred = scores.argmax(1).numpy()
    assert np.isclose(m["top1"], accuracy_score(targets.numpy(), pred))
    assert np.isclose(m["mean_per_class"], balanced_accuracy_score(targets.numpy(), pred))


def test_hand_worked_mean_per_class():
    # class 0: 2/2 right, class 1: 1/2 right -> top1 3/4, mean per class (1 + 0.5) / 2
    scores = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 0]])
    m = MultiClass(2).metrics(scores, torch.tensor([0, 0, 1, 1]))
    assert m == {"top1": 0.75, "mean_per_class": 0.75}
    m = MultiClass(2).metrics(scores, torch.tensor([0, 0, 0, 1]))
    assert np.isclose(m["mean_per_class"], (2 / 3 + 0) / 2) and m["top1"] == 0.5


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_mean_per_class_averages_over_the_classes_present_in_the_targets():
    # 4 classes, class 3 absent from the targets (e.g. a split that lacks it) but predicted once.
    # class 0: 2/3 right, class 1: 1/1, class 2: 0/2 -> (2/3 + 1 + 0) / 3 = 5/9.
    # torchmetrics' macro average counts the absent class 3 as 0: (2/3 + 1 + 0 + 0) / 4 = 5/12.
    targets = torch.tensor([0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 3, 1, 0, 1])
    scores = torch.nn.functional.one_hot(pred, 4).float()
    m = MultiClass(4).metrics(scores, targets)
    assert np.isclose(m["mean_per_class"], 5 / 9)
    assert np.isclose(m["mean_per_class"], balanced_accuracy_score(targets.numpy(), pred.numpy()))
    macro = multiclass_accuracy(pred, targets, 4, average="macro")
    assert np.isclose(float(macro), 5 / 12), "torchmetrics' macro average (what this avoids) changed"
    assert np.isclose(m["top1"], 3 / 6)


def test_map11_warns_about_classes_without_positives_and_averages_the_rest(caplog):
    # class 0: the positive ranked first -> AP 1; class 1: no positive; class 2: only an ignored (-1)
    # entry and negatives -> no positive either. mAP over the one scored class is 1.
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
    targets = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="sealab.metrics"):
        m = MultiLabel(3).metrics(scores, targets)
    assert m == {"map11": 1.0}  # metrics only: nothing but values in [0, 1]
    assert "2 of 3 classes have no positive" in caplog.text and "classes 1, 2" in caplog.text
    assert "mAP over 1 classes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sealab.metrics"):
        assert mean_average_precision_11(scores, targets, ["cat", "dog", "cow"]) == 1.0
    assert "classes dog, cow" in caplog.text


def test_map11_with_every_class_scored_does_not_warn(caplog):
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    with caplog.at_level(logging.WARNING, logger="sealab.metrics"):
        assert MultiLabel(2).metrics(scores, torch.eye(2)) == {"map11": 1.0}
    assert caplog.text == ""


def test_a_perfect_score_is_stored_as_exactly_one():
    # 10 classes predicted perfectly: torchmetrics' float32 macro average gave 1.0000001192 here
    # (what metrics.json held before); each metric must be 1.0, never above.
    targets = torch.arange(30) % 10
    scores = torch.nn.functional.one_hot(targets, 10).float()
    assert float(multiclass_accuracy(targets, targets, 10, average="macro")) > 1, "the case that went above 1"
    assert MultiClass(10).metrics(scores, targets) == {"top1": 1.0, "mean_per_class": 1.0}
    assert MultiLabel(10).metrics(scores, scores) == {"map11": 1.0}


def test_mean_of_fractions_is_exact_and_never_above_one():
    gen = torch.Generator().manual_seed(0)
    for n in (3, 10, 101, 1000):
        ratios = (torch.randint(1, 50, (n,), generator=gen).double() / 50).tolist() + [1.0] * n
        mean = mean_of_fractions(ratios)
        assert 0 <= mean <= 1 and np.isclose(mean, np.mean(ratios), rtol=0, atol=1e-15)
    assert mean_of_fractions([1.0] * 7) == 1.0
    assert np.isnan(mean_of_fractions([]))
