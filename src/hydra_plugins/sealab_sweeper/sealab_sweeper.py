"""sealab's sweeper, the default (conf/hydra/sweeper/sealab.yaml): Hydra's basic sweeper, except
that with ``resume=true`` it leaves out the jobs whose result the sweep already holds before it
composes and launches the others. The basic sweeper composes every job twice (to validate the
batch, then to launch it; 0.1-0.2 s each on 2 cores) and starts it, only for the job to find
its result and stop. What counts as finished is sealab.sweep.resume's (``FinishedJobs``); this
module lives in the ``hydra_plugins`` namespace package because Hydra instantiates sweepers
from there only. It imports no sealab module until it sweeps: Hydra imports every plugin module
whenever it starts (--help, a single run)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

Job = Sequence[str]


def consecutive(jobs: list[tuple[int, Job]]) -> Iterator[tuple[int, list[Job]]]:
    """``(first job number, jobs)`` of each run of consecutive job numbers: a launcher numbers the
    jobs it is given from the first on, and a job keeps its number (its run dir's name)."""
    for _, run in itertools.groupby(enumerate(jobs), key=lambda item: item[1][0] - item[0]):
        numbered = [job for _, job in run]
        yield numbered[0][0], [job for _, job in numbered]


def launches(batch: list[tuple[int, Job]], todo: list[tuple[int, Job]],
             one_by_one: bool) -> list[tuple[int, list[Job]]]:
    """``(first job number, jobs)`` of each launch of a batch whose jobs ``todo`` are to run. A
    launcher that runs jobs one by one gets each run of consecutive ones; any other gets one
    launch from the first job to run to the last, the finished ones between included (they skip
    themselves in the job): its jobs run side by side, and a SLURM array waits for all of its
    jobs before the next launch."""
    if one_by_one or not todo:
        return list(consecutive(todo))
    first, last = todo[0][0], todo[-1][0]
    return [(first, [job for num, job in batch if first <= num <= last])]


def job_numbers(numbers: list[int]) -> str:
    """``#0-5, #7``."""
    runs = [[n for _, n in run] for _, run in itertools.groupby(enumerate(numbers), key=lambda i: i[1] - i[0])]
    return ", ".join(f"#{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else "") for run in runs)


class SealabSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from sealab.sweep.plan import MULTIRUN, record_resumed

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if not self.config.get("resume"):
            record_resumed(sweep_dir, [])  # this sweep's plan left nothing out
            return super().sweep(arguments)
        from sealab.sweep.resume import FinishedJobs

        # As BasicSweeper.sweep, with the finished jobs of each batch left out.
        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(self._parse_config() + list(arguments))
        self.overrides = self.split_arguments(parsed, self.max_batch_size)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN)
        finished, resumed, returns, first = FinishedJobs(self.config, loader), [], [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            todo, done = [], []
            for num, job in enumerate(batch, first):
                (done if finished.finished(list(job)) is not None else todo).append((num, job))
            resumed += [list(job) for _, job in done]
            record_resumed(sweep_dir, resumed)
            if done:
                log.info("resume=true: %d of %d jobs have their result in %s already (same settings), not run "
                         "again: %s", len(done), len(batch), sweep_dir, job_numbers([num for num, _ in done]))
            runs = launches(list(enumerate(batch, first)), todo, isinstance(self.launcher, BasicLauncher))
            self.validate_batch_is_legal([job for _, jobs in runs for job in jobs])
            results = [result for start, jobs in runs for result in self.launcher.launch(jobs, initial_job_idx=start)]
            for result in results:  # a failed job fails the sweep, once the whole batch ran
                _ = result.return_value
            returns.append(results)
            first += len(batch)
        return returns
