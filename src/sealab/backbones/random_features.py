"""A fixed, seeded random ReLU projection of the pixels: features without downloaded weights."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from sealab.backbones.base import BACKBONE, Backbone
from sealab.rules import COUNT, NAME, integer, number, validate


class RandomReLUFeatures(Backbone):
    """``relu(W vec(image) + b)`` with Gaussian ``W`` (variance 1/input_dim) and ``b``
    (std ``bias_std``), drawn once from ``seed``: the classical random-features extractor.
    Images are taken grey-scale at ``input_size`` x ``input_size``, pixels scaled to [-1, 1]."""

    RULES = {"feature_dim": COUNT, "input_size": COUNT, "bias_std": number(0), "seed": integer(0), "name": NAME}

    def __init__(self, feature_dim: int = 2048, input_size: int = 8, bias_std: float = 0.5,
                 seed: int = 0, name: str = "random_features"):
        validate(type(self).__name__, self.RULES, prefix=BACKBONE, feature_dim=feature_dim,
                 input_size=input_size, bias_std=bias_std, seed=seed, name=name)
        super().__init__()
        self.name, self.feature_dim, self.input_size, self.seed = name, feature_dim, input_size, seed
        self.bias_std = bias_std
        in_dim = input_size * input_size
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(feature_dim, in_dim, generator=gen) / in_dim**0.5)
        self.register_buffer("bias", bias_std * torch.randn(feature_dim, generator=gen))
        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Grayscale(),
            v2.Resize((input_size, input_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5], std=[0.5]),
        ])
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(images.flatten(1) @ self.weight.T + self.bias)

    def identity(self) -> dict[str, Any]:
        return {"backbone": self.name, "kind": "random_relu", "feature_dim": self.feature_dim,
                "input_size": self.input_size, "bias_std": self.bias_std, "seed": self.seed}
