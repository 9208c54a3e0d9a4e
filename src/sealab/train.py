"""Entry point: ``sealab-train dataset=X backbone=Y method=Z seed=S key=value ...``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sealab.sweep.resume import register_job_dir_resolver

# The configs ship inside the package (conf/ in the repository, sealab/conf once installed; see
# pyproject.toml), so sealab-train works from any directory, editable install or wheel. Add
# your own YAML files with --config-dir DIR or hydra.searchpath.
CONFIG_MODULE = "sealab.conf"

log = logging.getLogger(__name__)

# hydra.sweep.subdir's resolver (conf/hydra/default.yaml): resume=true never writes over a result.
register_job_dir_resolver()

# conf/hydra/launcher/<name>.yaml carry sealab's settings for the launcher plugin of the same
# name, whose schema Hydra then validates and completes them with (deprecated, still in 1.3).
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")


def objective(record: dict[str, Any], name: str | None) -> float | None:
    """The value a Hydra sweeper optimises: ``name`` (optimized_metric), by default the
    validation twin of the primary metric, so that test data never drives a search. None when a
    run has no validation split and no metric was named."""
    metrics = record["metrics"]
    if name is None:
        name = record["primary_metric"].replace("test/", "val/", 1)
        if name not in metrics:
            return None
    if name not in metrics:
        choices = ", ".join(sorted(k for k in metrics if not k.startswith("test/")))
        raise ValueError(f"optimized_metric={name!r} is not a metric of this run: choose one of {choices}")
    return metrics[name]


def _check_optimized_metric(name: str | None) -> None:
    if name is not None and not name.startswith("val/"):
        raise ValueError(f"optimized_metric={name!r}: a search may only read validation metrics "
                         "(val/<metric>, e.g. val/top1); test metrics are for reporting")


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # torch, Lightning and timm are imported only once a job runs: they take seconds, and
    # --help, --cfg, shell completion, a compose error and a resumed job need none of them.
    from sealab.sweep.launch import available_cores, threads_per_job
    from sealab.sweep.resume import config_hash, finished_record, keep_other_results, nothing_to_resume

    _check_optimized_metric(cfg.optimized_metric)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    digest = config_hash(cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    record = None
    if cfg.resume:
        record = finished_record(digest, Path(hydra_cfg.sweep.dir) if multirun else run_dir, run_dir)
        if record is not None:
            log.info("resume: this job's result is already in the sweep (config %s): not run again", digest)
        else:
            keep_other_results(cfg, digest, run_dir)  # says where this job writes instead, or refuses
            if multirun and (warning := nothing_to_resume(list(hydra_cfg.overrides.hydra))):
                log.warning(warning)
    if record is None:
        if cfg.num_threads is None and multirun:
            cfg.num_threads = threads_per_job(hydra_cfg.launcher, available_cores())
        from sealab.experiment import run

        record = run(cfg, config_hash=digest)
    return objective(record, cfg.optimized_metric)


if __name__ == "__main__":
    main()
