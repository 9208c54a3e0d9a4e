"""``resume=true``: a job whose result the sweep already holds is not run again.

A result counts when a metrics.json below the sweep directory carries the same config hash and
no failed.json lies beside it. Imports neither torch nor Lightning, so a skipped job costs
well under a second."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sealab.fileio import atomic_write_json
from sealab.sweep.outcome import FAILED, METRICS, RESUMED

# Keys that do not change what a run computes: how it is launched, resumed, logged, threaded,
# printed or optimised. (paths.* are replaced by placeholders instead, see config_hash.)
NOT_HASHED = ("hydra", "resume", "logger", "num_threads", "optimized_metric")


def config_hash(cfg: DictConfig) -> str:
    """A digest of the resolved config, blind to the keys that do not change results and to
    where data, cache and outputs live (``${paths.x}`` resolves to a fixed placeholder)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in cfg.get("paths") or {}:
            cfg.paths[key] = f"<paths.{key}>"
        cfg.trainer.pop("enable_progress_bar", None)
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_HASHED:
        container.pop(key, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_record(digest: str, sweep_dir: Path, run_dir: Path) -> dict[str, Any] | None:
    """The record of a finished job with config hash ``digest`` below ``sweep_dir`` (this job's
    own ``run_dir`` first), or None. Reusing another directory's result leaves resumed.json in
    ``run_dir`` pointing to it, so the summary counts that result once and this job as done."""
    for path in [run_dir / METRICS, *sorted(sweep_dir.rglob(METRICS))]:
        if not path.is_file() or (path.parent / FAILED).exists():
            continue
        record = json.loads(path.read_text())
        if record.get("config_hash") == digest:
            if path.parent.resolve() != run_dir.resolve():
                atomic_write_json(run_dir / RESUMED, {"metrics": str(path)})
            return record
    return None


def nothing_to_resume(hydra_overrides: list[str]) -> str | None:
    """Why ``resume=true`` cannot find earlier results, when the sweep folder is not given: the
    default one is named by the time, so it is always new."""
    if any(o.startswith("hydra.sweep.dir=") for o in hydra_overrides):
        return None
    return ("resume=true, but without hydra.sweep.dir=<the folder of the sweep to resume> this job writes into a "
            "new folder and nothing is resumed")
