"""Any timm model as a frozen extractor of its pooled pre-logits features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from torchvision.transforms import v2

from sealab.backbones.base import BACKBONE, Backbone
from sealab.backbones.checkpoint import does_not_fit, load_backbone_checkpoint
from sealab.backbones.hub import offline_weights
from sealab.fileio import file_sha256
from sealab.rules import BOOL, COUNT, integer, listing, mapping, one_of, text, validate

PREPROCESSING = ("protocol", "timm")

FEATURES = ("pooled", "cls", "mean_patch", "last_k_cls")
TOKEN_FEATURES = FEATURES[1:]  # options that need a vision transformer's tokens


def _is_token_model(model: torch.nn.Module) -> bool:
    """A timm vision transformer (VisionTransformer, Eva, ...): token outputs with prefix tokens."""
    return all(hasattr(model, a) for a in ("num_prefix_tokens", "blocks", "forward_intermediates"))


class TimmBackbone(Backbone):
    """``timm.create_model(model_name, pretrained, num_classes=0)`` as a frozen extractor.

    Weights:
    - ``pretrained=true``: timm's hub weights for the tag in ``model_name``; with
      ``checkpoint=/path`` a local copy of them (the hub's ``model.safetensors`` or
      ``pytorch_model.bin``) is read instead, without touching the network, through timm's own
      conversion (e.g. position embeddings resampled to ``img_size``), strictly.
    - ``pretrained=false`` with ``checkpoint``: a release checkpoint in its own format, read by
      ``checkpoint_key``, ``drop_prefixes`` and ``key_map`` (see sealab.backbones.checkpoint).
    - ``pretrained=false`` alone: random weights from ``init_seed`` (reproducible, cacheable).

    ``features``: ``pooled`` (default) is the model's pooled pre-logits output (ResNet: global
    average pool; ViT: per its ``global_pool``, usually the normed CLS token). For vision
    transformers also ``cls`` (the CLS token of ``forward_features``, after the final norm),
    ``mean_patch`` (mean of the normed patch tokens, prefix tokens excluded) and ``last_k_cls``
    (DINO's linear-evaluation recipe: the normed CLS tokens of the last ``last_k`` blocks
    concatenated, plus the mean patch token of the last block when ``with_mean_patch``).

    ``preprocessing``: ``protocol`` resizes the shorter side to ``img_size`` (bicubic),
    centre-crops ``img_size`` and normalises with the model's mean/std (the transfer
    benchmark's recipe); ``timm`` uses the model's own eval transform. Models that take an
    ``img_size`` (ViTs) are built for it.
    """

    RULES = {"model_name": text(), "pretrained": BOOL, "checkpoint": text(nullable=True),
             "checkpoint_key": text(nullable=True), "key_map": mapping(nullable=True),
             "drop_prefixes": listing(nullable=True), "img_size": integer(1, nullable=True),
             "preprocessing": one_of(*PREPROCESSING), "features": one_of(*FEATURES), "last_k": COUNT,
             "with_mean_patch": BOOL, "init_seed": integer(0), "name": text(nullable=True)}

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_key: str | None = None,
        key_map: dict[str, str] | None = None,
        drop_prefixes: list[str] | None = None,
        img_size: int | None = None,
        preprocessing: str = "protocol",
        features: str = "pooled",
        last_k: int = 4,
        with_mean_patch: bool = False,
        init_seed: int = 0,
        name: str | None = None,
    ):
        checkpoint = os.fspath(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint  # Python callers
        validate(type(self).__name__, self.RULES, prefix=BACKBONE, model_name=model_name, pretrained=pretrained,
                 checkpoint=checkpoint, checkpoint_key=checkpoint_key, key_map=key_map,
                 drop_prefixes=drop_prefixes, img_size=img_size, preprocessing=preprocessing, features=features,
                 last_k=last_k, with_mean_patch=with_mean_patch, init_seed=init_seed, name=name)
        super().__init__()
        if with_mean_patch and features != "last_k_cls":
            raise ValueError("backbone.with_mean_patch=true appends the mean patch token to the "
                             f"last_k_cls features; backbone.features is {features!r} "
                             "(use features=mean_patch for the mean patch token alone)")
        self.name = name or model_name
        self.model_name, self.pretrained, self.init_seed = model_name, pretrained, init_seed
        self.preprocessing = preprocessing
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        self.checkpoint_key = checkpoint_key
        self.key_map = dict(key_map or {})
        self.drop_prefixes = list(drop_prefixes or [])
        self._sha256: str | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            # Hub weights with no network: the copy timm cached, or a message saying what to do
            # (at once; timm's download retried for about a minute).
            local = self.checkpoint if self.checkpoint else (
                pretrained and offline_weights(model_name, timm.models.get_pretrained_cfg(model_name)))
            if pretrained and local:
                self.model = self._create_from_local_hub_file(img_size, local)
            else:
                self.model = self._create(pretrained, img_size)
        if self.checkpoint and not pretrained:
            load_backbone_checkpoint(self.model, self.checkpoint, checkpoint_key, self.key_map,
                                     self.drop_prefixes, model_name=model_name)
        self.features, self.last_k, self.with_mean_patch = features, last_k, with_mean_patch
        self.feature_dim = self._feature_dim()
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

    def _create(self, pretrained: bool, img_size: int | None, **kwargs) -> torch.nn.Module:
        """The timm model, built for ``img_size`` when its class takes one (ViTs; not ResNets)."""
        kwargs = dict(pretrained=pretrained, num_classes=0, **kwargs)
        if img_size:
            try:
                return timm.create_model(self.model_name, img_size=img_size, **kwargs)
            except TypeError as err:
                if "img_size" not in str(err):
                    raise
        return timm.create_model(self.model_name, **kwargs)

    def _create_from_local_hub_file(self, img_size: int | None, path: Path) -> torch.nn.Module:
        """``pretrained=true`` with a local file (``checkpoint``, or timm's cached copy when the
        hub cannot be reached): timm's pretrained loading (its checkpoint filter included) from
        the file's state dict, never from the network, and strict: the classifier (dropped for
        ``num_classes=0``) is the only thing left out."""
        if not path.is_file():
            raise FileNotFoundError(f"backbone checkpoint not found: {path} (set backbone.checkpoint)")
        state = timm.models.load_state_dict(str(path))
        cfg = timm.models.get_pretrained_cfg(self.model_name)
        classifiers = (cfg.classifier,) if isinstance(cfg.classifier, str) else tuple(cfg.classifier or ())
        for head in classifiers:
            state.pop(f"{head}.weight", None)
            state.pop(f"{head}.bias", None)
        # source="" and state_dict set: timm loads this dict (no hub, no URL); num_classes=0 on
        # both sides keeps its load strict.
        overlay = {"state_dict": state, "source": "", "num_classes": 0}
        try:
            model = self._create(True, img_size, pretrained_cfg_overlay=overlay)
        except RuntimeError as err:
            # timm's own message lists every key on one line: a few lines instead, from the same
            # comparison a release checkpoint gets (before timm's filter, which may rename keys).
            problem = does_not_fit(path, state, self._create(False, img_size).state_dict(), self.model_name,
                                   "backbone.pretrained=true: read as a local copy of its timm hub weights")
            raise RuntimeError(
                (problem or f"{path} does not fit backbone.model_name={self.model_name}: {err}")
                + "\n  A release checkpoint in another format: backbone.pretrained=false with "
                "backbone.checkpoint_key, backbone.drop_prefixes and backbone.key_map.") from err
        for attr in ("pretrained_cfg", "default_cfg"):
            cfg_dict = getattr(model, attr, None)
            if isinstance(cfg_dict, dict):
                cfg_dict.pop("state_dict", None)  # do not keep a second copy of the weights
        return model

    def _feature_dim(self) -> int:
        model = self.model
        if self.features == "pooled":
            return getattr(model, "head_hidden_size", None) or model.num_features
        if not _is_token_model(model):
            raise ValueError(
                f"backbone.features={self.features!r} needs a vision transformer's tokens; "
                f"{self.model_name} is a {type(model).__name__}: use backbone.features=pooled")
        if self.features != "mean_patch" and getattr(model, "cls_token", None) is None:
            raise ValueError(f"backbone.features={self.features!r} needs a CLS token; {self.model_name} "
                             "has none: use backbone.features=mean_patch or pooled")
        dim = model.num_features
        if self.features == "last_k_cls":
            if not 1 <= self.last_k <= len(model.blocks):
                raise ValueError(f"backbone.last_k={self.last_k}: {self.model_name} has "
                                 f"{len(model.blocks)} blocks")
            return dim * (self.last_k + int(self.with_mean_patch))
        return dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.features == "pooled":
            return self.model(images)
        if self.features == "last_k_cls":
            blocks = self.model.forward_intermediates(
                images, indices=self.last_k, return_prefix_tokens=True, norm=True, stop_early=True,
                output_fmt="NLC", intermediates_only=True)
            out = [prefix[:, 0] for _, prefix in blocks]
            if self.with_mean_patch:
                out.append(blocks[-1][0].mean(dim=1))
            return torch.cat(out, dim=1)
        tokens = self.model.forward_features(images)
        if self.features == "cls":
            return tokens[:, 0]
        return tokens[:, self.model.num_prefix_tokens:].mean(dim=1)

    def checkpoint_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint)
        return self._sha256

    def identity(self) -> dict[str, Any]:
        if self.checkpoint:
            weights = {"checkpoint": str(self.checkpoint.resolve()), "sha256": self.checkpoint_sha256()}
            if self.pretrained:
                weights["pretrained"] = self.model.pretrained_cfg.get("tag") or "default"
            else:
                weights.update(checkpoint_key=self.checkpoint_key, key_map=self.key_map,
                               drop_prefixes=self.drop_prefixes)
        elif self.pretrained:
            weights = {"pretrained": self.model.pretrained_cfg.get("tag") or "default"}
        else:
            weights = {"random_init_seed": self.init_seed}
        features: dict[str, Any] = {"features": self.features}
        if self.features == "last_k_cls":
            features.update(last_k=self.last_k, with_mean_patch=self.with_mean_patch)
        return {"backbone": self.name, "model": self.model_name, "weights": weights,
                "features": features, "img_size": self.img_size, "preprocessing": self.preprocessing,
                "transform": repr(self.transform)}
