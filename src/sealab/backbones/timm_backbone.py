"""Any timm model as a frozen extractor of its pooled pre-logits features."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from sealab.backbones.base import Backbone
from sealab.backbones.checkpoint import load_backbone_checkpoint
from sealab.fileio import file_sha256

PREPROCESSING = ("protocol", "timm")


def _import_timm_without_wandb():
    """timm.utils imports wandb when it is installed (0.7 s, plus wandb's own set-up) for a
    logging helper sealab never calls. Hidden while timm loads, wandb is imported only when a
    run asks for logger=wandb."""
    if "wandb" in sys.modules:
        import timm
        return timm
    sys.modules["wandb"] = None  # makes timm's optional `import wandb` fail fast
    try:
        import timm
    finally:
        del sys.modules["wandb"]
    return timm


timm = _import_timm_without_wandb()


class TimmBackbone(Backbone):
    """``timm.create_model(model_name, pretrained, num_classes=0)``: the pooled features
    (2048-d for ResNet-50, the CLS/pooled token for ViTs).

    Weights come from timm's hub (``pretrained``) or a local ``checkpoint`` whose keys are
    renamed by ``key_map`` (e.g. MoCo's ``module.encoder_q.`` prefix). ``init_seed`` makes a
    randomly initialised model reproducible, so its features can be cached.

    ``preprocessing``: ``protocol`` resizes the shorter side to ``img_size`` (bicubic),
    centre-crops ``img_size`` and normalises with the model's mean/std (the transfer
    benchmark's recipe); ``timm`` uses the model's own eval transform.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        checkpoint: str | None = None,
        checkpoint_key: str | None = None,
        key_map: dict[str, str] | None = None,
        img_size: int | None = None,
        preprocessing: str = "protocol",
        init_seed: int = 0,
        name: str | None = None,
    ):
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing={preprocessing!r}: choose one of {PREPROCESSING}")
        self.name = name or model_name
        self.model_name, self.pretrained, self.init_seed = model_name, pretrained, init_seed
        self.preprocessing = preprocessing
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        if self.checkpoint:
            load_backbone_checkpoint(self.model, self.checkpoint, checkpoint_key, key_map or {})
        self.feature_dim = self.model.num_features
        self.data_config = data_config = timm.data.resolve_model_data_config(self.model)
        size = img_size or data_config["input_size"][-1]
        self.img_size = size
        if preprocessing == "timm":
            if img_size:
                data_config["input_size"] = (3, size, size)
            self.transform = timm.data.create_transform(**data_config, is_training=False)
        else:
            self.transform = v2.Compose([
                v2.PILToTensor(),
                v2.RGB(),
                v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.CenterCrop(size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(data_config["mean"]), std=list(data_config["std"])),
            ])
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def identity(self) -> dict[str, Any]:
        if self.checkpoint:
            weights = {"checkpoint": str(self.checkpoint.resolve()),
                       "sha256": file_sha256(self.checkpoint)}
        elif self.pretrained:
            weights = {"pretrained": self.model.pretrained_cfg.get("tag") or "default"}
        else:
            weights = {"random_init_seed": self.init_seed}
        return {"backbone": self.name, "model": self.model_name, "weights": weights,
                "img_size": self.img_size, "preprocessing": self.preprocessing,
                "transform": repr(self.transform)}
