"""The settings that make a run's numbers what they are: its config's keys whose declared role
changes them (``sealab.settings``), with the places of data, cache and outputs left out. The
resume hash, the conflict a resumed job reports and the summary's row labels all read this view.
Imports neither torch nor Lightning."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sealab.settings import changes_numbers, flatten


def _placeholder(key: str) -> str:
    return f"<paths.{key}>"


def _numbers(container: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in flatten(container).items() if changes_numbers(key)}


def numbers_config(cfg: DictConfig, own: bool = False) -> dict[str, Any]:
    """``{"method.epochs": 3, "dataset.root": "<paths.data_dir>/dtd", ...}``: the resolved config of
    a run about to start, flattened, restricted to the keys that change numbers. Each ``paths.x``
    resolves to a placeholder first, so moving data, cache or outputs changes nothing. ``own``:
    ``cfg`` is the caller's copy, to be changed here instead of copied (a copy costs ~10 ms)."""
    cfg = cfg if own else copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        # Where hydra runs jobs changes no number; and hydra.sweep.subdir's resolver reads this
        # view (resolving it here would recurse).
        cfg.pop("hydra", None)
        for key in cfg.get("paths") or {}:
            cfg.paths[key] = _placeholder(key)
    return _numbers(OmegaConf.to_container(cfg, resolve=True))


def recorded_numbers(config: Mapping[str, Any]) -> dict[str, Any]:
    """The same view of a finished run, from the resolved ``config`` of its metrics.json (resolved
    with real paths): a value that is one of its ``paths`` or lies below one reads with that
    path's placeholder, the longest path first."""
    paths = sorted(((str(value).rstrip("/"), key) for key, value in (config.get("paths") or {}).items() if value),
                   key=lambda found: -len(found[0]))

    def neutral(value: Any) -> Any:
        if isinstance(value, str):
            for path, key in paths:
                if value == path or value.startswith(path + "/"):
                    return _placeholder(key) + value[len(path):]
        return value

    return {key: neutral(value) for key, value in _numbers(config).items()}


def differences(there: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """``key: value there -> value here`` for every key whose values differ (absent: None)."""
    keys = sorted(set(there) | set(here))
    return [f"{key}: {show(there.get(key))} -> {show(here.get(key))}"
            for key in keys if there.get(key) != here.get(key)]


def show(value: Any) -> str:
    """A value as an override writes it (``true``, ``null``, ``[0.3, 0.8]``, ``float16``)."""
    return value if isinstance(value, str) else json.dumps(value)
