"""Seeded, recorded splits for datasets without an official one."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_holdout(
    labels: np.ndarray, held_out: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..n-1`` into (kept, held out), stratified by label and seeded.

    ``held_out`` is a fraction in (0, 1) or an absolute count. Both index arrays are sorted
    so that a split's order does not depend on the shuffle.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:  # multi-hot targets cannot be stratified this simply
        stratify = None
    else:
        _, counts = np.unique(labels, return_counts=True)
        stratify = labels if counts.min() >= 2 else None
    kept, held = train_test_split(
        np.arange(len(labels)), test_size=held_out, random_state=seed, stratify=stratify
    )
    return np.sort(kept), np.sort(held)
