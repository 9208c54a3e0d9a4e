"""Benchmarks without an official train/test partition: a fixed, seeded per-class one.

Caltech-101: ``train_per_class`` (30) images per class for train, the rest for test, the
BACKGROUND_Google clutter folder left out (as torchvision does). SUN397: ``train_per_class``
(50) and ``test_per_class`` (50) images per class, the size of its standard partitions. In
both, a seeded, stratified ``val_fraction`` of train becomes val; every index is recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv

from sealab.data.benchmark import Split, holdout_val, per_class_partition
from sealab.data.torchvision_sets import HeldOutVal, Labelled
from sealab.metrics import MEAN_PER_CLASS


class PerClassPartition(HeldOutVal):
    """All images read as one source, then split per class by a seeded draw."""

    official = ("all",)
    test_per_class: int | None = None

    def __init__(self, root: str | Path, download: bool = False, train_per_class: int = 30,
                 val_fraction: float = 0.2, seed: int = 0):
        self.train_per_class = train_per_class
        super().__init__(root, download, val_fraction, seed)

    def _build(self) -> dict[str, Split]:
        everything = self._read()["all"]
        train, test = per_class_partition(everything.targets, self.class_names, self.train_per_class,
                                          self.test_per_class, self.seed)
        train, val = holdout_val(everything.take(train), self.val_fraction, self.seed)
        return {"train": train, "val": val, "test": everything.take(test)}

    def protocol(self) -> dict[str, Any]:
        return {"splits": "seeded per-class train/test; val = seeded stratified fraction of train",
                "train_per_class": self.train_per_class, "test_per_class": self.test_per_class or "rest",
                "val_fraction": self.val_fraction, "split_seed": self.seed}


class Caltech101(PerClassPartition):
    name, primary_metric = "caltech101", MEAN_PER_CLASS
    expected = ("caltech101/101_ObjectCategories/",)
    layout = ("<root>/caltech101/101_ObjectCategories/<class>/image_<0001>.jpg"
              " (torchvision.datasets.Caltech101)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches caltech-101.zip from "
                  "https://data.caltech.edu/records/mzrjq-6wc02 into {root}/caltech101).")

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.Caltech101(self.root, download=download)

    def _labelled(self, source: Any) -> Labelled:
        return source, source.y, list(source.categories)


class SUN397(PerClassPartition):
    name = "sun397"
    expected = ("SUN397/ClassName.txt",)
    layout = ("<root>/SUN397/{ClassName.txt, <letter>/<class>/sun_<id>.jpg}"
              " (torchvision.datasets.SUN397)")
    how_to_get = ("rerun with dataset.download=true (torchvision fetches SUN397.tar.gz, 37 GB, from "
                  "http://vision.princeton.edu/projects/2010/SUN/ into {root}).")

    def __init__(self, root: str | Path, download: bool = False, train_per_class: int = 50,
                 test_per_class: int = 50, val_fraction: float = 0.2, seed: int = 0):
        self.test_per_class = test_per_class
        super().__init__(root, download, train_per_class, val_fraction, seed)

    def _open(self, split: str, download: bool) -> Dataset:
        return tv.SUN397(self.root, download=download)

    def _labelled(self, source: Any) -> Labelled:
        # torchvision lists the files in filesystem order; sort by path so the recorded
        # indices mean the same images on every machine.
        order = np.argsort([str(path) for path in source._image_files], kind="stable")
        return Subset(source, order.tolist()), np.asarray(source._labels)[order], list(source.classes)
