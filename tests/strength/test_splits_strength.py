"""Seeded hold-outs where mutation testing (make mutants) found the suite blind: hand-worked
refusals (which side is short, the range that works), the boundary cases, multi-hot labels."""

import re

import numpy as np
import pytest

from sealab.data.splits import stratified_holdout


def test_a_hold_out_smaller_than_the_classes_says_which_range_works():
    labels = np.array([0, 0, 1, 1, 2, 2])  # every class twice: stratified, n = 2 x classes
    message = ("dataset 'dataset': dataset.val_fraction=2 holds out 2 of 6 examples, fewer than its 3 classes; "
               "a stratified split needs at least one example of every class on each side. Set "
               "dataset.val_fraction so that between 3 and 3 examples are held out (a fraction in [0.5, 0.5]).")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stratified_holdout(labels, 2, seed=0)


def test_a_hold_out_that_keeps_too_few_names_the_kept_side_and_the_setting():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    message = ("dataset 'cars': dataset.val_fraction=6 keeps 2 of 8 examples, fewer than its 3 classes; "
               "a stratified split needs at least one example of every class on each side. Set "
               "dataset.val_fraction so that between 3 and 5 examples are held out (a fraction in [0.375, 0.625]).")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        stratified_holdout(labels, 6, seed=0, dataset="cars")


@pytest.mark.parametrize("held_out", [3, 5])
def test_each_side_may_hold_exactly_one_example_per_class(held_out):
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    kept, held = stratified_holdout(labels, held_out, seed=0)
    assert len(held) == held_out and sorted(np.concatenate([kept, held])) == list(range(8))
    assert set(labels[kept]) == set(labels[held]) == {0, 1, 2}


def test_multi_hot_labels_are_split_without_stratification():
    labels = np.eye(3, dtype=int)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
    kept, held = stratified_holdout(labels, 0.3, seed=1)
    assert len(held) == 3 and len(kept) == 7 and np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(10))
