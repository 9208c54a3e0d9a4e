"""What a ``method=`` choice is: something that fits a classifier on normalised features
(or, for fine-tuning, on the images themselves)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset

from sealab.backbones.base import Backbone

Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitContext:
    """What every method may need beyond the data."""

    num_classes: int
    multilabel: bool
    seed: int
    make_trainer: Callable[..., L.Trainer]
    primary_metric: str | None = None  # the dataset's, e.g. for selecting on validation


class Method(ABC):
    """Fits a scorer (normalised features n x d -> class scores n x C).

    ``val`` is the validation split for model selection; it is None when the method is
    refitted on train+val after selection. ``name`` is the row label in results tables.
    A method that itself trains on ``val`` after selecting on it (logreg's refit) reports
    the validation metrics it measured before in ``val_metrics`` ({"val/top1": ...}); the run
    records those instead of scoring val with a classifier that has seen it.
    """

    def __init__(self, name: str):
        self.name = name
        self.val_metrics: dict[str, float] = {}

    @abstractmethod
    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> nn.Module: ...


class ImageMethod(Method):
    """A method that trains on the images of the splits, not on cached features (fine-tuning).

    ``fit_images`` gets ``(PIL image, target)`` datasets and the configured backbone (which it
    must leave unchanged) and returns a model from batches of images preprocessed by
    ``backbone.transform`` to class scores (B x C).
    """

    @abstractmethod
    def fit_images(self, train: Dataset, val: Dataset | None, backbone: Backbone,
                   ctx: FitContext) -> nn.Module: ...

    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> nn.Module:
        raise TypeError(f"method={self.name} trains on images, not features: call fit_images "
                        "(sealab.experiment.run does so for every ImageMethod)")
