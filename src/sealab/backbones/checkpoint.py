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

SHOW = 3  # keys shown per list in error messages


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


# timm architectures a release checkpoint most often holds, compared with a file that does not fit.
KNOWN_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                       "resnet10t", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
                       "vit_small_patch14_dinov2", "vit_base_patch14_dinov2")


def looks_like(state: Mapping[str, torch.Tensor], candidates: Sequence[str] = KNOWN_ARCHITECTURES) -> str | None:
    """The timm architecture whose weights (names and shapes, classifier left out) match
    ``state``'s best, when at least 90% of both sides match; built on the meta device (no
    memory, no download)."""
    import timm

    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    best, best_score = None, 0.9
    for name in candidates:
        with torch.device("meta"):
            own = {k: tuple(v.shape) for k, v in timm.create_model(name, num_classes=0).state_dict().items()}
        score = sum(shapes.get(k) == v for k, v in own.items()) / max(len(own), len(shapes))
        if score >= best_score:
            best, best_score = name, score
    return best


def does_not_fit(path: Path, state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                 model_name: str, settings: str, file_keys: Sequence[str] | None = None) -> str | None:
    """None when ``state`` fits ``own`` (same names, same shapes); else a few lines: the count of
    missing, unexpected and reshaped keys with the first of each, ``settings`` (what was applied
    to the file's keys), which architecture the file looks like (else its first ``file_keys``),
    and what to change."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        return None
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights of {model_name} are missing: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys are unexpected: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} have another shape: {_preview(mismatched)}")
    guess = looks_like(state)
    like = (f"The file looks like timm's {guess}: try backbone.model_name={guess}." if guess and guess != model_name
            else f"Keys in the file look like {_preview(list(state) if file_keys is None else file_keys)}.")
    return (f"{path} does not fit backbone.model_name={model_name}: " + "; ".join(problems)
            + f" (keys after {settings}).\n  {like}\n  Fix backbone.key_map (prefix renames) or "
            "backbone.checkpoint_key (the entry holding the weights), list heads and momentum encoders to "
            "leave out in backbone.drop_prefixes, or check backbone.model_name.")


def load_backbone_checkpoint(model: nn.Module, path: Path, checkpoint_key: str | None,
                             key_map: Mapping[str, str] | None = None,
                             drop_prefixes: Sequence[str] = (), model_name: str = "the model") -> None:
    """Load ``path`` into ``model`` strictly (module docstring); fails naming the keys."""
    raw = read_checkpoint(path, checkpoint_key)
    state = remap_keys(raw, key_map, drop_prefixes)
    problem = does_not_fit(path, state, model.state_dict(), model_name,
                           f"backbone.checkpoint_key={checkpoint_key!r}, backbone.drop_prefixes="
                           f"{list(drop_prefixes or ())} and backbone.key_map={dict(key_map or {})}", list(raw))
    if problem:
        raise RuntimeError(problem)
    model.load_state_dict(state, strict=True)
