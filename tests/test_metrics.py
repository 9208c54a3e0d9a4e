"""Metrics against scikit-learn and hand-worked values."""

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from sealab.task import MultiClass


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
