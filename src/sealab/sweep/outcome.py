"""What a job leaves in its run directory besides metrics.json, so that a summary can account
for every job of a sweep: failed.json when it raised, resumed.json when ``resume=true`` reused
the result of an identical job in another directory of the sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sealab.fileio import atomic_write_json

METRICS, FAILED, RESUMED = "metrics.json", "failed.json", "resumed.json"


def error_line(err: BaseException) -> str:
    """``Type: last line`` of the innermost cause: what went wrong rather than the wrapper that
    passed it on (Hydra's instantiate wraps a constructor's error and ends with ``full_key: ...``)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1]}" if lines else type(err).__name__


def job_identity(config: DictConfig) -> dict[str, Any]:
    """Dataset, backbone and method as chosen, seed and overrides, from a job's config with its
    ``hydra`` node (what Hydra hands a callback, or .hydra/config.yaml merged with hydra.yaml)."""
    choices = config.hydra.runtime.choices
    return {**{group: choices.get(group) for group in ("dataset", "backbone", "method")},
            "seed": config.get("seed"), "overrides": list(config.hydra.overrides.task)}


def write_failure(run_dir: Path, err: BaseException, config: DictConfig) -> None:
    atomic_write_json(Path(run_dir) / FAILED, {**job_identity(config), "error": error_line(err)})
