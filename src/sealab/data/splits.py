"""Seeded, recorded splits for datasets without an official one."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split


def held_out_count(n: int, held_out: float) -> int:
    """How many of ``n`` examples a hold-out of ``held_out`` takes (scikit-learn's rounding:
    a fraction rounds the held-out side up)."""
    if isinstance(held_out, float):
        return math.ceil(n * held_out)
    return int(held_out)


def stratified_holdout(
    labels: np.ndarray, held_out: float, seed: int, dataset: str = "dataset",
    setting: str = "dataset.val_fraction",
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..n-1`` into (kept, held out), stratified by label and seeded.

    ``held_out`` is a fraction in (0, 1) or an absolute count. Both index arrays are sorted
    so that a split's order does not depend on the shuffle. A stratified split needs at
    least one example per class on each side: when either side is smaller than the number of
    classes, the error names ``dataset`` and the ``setting`` the hold-out came from.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:  # multi-hot targets cannot be stratified this simply
        stratify = None
    else:
        _, counts = np.unique(labels, return_counts=True)
        stratify = labels if counts.min() >= 2 else None
    if stratify is not None:
        n, classes = len(labels), len(counts)
        held = held_out_count(n, held_out)
        if held < classes or n - held < classes:
            side = "holds out" if held < classes else "keeps"
            count = held if held < classes else n - held
            raise ValueError(
                f"dataset {dataset!r}: {setting}={held_out} {side} {count} of {n} examples, fewer than "
                f"its {classes} classes; a stratified split needs at least one example of every class "
                f"on each side. Set {setting} so that between {classes} and {n - classes} examples "
                f"are held out (a fraction in [{classes / n:.3g}, {(n - classes) / n:.3g}])."
                if n >= 2 * classes else
                f"on each side, so at least {2 * classes} examples: this one has too few to split."
            )
    kept, held = train_test_split(
        np.arange(len(labels)), test_size=held_out, random_state=seed, stratify=stratify
    )
    return np.sort(kept), np.sort(held)
