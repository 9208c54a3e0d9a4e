"""Linear probing with augmentation: the probe's head trained on images through the frozen backbone."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from sealab.backbones.base import Backbone
from sealab.features.extract import run_model
from sealab.heads.linear import LinearHead
from sealab.heads.normalize import FeatureNormalizer
from sealab.methods.base import METHOD, FitContext, settings_of
from sealab.methods.image_training import ImageModule, ImageTraining
from sealab.rules import component, one_of, validate
from sealab.settings import NORMS


class LinearAug(ImageTraining):
    """``method=linear_aug``: the conventional linear probe with random-resized-crop + flip,
    against which SeA's feature-space augmentation is compared. The backbone stays frozen (eval
    mode, no gradients; it is neither copied nor changed); every batch is augmented, passed
    through it, normalised with the run's ``norm`` and scored by a bias-free linear head
    trained with the probe's head, optimiser and ``scheduler`` (as the probe's: null for a
    constant lr, or a partial scheduler config, stepped every epoch).
    Checkpoints, resume, precision, accumulation: ``ImageTraining``.
    """

    # norm: the run's (the config sets ${norm}); scheduler: null or a partial torch scheduler
    RULES = {**ImageTraining.RULES, "norm": one_of(*NORMS), "scheduler": component(nullable=True)}

    def __init__(self, name: str, head: Callable[..., LinearHead],
                 optimizer: Callable[..., torch.optim.Optimizer], norm: str = "l2",
                 scheduler: Callable[[torch.optim.Optimizer], Any] | None = None, **training: Any):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, head=head,
                 optimizer=settings_of(optimizer), norm=norm, scheduler=scheduler, **training)
        if scheduler is not None and not callable(scheduler):  # a mapping: the node lacks _partial_ or _target_
            raise ValueError(f"method.scheduler={scheduler!r}: null, or a scheduler config with _partial_: true "
                             "(e.g. _target_: torch.optim.lr_scheduler.CosineAnnealingLR, T_max: <epochs>)")
        super().__init__(name, head, optimizer, **training)
        self.norm, self.scheduler = norm, scheduler

    def build(self, train: Dataset, backbone: Backbone, ctx: FitContext) -> ImageModule:
        if not backbone.frozen:
            raise ValueError(f"method={self.name} probes a frozen backbone, but {backbone.name} was unfrozen")
        # center_l2 subtracts the mean feature of the un-augmented training images.
        features = (run_model(backbone, train, backbone.transform, ctx.device)[0]
                    if self.norm == "center_l2" else torch.zeros(1, backbone.feature_dim))
        head = self.head(in_features=backbone.feature_dim, task=ctx.task)
        return ImageModule(backbone, FeatureNormalizer(self.norm).fit(features), head, self.optimizer,
                           [{"params": list(head.parameters())}],
                           None if self.scheduler is None else lambda optimizer, _: self.scheduler(optimizer))
