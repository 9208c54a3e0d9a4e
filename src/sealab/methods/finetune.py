"""Full fine-tuning: the backbone (a copy) and a new linear head trained together on augmented images."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from sealab.backbones.base import Backbone
from sealab.backbones.timm_backbone import TimmBackbone
from sealab.heads.linear import LinearHead
from sealab.methods.base import METHOD, FitContext, settings_of
from sealab.methods.image_training import ImageModule, ImageTraining, cosine_per_step
from sealab.rules import number, positive, validate


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, decay: float) -> list[dict[str, Any]]:
    """Param groups with layer-wise lr decay (BEiT/MAE), from timm's layer assignment: in a ViT
    the patch/pos embeddings are layer 0, block i layer i + 1 and the final norm shares the
    last block's layer. The head, kept outside the model, is the top layer, so a layer l of
    a depth-D ViT gets ``lr * decay ** (D + 1 - l)``: block i (from 0) ``lr * decay ** (D - i)``.
    As in those recipes, biases, norms and the model's ``no_weight_decay()`` (position
    embedding, class token) get no weight decay."""
    # Imported here, after sealab's own timm import (which keeps wandb out).
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(
        model, weight_decay=weight_decay, layer_decay=decay,
        no_weight_decay_list=tuple(getattr(model, "no_weight_decay", set)()))
    return [{"params": g["params"], "weight_decay": g["weight_decay"], "lr": lr * g["lr_scale"] * decay}
            for g in groups]


class FineTune(ImageTraining):
    """``method=finetune``: the transfer benchmark's full fine-tuning baseline.

    A copy of the backbone is unfrozen (BatchNorm uses batch statistics while training) and
    trained with a new ``head`` on random-resized-crop + flip augmented images, every learning
    rate on a cosine to 0; the configured backbone itself stays frozen and unchanged.
    ``optimizer.lr`` is the backbone's learning rate, ``head_lr`` the head's (null: the same);
    ``layer_decay`` (e.g. 0.65 for a ViT-B) scales the backbone's per layer, see
    ``layer_decay_groups``. Checkpoints, resume, precision, accumulation: ``ImageTraining``.
    """

    # head_lr null: optimizer.lr; layer_decay null: none
    RULES = {**ImageTraining.RULES, "head_lr": positive(nullable=True),
             "layer_decay": number(0, 1, open_low=True, nullable=True)}

    def __init__(self, name: str, head: Callable[..., LinearHead],
                 optimizer: Callable[..., torch.optim.Optimizer], head_lr: float | None = None,
                 layer_decay: float | None = None, **training: Any):
        validate(type(self).__name__, self.RULES, prefix=METHOD, name=name, head=head,
                 optimizer=settings_of(optimizer), head_lr=head_lr, layer_decay=layer_decay, **training)
        super().__init__(name, head, optimizer, **training)
        self.head_lr, self.layer_decay = head_lr, layer_decay

    def build(self, train: Dataset, backbone: Backbone, ctx: FitContext) -> ImageModule:
        if not isinstance(backbone, TimmBackbone):
            raise TypeError(f"method={self.name} fine-tunes a timm model, but backbone {backbone.name} is a "
                            f"{type(backbone).__name__}: choose e.g. backbone=resnet10t_random_init or resnet50")
        settings = getattr(self.optimizer, "keywords", {})
        if "lr" not in settings:
            raise ValueError(f"method={self.name}: set method.optimizer.lr (the backbone's learning rate)")
        lr = settings["lr"]
        tuned = copy.deepcopy(backbone).unfreeze()
        head = self.head(in_features=backbone.feature_dim, task=ctx.task)
        groups = ([{"params": list(tuned.parameters())}] if self.layer_decay is None else
                  layer_decay_groups(tuned.model, lr, settings.get("weight_decay", 0.0), self.layer_decay))
        groups.append({"params": list(head.parameters()), "lr": lr if self.head_lr is None else self.head_lr})
        return ImageModule(tuned, nn.Identity(), head, self.optimizer, groups, cosine_per_step)
