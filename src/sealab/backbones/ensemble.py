"""Several backbones as one: their features concatenated (the paper also reports SeA on an
ensemble of pre-trained models). Each member is extracted and cached under its own key, so an
ensemble reuses the features its members already have and adds nothing to the cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from sealab.backbones.base import BACKBONE, Backbone
from sealab.rules import BOOL, NAME, listing, validate

CONFIG_MODULE = "sealab.conf"


def member_config(name: str) -> DictConfig:
    """The config of ``backbone=<name>``, from the running app's search path (so a user's own
    backbone configs work as members) or, outside an app, from the packaged configs."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=[f"backbone={name}"]).backbone
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=[f"backbone={name}"]).backbone


class Ensemble(Backbone):
    """``backbone=ensemble backbone.members=[resnet50,vit_small_dino]``: a member is the name
    of a backbone config, or a config of its own (``{_target_: ..., ...}``, e.g. with a
    checkpoint path). ``normalize``: L2-normalise each member's features before concatenating,
    so that no member dominates by its scale."""

    # each member is checked by its own class's rules when it is built
    RULES = {"members": listing(), "normalize": BOOL, "name": NAME}

    def __init__(self, members: Sequence[str | Mapping], normalize: bool = True, name: str = "ensemble"):
        validate(type(self).__name__, self.RULES, prefix=BACKBONE, members=members, normalize=normalize, name=name)
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"backbone=ensemble needs at least two members, got {list(members)}: "
                             "set backbone.members=[name,name,...]")
        self.members = torch.nn.ModuleList(
            instantiate(member_config(m) if isinstance(m, str) else m) for m in members)
        self.normalize = normalize
        self.name = name + "(" + "+".join(m.name for m in self.members) + ")"
        self.feature_dim = sum(m.feature_dim for m in self.members)
        self.freeze()

    @property
    def transform(self):
        raise TypeError("an ensemble has no single preprocessing: extract each member with its own "
                        "transform and combine() the features (sealab.features.store does)")

    def combine(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The ensemble's features from its members' (n x d_m each, in member order)."""
        if self.normalize:
            features = [F.normalize(x, dim=1) for x in features]
        return torch.cat(features, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise TypeError("an ensemble's members take differently preprocessed images: use combine()")

    def identity(self) -> dict[str, Any]:
        return {"backbone": self.name, "members": [m.identity() for m in self.members],
                "normalize": self.normalize}
