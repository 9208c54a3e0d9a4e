"""Load a self-supervised checkpoint into a timm model, renaming its keys."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def remap_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys by prefix (``{"module.encoder_q.": ""}``); keys matching no prefix are kept
    only when ``key_map`` is empty, so heads and momentum encoders are dropped."""
    if not key_map:
        return dict(state)
    out = {}
    for key, value in state.items():
        for old, new in key_map.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


def load_backbone_checkpoint(model: nn.Module, path: Path, checkpoint_key: str | None,
                             key_map: dict[str, str]) -> None:
    """Load weights strictly for the backbone: every model parameter must be found.

    Classifier/projection weights present in the file but absent from the model are ignored.
    """
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {path} (set backbone.checkpoint)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint_key:
        if checkpoint_key not in state:
            raise KeyError(f"{path} has no entry {checkpoint_key!r}; top-level keys: {list(state)[:10]}")
        state = state[checkpoint_key]
    state = remap_keys(state, key_map)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise RuntimeError(
            f"{path}: {len(result.missing_keys)} backbone weights missing after key remapping "
            f"(first: {result.missing_keys[:5]}); check backbone.key_map and backbone.checkpoint_key. "
            f"Keys in the file look like: {list(state)[:5]}"
        )
