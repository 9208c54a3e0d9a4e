"""What a ``method=`` choice is: something that fits a classifier on normalised features
(or, for fine-tuning, on the images themselves) and says what it chose on the way."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import nn
from torch.utils.data import Dataset

from sealab.backbones.base import Backbone
from sealab.features.batches import Features
from sealab.features.ondisk import StreamedFeatures
from sealab.rules import BOOL, NAME, number, positive, validate
from sealab.task import Task

# Where a method's node sits in a config: its constructor's messages name the key a user sets.
METHOD = "method."
# The optimizer sub-node (torch.optim.SGD, a partial) the SGD methods build, declared by them.
OPTIMIZER_RULES = {"optimizer.lr": positive(), "optimizer.momentum": number(0, 1, open_high=True),
                   "optimizer.weight_decay": number(0), "optimizer.nesterov": BOOL}


def settings_of(component: Any) -> Any:
    """What a component's dotted rules (``optimizer.lr``) read: a config node as it is, the
    keywords of a partial (the built form of a ``_partial_: true`` node)."""
    return component.keywords if isinstance(component, functools.partial) else component


@dataclass
class FitContext:
    """What every method may need beyond the data: the task, the run's seed, the one device
    the run places tensors on, and a factory for Lightning trainers set up for that device
    (the method passes what it owns, e.g. ``max_epochs``). ``run_dir``: where a method may keep
    what a killed job needs to continue (training on images: checkpoints); None: nowhere."""

    task: Task
    seed: int
    device: torch.device
    make_trainer: Callable[..., L.Trainer]
    run_dir: Path | None = None


@dataclass
class Candidate:
    """One head of a hyper-parameter grid: its values and its scorer."""

    values: dict[str, Any]
    scorer: nn.Module


@dataclass
class FitResult:
    """A fitted method: ``scorer`` maps inputs to class scores (n x C) on the CPU in eval mode;
    ``selected`` is what the method chose itself (e.g. logreg's weight decay), recorded in
    metrics.json; ``val_metrics`` ({"val/<metric>": value}) are validation scores the method
    measured before training on val (a refit on train+val). When it is empty the run scores val.
    ``candidates``: every head of a grid, for the run to select on validation (then ``scorer``
    is only the first). ``controls``: heads trained beside them without augmentation, the same
    initialisation and batches (the probe's ``control``); a control's ``values`` are the grid
    values it shares with the heads it is the baseline of (a subset of theirs; empty without a
    grid)."""

    scorer: nn.Module
    selected: dict[str, Any] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    controls: list[Candidate] = field(default_factory=list)


class Method(ABC):
    """Fits a scorer on normalised features (n x d). ``val`` is the validation split for model
    selection; it is None when the run refits on train+val. ``name`` is the row label in
    results tables. A method whose ``streams`` is True also accepts a training split left on
    disk (``StreamedFeatures``, normalised block by block as it is read)."""

    streams = False
    RULES = {"name": NAME}

    def __init__(self, name: str):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name)
        self.name = name

    @abstractmethod
    def fit(self, train: Features | StreamedFeatures, val: Features | None, ctx: FitContext) -> FitResult: ...


class ImageMethod(ABC):
    """A method that trains on the images of the splits, not on cached features (fine-tuning).

    ``fit_images`` gets ``(PIL image, target)`` datasets and the configured backbone (which it
    must leave unchanged); its scorer maps batches of images preprocessed by
    ``backbone.transform`` to class scores (B x C).
    """

    RULES = {"name": NAME}

    def __init__(self, name: str):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name)
        self.name = name

    @abstractmethod
    def fit_images(self, train: Dataset, val: Dataset | None, backbone: Backbone,
                   ctx: FitContext) -> FitResult: ...


class HeadModule(L.LightningModule):
    """A LightningModule that trains one or more linear heads (``self.heads``) on the same
    batches; ``head_scores`` gives their scores (B x K x C). Validation logs each head's loss
    per batch and, at the end of the epoch, every metric of the task over the whole split
    (mAP cannot be averaged over batches); with several heads the keys end in ``[k]``."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self._val_scores: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def head_scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric_key(self, name: str, k: int) -> str:
        return name if len(self.heads) == 1 else f"{name}[{k}]"

    def validation_step(self, batch: Features, batch_idx: int) -> None:
        x, y = batch
        scores = self.head_scores(x)
        self.log_dict({self.metric_key("val/loss", k): head.loss(scores[:, k], y)
                       for k, head in enumerate(self.heads)}, batch_size=len(y), sync_dist=True)
        self._val_scores.append(scores.detach())
        self._val_targets.append(y)

    def on_validation_epoch_end(self) -> None:
        if self._val_scores:
            scores, y = torch.cat(self._val_scores).float().cpu(), torch.cat(self._val_targets).cpu()
            self._val_scores, self._val_targets = [], []
            for k, head in enumerate(self.heads):
                metrics = head.task.metrics(scores[:, k], y)
                # Under DDP the logged value is the mean over ranks (each scores all of val: the same).
                self.log_dict({self.metric_key(f"val/{name}", k): value for name, value in metrics.items()},
                              sync_dist=True)
