"""Load a self-supervised release checkpoint into a timm model, renaming its keys.

The steps, each one a backbone setting:

1. ``checkpoint_key``: the entry of the file that holds the weights (``state_dict`` for MoCo),
   or none for a file that is the state dict itself (SwAV, DINO ResNet-50, Barlow Twins, ...).
2. ``drop_prefixes``: keys of the *file* that are deliberately left out: projection and
   prediction heads, prototypes, momentum encoders, queues, classifiers.
3. ``key_map``: prefix renames (``{"module.encoder_q.": ""}``); a key matching no prefix keeps
   its name.
4. Strict load: every weight of the model must be found, and every key left after steps 2 and
   3 must be a weight of the model. Anything else fails, naming the missing and the unexpected
   keys and the settings to fix; nothing is ignored silently.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

SHOW = 8  # keys shown per list in error messages


def _preview(keys: Sequence[str]) -> str:
    keys = list(keys)
    more = f" ... and {len(keys) - SHOW} more" if len(keys) > SHOW else ""
    return f"{keys[:SHOW]}{more}"


def read_checkpoint(path: Path, checkpoint_key: str | None) -> dict[str, torch.Tensor]:
    """The state dict held by ``path`` (under ``checkpoint_key`` when given)."""
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {path} (set backbone.checkpoint)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f"{path} holds more than tensors and plain containers (weights-only loading refused it: "
            f"{str(err).splitlines()[0]}). Save just its state dict, e.g. "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pth')") from err
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if checkpoint_key:
        if checkpoint_key not in obj:
            raise KeyError(f"{path} has no entry {checkpoint_key!r} (backbone.checkpoint_key); "
                           f"top-level keys: {_preview(list(obj))}")
        obj = obj[checkpoint_key]
        if not isinstance(obj, Mapping):
            raise TypeError(f"{path}[{checkpoint_key!r}] is a {type(obj).__name__}, not a state dict")
    return dict(obj)


def remap_keys(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str] | None = None,
               drop_prefixes: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Drop the keys that start with one of ``drop_prefixes`` (names as in the file), then
    rename by the first matching prefix of ``key_map``; other keys keep their names."""
    key_map, drop = dict(key_map or {}), tuple(drop_prefixes or ())
    out = {}
    for key, value in state.items():
        if drop and key.startswith(drop):
            continue
        for old, new in key_map.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key in out:
            raise ValueError(f"backbone.key_map {key_map} maps two checkpoint keys to {key!r}")
        out[key] = value
    return out


def load_backbone_checkpoint(model: nn.Module, path: Path, checkpoint_key: str | None,
                             key_map: Mapping[str, str] | None = None,
                             drop_prefixes: Sequence[str] = (), model_name: str = "the model") -> None:
    """Load ``path`` into ``model`` strictly (module docstring); fails naming the keys."""
    raw = read_checkpoint(path, checkpoint_key)
    state = remap_keys(raw, key_map, drop_prefixes)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} weights of {model_name} are missing: {_preview(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} keys are unexpected: {_preview(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} have another shape: {_preview(mismatched)}")
        raise RuntimeError(
            f"{path} does not fit backbone.model_name={model_name} after "
            f"backbone.checkpoint_key={checkpoint_key!r}, backbone.drop_prefixes={list(drop_prefixes or ())} "
            f"and backbone.key_map={dict(key_map or {})} (keys below are after mapping). "
            + "; ".join(problems)
            + f". Keys in the file look like {_preview(list(raw))}. Fix backbone.key_map (prefix renames) "
            "or backbone.checkpoint_key (the entry holding the weights), list heads and momentum "
            "encoders to leave out in backbone.drop_prefixes, or check backbone.model_name.")
    model.load_state_dict(state, strict=True)
