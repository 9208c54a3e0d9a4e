"""Hydra callback: after a multirun, print and store the one results table."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: Hydra instantiates this callback before every run and sweep, and
        # the summary pulls in pandas, which only the end of a multirun needs.
        from sealab.sweep.summary import summarize

        root = config.hydra.sweep.dir
        try:
            _, markdown = summarize(root)
        except FileNotFoundError as err:  # every job failed: nothing to summarise
            log.warning("%s", err)
            return
        print(f"\nResults of the sweep (primary test metric, %), also in {root}/summary.md:\n{markdown}")
