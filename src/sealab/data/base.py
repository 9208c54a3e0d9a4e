"""What every dataset offers the pipeline: named splits, classes and its metric."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from sealab.metrics import TOP1
from sealab.rules import BOOL, Rule, integer, number, text, validate
from sealab.settings import rule
from sealab.task import Task, make_task

SPLITS = ("train", "val", "test")

# Rules several dataset classes share (each class declares RULES for every key of its config node).
ROOT = text()
DOWNLOAD = BOOL
FRACTION = number(0, 1, open_low=True, open_high=True)  # of the examples held out
SPLIT_SEED = rule("seed")  # a split's seed takes the values a run's seed does
PARTITION = integer(1, 10)  # DTD's and SUN397's ten official partitions


def check_settings(dataset: str, rules: Mapping[str, Rule], **values: Any) -> None:
    """``sealab.rules.validate`` for a dataset's constructor, naming each key as the command line
    does (``dataset 'cifar10': dataset.val_fraction='abc': must be ...``)."""
    validate(f"dataset {dataset!r}", rules, prefix="dataset.", **values)


def check_several_classes(dataset: str, train_targets: torch.Tensor, where: str) -> None:
    """Refuse multi-class training data of a single class: a classifier of one class predicts
    it everywhere and scores 100% on a test split of that class, a number that means nothing."""
    present = torch.unique(torch.as_tensor(train_targets))
    if len(present) < 2:
        found = f"only class {int(present[0])}" if len(present) else "no class"
        raise ValueError(
            f"dataset {dataset!r}: the train split holds {found} ({where}): a classifier needs examples "
            "of at least two classes to learn anything.")


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

    @property
    def task(self) -> Task:
        return make_task(self.num_classes, self.multilabel, self.primary_metric)


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
    """A dataset that already is features: ``features(split)`` gives ``(x, y)``; no backbone runs.
    ``backbone`` names what made the features (the run records it in place of a backbone)."""

    backbone: str = "precomputed"

    @abstractmethod
    def features(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature matrix (n x d, float32) and targets of split ``name``."""


def check_split_name(name: str) -> None:
    if name not in (*SPLITS, "trainval"):
        raise ValueError(f"unknown split {name!r}: expected one of {(*SPLITS, 'trainval')}")
