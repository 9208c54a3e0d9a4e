"""The jobs a sweep was asked for, whether they started or not: its overrides (and
``hydra.sweeper.params``) expanded as Hydra's basic sweeper expands them, read from the
multirun.yaml it writes before it composes or launches any job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from sealab.fileio import atomic_write_json

MULTIRUN = "multirun.yaml"
# The jobs a resumed sweep found finished and did not launch (sealab's sweeper): they leave no
# new run dir, yet they are done.
RESUMED_JOBS = "resumed_jobs.json"
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
# Sweepers that expand a sweep as the basic one does: it, and sealab's (the default), which
# only leaves out the jobs a resumed sweep finished.
SEALAB_SWEEPER = "hydra_plugins.sealab_sweeper.sealab_sweeper.SealabSweeper"
GROUPS = ("dataset", "backbone", "method")


def arguments(master: DictConfig) -> list[str]:
    """What the basic sweeper expands: ``hydra.sweeper.params``, then the command line's overrides."""
    params = master.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(master.hydra.overrides.task)


def planned_jobs(master: DictConfig, config_loader: Any = None) -> list[list[str]] | None:
    """Each job's overrides, in job-number order, from the sweep's ``master`` config (its
    multirun.yaml). None when they cannot be known up front: another sweeper (Optuna picks each
    trial as it goes), or a ``glob(...)`` of config options without Hydra's ``config_loader``."""
    if master.hydra.sweeper.get("_target_") not in (BASIC_SWEEPER, SEALAB_SWEEPER):
        return None
    try:
        parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(arguments(master))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException:
        return None
    return [list(job) for batch in batches for job in batch]


def override_values(job: list[str]) -> dict[str, str]:
    """``{key: value}`` of a job's overrides (``+`` / ``~`` prefixes dropped)."""
    return {key.lstrip("+~"): value for key, _, value in (o.partition("=") for o in job)}


def planned_identity(master: DictConfig, job: list[str]) -> dict[str, Any]:
    """Dataset, backbone, method, seed and overrides of a job that never started, as its
    overrides set them on top of the sweep's config (the same fields failed.json holds)."""
    values, choices = override_values(job), master.hydra.runtime.choices
    identity: dict[str, Any] = {group: values.get(group, choices.get(group)) for group in GROUPS}
    # Precomputed features name their own backbone (dataset.backbone).
    same_dataset = identity["dataset"] == choices.get("dataset")
    identity["backbone"] = (values.get("dataset.backbone")
                            or (OmegaConf.select(master, "dataset.backbone", default=None) if same_dataset else None)
                            or identity["backbone"])
    seed = values.get("seed", master.get("seed"))
    identity["seed"] = int(seed) if str(seed).lstrip("-").isdigit() else seed
    return {**identity, "overrides": list(job)}


def record_resumed(sweep_dir: Path, jobs: list[list[str]]) -> None:
    """Record the overrides of the jobs ``resume=true`` found finished and left out, for
    ``started_jobs``; at each sweep's start, as its multirun.yaml (none: an earlier record goes)."""
    path = Path(sweep_dir) / RESUMED_JOBS
    if jobs:
        atomic_write_json(path, {"jobs": jobs})
    else:
        path.unlink(missing_ok=True)


def started_jobs(sweep_dir: Path) -> set[tuple[str, ...]]:
    """The overrides of every job that has a run dir below ``sweep_dir`` (Hydra writes
    .hydra/overrides.yaml as a job starts, whichever process runs it), and of those the sweep
    left out because they had finished (``record_resumed``)."""
    started = {tuple(OmegaConf.load(p)) for p in Path(sweep_dir).rglob(".hydra/overrides.yaml")}
    resumed = Path(sweep_dir) / RESUMED_JOBS
    if resumed.is_file():
        started |= {tuple(job) for job in json.loads(resumed.read_text())["jobs"]}
    return started


def not_started(sweep_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(job number, identity)`` of each planned job of ``sweep_dir`` that has no run dir (none
    holds its overrides in .hydra/overrides.yaml): the sweep stopped before it (interrupted,
    killed, or a job that could not be composed). Empty when the plan is unknown."""
    path = Path(sweep_dir) / MULTIRUN
    if not path.is_file():
        return []
    master = OmegaConf.load(path)
    jobs = planned_jobs(master) or []
    started = started_jobs(sweep_dir)
    return [(num, planned_identity(master, job)) for num, job in enumerate(jobs) if tuple(job) not in started]
