"""Hydra callback: every job leaves a record (metrics.json, or failed.json with its error), and
every multirun ends with the results table, whatever failed, or, when no job could be composed,
with which keys which jobs lack. With ``logger=wandb`` the sweep also ends with its report
(sweep.report: report.md, .tex, .csv and figures), whose numbers and figures go to wandb."""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sealab.loggers import is_wandb, log_sweep_table
from sealab.sweep.composition import composition_report
from sealab.sweep.outcome import FAILED, record_failure
from sealab.sweep.plan import planned_jobs, started_jobs

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def __init__(self) -> None:
        self._sweep_dir: str | None = None  # set while a multirun's summary is still to be written
        self._logger_cfg: DictConfig | None = None  # wandb also gets the summary table
        self._master: DictConfig | None = None  # the sweep's config (as in its multirun.yaml)
        self._loader: Any = None  # Hydra's config loader (GlobalHydra is cleared before the exit hooks)
        self._pid: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra's basic sweeper re-raises a failed job's error after the batch and never calls
        # on_multirun_end; the exit hook then writes the summary (the exit status stays non-zero).
        self._sweep_dir = str(config.hydra.sweep.dir)
        self._logger_cfg = config.get("logger")
        self._master = config
        self._loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
        self._pid = os.getpid()  # the sweep's own process (jobs may run in others)
        atexit.register(self._summarize)
        # Imported now: at exit, pandas' first import fails (it starts a thread pool), as it
        # does when the jobs ran in other processes (joblib, submitit, ray).
        import sealab.sweep.summary  # noqa: F401

        if is_wandb(self._logger_cfg):  # (scipy and matplotlib: only where the report is written)
            import sealab.sweep.figures  # noqa: F401

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._summarize()
        atexit.unregister(self._summarize)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            # The error itself (the public return_value re-raises it and prints a second report).
            record_failure(run_dir, job_return._return_value, config)
        else:  # a re-run (resume=true) that succeeded: the earlier failure is history
            (run_dir / FAILED).unlink(missing_ok=True)
        if self._sweep_dir is not None and os.getpid() == self._pid:
            # Registered again after each in-process job, so the exit hook runs before those the
            # job's libraries registered (wandb's closes the service the sweep's table needs).
            atexit.unregister(self._summarize)
            atexit.register(self._summarize)

    def _summarize(self) -> None:
        if self._sweep_dir is None:
            return
        root, self._sweep_dir = self._sweep_dir, None
        report = self._why_no_job_started(root)
        if report is not None:  # not a table of jobs that were never meant to run alone
            log.error(report)
            return
        # Imported in a multirun only: Hydra instantiates this callback before every run and
        # sweep, and the summary pulls in pandas.
        from sealab.sweep.summary import main

        try:
            main([root])
        except FileNotFoundError as err:  # no job got as far as leaving a record
            log.warning("%s", err)
            return
        if is_wandb(self._logger_cfg):
            self._report(root)
        log_sweep_table(self._logger_cfg, root)

    @staticmethod
    def _report(root: str) -> None:
        """The sweep's report, for wandb (and beside summary.md); its failure fails no sweep."""
        from sealab.sweep.report import describe, write_report
        from sealab.sweep.summary import collect

        try:
            print("\n" + describe(*write_report(collect(root), root)))
        except Exception:  # an extra view of summary.md's runs: the traceback says what went wrong
            log.exception("the sweep's report was not written (summary.md has the results); "
                          "`sealab-summary %s --report` tries again", root)

    def _why_no_job_started(self, root: str) -> str | None:
        """When none of the sweep's jobs has a run dir: the jobs that cannot be composed (Hydra's
        basic sweeper composes them all before it launches any) and how to run the others."""
        if self._master is None or self._loader is None:
            return None
        jobs = planned_jobs(self._master, self._loader)
        if not jobs or started_jobs(root) & {tuple(job) for job in jobs}:
            return None
        return composition_report(self._master, self._loader)
