"""``resume=true``: a job whose result the sweep already holds is not run again, and a result made
with another config is never written over.

A result counts when a metrics.json below the sweep directory carries the same config hash and
no failed.json lies beside it. sealab's sweeper leaves such jobs out before Hydra composes and
launches them (``FinishedJobs``: about 0.02 s a job); a job started another way (another
sweeper, a single run) checks itself (``finished_record``). Imports neither torch nor Lightning."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sealab.fileio import atomic_write_json
from sealab.sweep.job_configs import JobConfigs
from sealab.sweep.numbers import differences, numbers_config, recorded_numbers
from sealab.sweep.outcome import FAILED, METRICS, RESUMED

log = logging.getLogger(__name__)

# Wraps hydra.sweep.subdir (conf/hydra/default.yaml): see job_dir.
JOB_DIR_RESOLVER = "sealab.job_dir"


def config_hash(cfg: DictConfig, own: bool = False) -> str:
    """A digest of the values that change a run's numbers (sweep.numbers.numbers_config): blind
    to where data, cache and outputs live and to every key declared as changing only where or
    how the run goes (logging, threads, launching, resuming, a local file's ``wandb:``).
    ``own``: ``cfg`` is the caller's copy, which the digest may change."""
    text = json.dumps(numbers_config(cfg, own), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _result(run_dir: Path) -> dict[str, Any] | None:
    """The record of the result ``run_dir`` holds: its metrics.json, unless a failed.json says the
    latest attempt there failed."""
    path = run_dir / METRICS
    if not path.is_file() or (run_dir / FAILED).exists():
        return None
    return json.loads(path.read_text())


def finished_results(sweep_dir: Path) -> dict[str, Path]:
    """``{config hash: metrics.json}`` of every result below ``sweep_dir``."""
    found = {}
    for path in sorted(sweep_dir.rglob(METRICS)):
        record = _result(path.parent)
        if record is not None and record.get("config_hash"):
            found.setdefault(record["config_hash"], path)
    return found


class FinishedJobs:
    """The sweep's own check (sealab's sweeper, hydra_plugins/sealab_sweeper) before it composes
    and launches its jobs: ``finished(overrides)`` is the metrics.json of the result a job of the
    sweep ``master`` would leave, when ``resume=true`` and the sweep holds it, else None. The
    job's config is composed as Hydra would (``JobConfigs``) and hashed as the job itself hashes
    it (config_hash), so a job is left out exactly when it would skip itself."""

    def __init__(self, master: DictConfig, config_loader: Any):
        self.results = finished_results(Path(str(master.hydra.sweep.dir)))
        self._configs = JobConfigs(master, config_loader) if self.results else None

    def finished(self, overrides: list[str]) -> Path | None:
        if self._configs is None:
            return None
        try:
            cfg = self._configs(overrides)
            return self.results.get(config_hash(cfg, own=True)) if cfg.get("resume") else None
        except Exception:  # launched as usual: Hydra composes it again and reports what is wrong
            return None


def finished_record(digest: str, sweep_dir: Path, run_dir: Path) -> dict[str, Any] | None:
    """The record of a finished job with config hash ``digest`` below ``sweep_dir`` (this job's
    own ``run_dir`` first), or None. Reusing another directory's result leaves resumed.json in
    ``run_dir`` pointing to it, so the summary counts that result once and this job as done."""
    for path in [run_dir / METRICS, *sorted(sweep_dir.rglob(METRICS))]:
        record = _result(path.parent)
        if record is not None and record.get("config_hash") == digest:
            if path.parent.resolve() != run_dir.resolve():
                atomic_write_json(run_dir / RESUMED, {"metrics": str(path)})
            return record
    return None


def _other_result(run_dir: Path, digest: str) -> dict[str, Any] | None:
    """The record of a result in ``run_dir`` made with another config than ``digest``'s."""
    record = _result(run_dir)
    return record if record is not None and record.get("config_hash") != digest else None


def job_dir(subdir: str, *, _root_: DictConfig) -> str:
    """``hydra.sweep.subdir``, named before Hydra writes anything into it: with ``resume=true``, a
    job whose usual directory holds the result of another config (an earlier sweep numbered its
    jobs differently) goes beside it, into ``<subdir>_<config hash>``, so both results stay."""
    if not _root_.get("resume"):
        return subdir
    digest = config_hash(_root_)
    sweep = Path(str(OmegaConf.select(_root_, "hydra.sweep.dir")))
    return f"{subdir}_{digest}" if _other_result(sweep / subdir, digest) else subdir


def register_job_dir_resolver() -> None:
    if not OmegaConf.has_resolver(JOB_DIR_RESOLVER):
        OmegaConf.register_new_resolver(JOB_DIR_RESOLVER, job_dir)


def _what_differs(record: dict[str, Any], cfg: DictConfig) -> str:
    changed = differences(recorded_numbers(record.get("config") or {}), numbers_config(cfg))
    return ", ".join(changed) or "no setting (it was hashed by another sealab version)"


def keep_other_results(cfg: DictConfig, digest: str, run_dir: Path) -> None:
    """Before a resumed job runs in ``run_dir``: say so when it was put beside another config's
    result (job_dir); refuse, without writing anything, when ``run_dir`` itself holds one (a run
    dir named on the command line, or a sweep subdir without job_dir). SystemExit, not an error:
    Hydra would record a failure in ``run_dir``, which hides the result kept there."""
    usual = run_dir.with_name(run_dir.name.removesuffix(f"_{digest}"))
    if usual != run_dir and (record := _other_result(usual, digest)) is not None:
        log.warning("resume=true: %s holds the result of another config (%s); it is kept, and this job "
                    "writes beside it, into %s", usual, _what_differs(record, cfg), run_dir.name)
    elif (record := _other_result(run_dir, digest)) is not None:
        raise SystemExit(f"resume=true: {run_dir} holds the result of another config ({_what_differs(record, cfg)}); "
                         "it is kept and nothing was run. Give this run its own folder: another "
                         "hydra.sweep.dir (or hydra.run.dir), or resume=false to replace that result")


def nothing_to_resume(hydra_overrides: list[str]) -> str | None:
    """Why ``resume=true`` cannot find earlier results, when the sweep folder is not given: the
    default one is named by the time, so it is always new."""
    if any(o.startswith("hydra.sweep.dir=") for o in hydra_overrides):
        return None
    return ("resume=true, but without hydra.sweep.dir=<the folder of the sweep to resume> this job writes into a "
            "new folder and nothing is resumed")
