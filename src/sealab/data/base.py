"""What every dataset offers the pipeline: named splits, classes and its metric."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

SPLITS = ("train", "val", "test")

# Metric names as they appear in metrics.json ("test/<name>").
TOP1, MEAN_PER_CLASS, MAP11 = "top1", "mean_per_class", "map11"


class DatasetBase(ABC):
    """Classes, task type and primary metric: what every dataset declares."""

    name: str
    num_classes: int
    class_names: list[str]
    primary_metric: str = TOP1
    multilabel: bool = False

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a run records about the data: sizes and how the splits were made."""


class ImageDataset(DatasetBase):
    """A benchmark dataset whose splits yield ``(PIL image, target)``.

    Targets are class indices, or multi-hot float vectors when ``multilabel``.
    ``split("trainval")`` is the union used for refitting after selection.
    """

    @abstractmethod
    def split(self, name: str) -> Dataset:
        """The samples of split ``name`` (train, val, test or trainval), in a fixed order."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes which images a split holds (used to key the feature cache)."""

    def describe(self) -> dict[str, Any]:
        """What a run records about the data: sizes and how the splits were made."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "primary_metric": self.primary_metric,
            "multilabel": self.multilabel,
            "split_sizes": {s: len(self.split(s)) for s in SPLITS},
            **self.identity(),
        }

    def trainval(self) -> Dataset:
        return ConcatDataset([self.split("train"), self.split("val")])


class PrecomputedFeatures(DatasetBase):
    """A dataset that already is features: ``features(split)`` gives ``(x, y)``; no backbone runs."""

    @abstractmethod
    def features(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature matrix (n x d, float32) and targets of split ``name``."""


def check_split_name(name: str) -> None:
    if name not in (*SPLITS, "trainval"):
        raise ValueError(f"unknown split {name!r}: expected one of {(*SPLITS, 'trainval')}")


def check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """Class-index labels must lie in [0, num_classes)."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{where}: labels span [{int(labels.min())}, {int(labels.max())}] but num_classes is "
            f"{num_classes}; labels must lie in [0, num_classes). Fix the labels or set num_classes."
        )
