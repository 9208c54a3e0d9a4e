"""What a ``method=`` choice is: something that fits a classifier on normalised features."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch
from torch import nn

Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitContext:
    """What every method may need beyond the data."""

    num_classes: int
    multilabel: bool
    seed: int
    make_trainer: Callable[..., L.Trainer]


class Method(ABC):
    """Fits a scorer (normalised features n x d -> class scores n x C).

    ``val`` is the validation split for model selection; it is None when the method is
    refitted on train+val after selection. ``name`` is the row label in results tables.
    """

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def fit(self, train: Features, val: Features | None, ctx: FitContext) -> nn.Module: ...
