"""The frozen feature extractor interface."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import torch
from torch import nn

# Where a backbone's node sits in a config: its constructor's messages name the key a user sets.
BACKBONE = "backbone."


class Backbone(nn.Module):
    """Maps a batch of preprocessed images to pooled feature vectors (B x ``feature_dim``).

    ``transform`` turns one PIL image into the tensor ``forward`` expects; ``identity`` names
    everything that changes the features (weights and preprocessing), for the feature cache.
    """

    name: str
    feature_dim: int
    transform: Callable[[Any], torch.Tensor]
    frozen = True  # every extractor is frozen from construction on; only fine-tuning unfreezes

    @abstractmethod
    def identity(self) -> dict[str, Any]: ...

    def freeze(self) -> "Backbone":
        """Eval mode and no gradients: features never depend on batch statistics."""
        self.frozen = True
        self.eval()
        self.requires_grad_(False)
        return self

    def unfreeze(self) -> "Backbone":
        """Gradients on, and ``train()`` switches BatchNorm to batch statistics again: for
        fine-tuning, which changes the weights (so unfreeze a copy: ``identity()`` keys the cache)."""
        self.frozen = False
        self.requires_grad_(True)
        return self.train()

    def train(self, mode: bool = True) -> "Backbone":
        # A frozen backbone stays in eval mode so BatchNorm running stats never move.
        return super().train(mode and not self.frozen)
