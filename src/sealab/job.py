"""What Hydra knows about the running job: its config-group choices, its overrides and, in a
multirun, the sweep it belongs to and which overrides vary across that sweep."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def task_overrides() -> list[str]:
    """The command-line overrides of this job (a sweep job's own values included)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def choice(group: str, cfg: DictConfig) -> str:
    """The config-group option picked for this run (e.g. ``sea`` for method). Precomputed
    features (``dataset.backbone``) name the backbone that made them: none of ours runs."""
    if group == "backbone" and OmegaConf.select(cfg, "dataset.backbone"):
        return str(cfg.dataset.backbone)
    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices.get(group)
        if picked:
            return str(picked)
    return str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]


def sweep_dir() -> Path | None:
    """The multirun's directory (None for a single run)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def _sweep_keys(overrides: list[str]) -> set[str]:
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}


def varying_keys() -> set[str] | None:
    """Keys swept in this job's multirun: on the command line (read from the multirun.yaml
    Hydra's basic sweeper writes before launching) or in ``hydra.sweeper.params`` (also where
    Optuna's search space lives). None when neither tells (a single run, or a sweeper that
    keeps no multirun.yaml and has no params): then every override may vary."""
    root = sweep_dir()
    if root is None:
        return None
    params = HydraConfig.get().sweeper.get("params") or {}
    keys = _sweep_keys([f"{key}={value}" for key, value in params.items()])
    if (root / "multirun.yaml").is_file():
        keys |= _sweep_keys(list(OmegaConf.load(root / "multirun.yaml").hydra.overrides.task))
    return keys or None
