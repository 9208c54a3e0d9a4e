"""What a job takes from the launcher that started it: how many cores are its own."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(launcher: DictConfig, cores: int) -> int | None:
    """Torch threads for one job of a launcher that runs several side by side (None: torch's
    default). Jobs that each take every core wait on each other: two 2-thread jobs on 2 cores
    run 10-40x slower than two 1-thread jobs."""
    n_jobs = launcher.get("n_jobs")  # joblib: n_jobs processes share this machine (< 0: all cores)
    if n_jobs is not None:
        return max(1, cores // n_jobs) if n_jobs > 0 else 1
    # submitit: the cores the scheduler gives each task; Ray: the CPUs each task reserves.
    return launcher.get("cpus_per_task") or OmegaConf.select(launcher, "ray.remote.num_cpus")
