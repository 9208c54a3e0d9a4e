"""Entry point: ``sealab-train dataset=X backbone=Y method=Z seed=S key=value ...``."""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sealab.console import (as_user_error, command_line_problem, filter_known_warnings, job_console,
                            quiet_lightning)
from sealab.interrupt import JobInterrupted, how_to_finish, stop_on_signals
from sealab.objective import check_search_metric, objective
from sealab.sweep.outcome import record_failure
from sealab.sweep.resume import register_job_dir_resolver

# The configs ship inside the package (conf/ in the repository, sealab/conf once installed; see
# pyproject.toml), so sealab-train works from any directory, editable install or wheel. Add
# your own YAML files with --config-dir DIR or hydra.searchpath.
CONFIG_MODULE = "sealab.conf"

log = logging.getLogger(__name__)

# hydra.sweep.subdir's resolver (conf/hydra/default.yaml): resume=true never writes over a result.
register_job_dir_resolver()

# Set before Hydra composes: some of the warnings it filters are issued while composing.
filter_known_warnings()

# A job's process ends with CPython's final garbage collections walking every object torch,
# Lightning and their imports created: 1 to 4 s on a 2-core machine, longer than the whole fit of
# a small job. Frozen objects are skipped, and the process ends right after. (Handlers run
# last-registered first: those torch and Lightning register when a job imports them run before.)
atexit.register(gc.freeze)


def main() -> float | None:
    """sealab-train: a choice Hydra would refuse without the fix (``trainer=cpu``, a launcher
    whose plugin is missing) stops here, saying what to write instead."""
    problem = command_line_problem(sys.argv[1:])
    if problem:
        sys.exit(problem)
    return _task()


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def _task(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    # SIGTERM / SIGINT end the job with failed.json and a non-zero exit (and end a sweep: the
    # summary then lists this job as interrupted and those not started); a failure (an
    # Exception) is recorded by the sweep callback, which Hydra calls with it, the traceback in
    # the job's log. An error sealab wrote for the user reaches the console as its message alone.
    with job_console(), stop_on_signals(lambda: how_to_finish(run_dir, sweep_dir)):
        try:
            return _job(cfg, hydra_cfg, run_dir, sweep_dir)
        except JobInterrupted as stop:
            record_failure(run_dir, stop, cfg, hydra_cfg, status="interrupted")
            raise
        except Exception as err:
            clean = as_user_error(err, run_dir / f"{hydra_cfg.job.name}.log")
            if clean is None:
                raise
            raise clean from err


def _job(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, sweep_dir: Path | None) -> float | None:
    # torch, Lightning and timm are imported only once a job runs: they take seconds, and
    # --help, --cfg, shell completion, a compose error and a resumed job need none of them.
    from sealab.sweep.launch import available_cores, threads_per_job
    from sealab.sweep.resume import config_hash, finished_record, keep_other_results, nothing_to_resume

    check_search_metric(cfg.optimized_metric)
    digest = config_hash(cfg)
    record = None
    if cfg.resume:
        record = finished_record(digest, sweep_dir or run_dir, run_dir)
        if record is not None:
            log.info("resume: this job's result is already in the sweep (config %s): not run again", digest)
        else:
            keep_other_results(cfg, digest, run_dir)  # says where this job writes instead, or refuses
            if sweep_dir is not None and (warning := nothing_to_resume(list(hydra_cfg.overrides.hydra))):
                log.warning(warning)
    if record is None:
        if cfg.num_threads is None and sweep_dir is not None:
            cfg.num_threads = threads_per_job(hydra_cfg.launcher, available_cores())
        from sealab.experiment import run

        quiet_lightning()  # once lightning is imported (by the experiment): it adds a handler
        record = run(cfg, config_hash=digest)
    return objective(record, cfg.optimized_metric)


if __name__ == "__main__":
    main()
