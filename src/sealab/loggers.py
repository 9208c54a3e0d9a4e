"""The run's Lightning logger. With wandb: one run per job, grouped by its sweep, named by what
varies in that sweep, tagged with dataset/backbone/method; offline, after one warning, when wandb
cannot go online (no API key, or no answer from the server within ``settings.init_timeout``)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sealab.checks import COMPONENTS
from sealab.job import choice, sweep_dir, task_overrides, varying_keys
from sealab.settings import changes_numbers

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)
T = TypeVar("T")

# WANDB_MODE values that keep wandb off the network by themselves.
OFFLINE_MODES = ("offline", "dryrun", "disabled")

# Why wandb could not go online in this process, once known: later runs here (jobs of the same
# sweep) go offline at once instead of waiting for the server and warning again.
_offline_reason: str | None = None


def is_wandb(logger_cfg: DictConfig | None) -> bool:
    # By name: the sweep callback asks too, and must not import Lightning (and torch) for it.
    return bool(logger_cfg) and str(logger_cfg.get("_target_")).rsplit(".", 1)[-1] == "WandbLogger"


def run_name(cfg: DictConfig) -> str:
    """``dataset/backbone/method`` and the overrides that vary in the sweep (a single run: all of
    its overrides) and change the numbers (their declared role, ``sealab.settings``: seeds
    included, where and how the run goes left out), e.g. ``digits/random_features/sea seed=1``:
    unique within a sweep."""
    keys = varying_keys()
    named = [o.input_line for o in OverridesParser.create().parse_overrides(task_overrides())
             if o.key_or_group not in COMPONENTS and changes_numbers(o.key_or_group)
             and (keys is None or o.key_or_group in keys)]
    return " ".join(["/".join(choice(group, cfg) for group in COMPONENTS), *named])


def run_group(logger_cfg: DictConfig, sweep: Path | None) -> str | None:
    """``logger.group`` when set, else the sweep directory's name; a single run has no group."""
    return logger_cfg.get("group") or (sweep.name if sweep else None)


def _start_wandb(start: Callable[[bool], T], offline: bool) -> T:
    """``start(offline)``: online unless configured offline, offline after one warning when wandb
    has no API key or its server does not answer in time. ``start(True)`` must pass wandb.init
    ``mode="offline"``: after a first init, wandb no longer reads WANDB_MODE."""
    global _offline_reason
    if os.environ.get("WANDB_MODE") in OFFLINE_MODES:
        return start(False)  # the user's WANDB_MODE, which wandb reads itself
    if offline or _offline_reason:
        return start(True)
    import wandb

    if not wandb.login(prompt=False, verify=False):  # never prompts: a sweep job has nobody to answer
        _offline_reason = "has no API key (run `wandb login` or set WANDB_API_KEY)"
    else:
        try:
            return start(False)
        except (wandb.Error, TimeoutError) as err:
            _offline_reason = f"could not start a run online ({str(err).splitlines()[0]})"
    log.warning("wandb %s: logging offline instead (upload later with `wandb sync <run dir>`)", _offline_reason)
    return start(True)


def _make_logger(cfg: DictConfig) -> Logger:
    if not is_wandb(cfg.logger):
        return instantiate(cfg.logger)
    identity = {"name": cfg.logger.get("name") or run_name(cfg),
                "group": run_group(cfg.logger, sweep_dir()),
                "tags": [choice(group, cfg) for group in COMPONENTS] + list(cfg.logger.get("tags") or [])}

    def start(offline: bool) -> WandbLogger:
        # Lightning's own offline=true would set WANDB_MODE for the whole process (and later
        # runs would take it for the user's); the mode goes to wandb.init instead.
        logger = instantiate(cfg.logger, offline=False, mode="offline" if offline else None, _convert_="all",
                             **identity)
        # Lightning hands wandb anonymous=None, which wandb takes as set and warns has no effect.
        logger._wandb_init.pop("anonymous", None)
        logger.experiment  # wandb.init, which raises here when it cannot go online
        return logger

    return _start_wandb(start, cfg.logger.offline)


@contextmanager
def run_logger(cfg: DictConfig) -> Iterator[Logger | None]:
    """The configured Lightning logger (None with ``~logger``), closed whatever is raised."""
    logger = _make_logger(cfg) if cfg.get("logger") else None
    succeeded = False
    try:
        if logger:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        yield logger
        succeeded = True
    finally:
        if logger:
            logger.finalize("success" if succeeded else "failed")
            finish = getattr(logger.experiment, "finish", None)  # a wandb run ends here, not at exit
            if finish:
                finish(exit_code=0 if succeeded else 1)


def log_results(logger: Logger, metrics: dict[str, float], summary: dict[str, Any]) -> None:
    """The run's metrics; with wandb also ``summary`` (timings, cache hit, the primary metric's
    name) and the primary metric's value as ``primary`` in the run summary."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import WandbLogger

    logger.log_metrics(metrics)
    if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:  # other ranks hold a stand-in run
        logger.experiment.summary.update({**summary, "primary": metrics.get(summary["primary_metric"])})


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The header and rows of each Markdown table in ``text`` (``| a | b |`` lines, the second the
    ``|---|`` separator)."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def report_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """report.csv's columns and rows, numbers as numbers (empty cells None): a wandb table that
    sorts and plots."""
    import pandas as pd

    frame = pd.read_csv(path)
    return list(frame.columns), frame.astype(object).where(frame.notna(), None).values.tolist()


def log_sweep_table(logger_cfg: DictConfig | None, sweep: str | Path) -> None:
    """With wandb, the tables of the sweep's summary.md as wandb Tables (``summary``, then
    ``summary_2`` for the failed jobs, if any), in a run named ``summary`` (``job_type``
    summary) of the sweep's group: the dashboard shows the table summary.md does. Where the
    sweep has a report (sweep.report), also its numbers as the Table ``report`` (one row per
    backbone, dataset and method, numeric cells) and its figures as Images ``figure/<backbone>``."""
    sweep = Path(sweep)
    path = sweep / "summary.md"
    if not is_wandb(logger_cfg) or not path.is_file():
        return
    import wandb

    def start(offline: bool) -> Any:
        return wandb.init(project=logger_cfg.get("project"), entity=logger_cfg.get("entity"),
                          group=run_group(logger_cfg, sweep), name="summary", job_type="summary",
                          dir=os.environ.get("WANDB_DIR", str(sweep)), mode="offline" if offline else None,
                          settings=dict(logger_cfg.get("settings") or {}))

    try:
        run = _start_wandb(start, logger_cfg.offline)
        tables = {"summary" if i == 0 else f"summary_{i + 1}": wandb.Table(columns=header, data=rows)
                  for i, (header, rows) in enumerate(markdown_tables(path.read_text()))}
        if (sweep / "report.csv").is_file():
            columns, rows = report_table(sweep / "report.csv")
            tables["report"] = wandb.Table(columns=columns, data=rows)
        figures = {f"figure/{png.stem.removeprefix('figure-')}": wandb.Image(str(png))
                   for png in sorted(sweep.glob("figure-*.png"))}
        run.log({**tables, **figures})
        run.finish()
    except Exception as err:  # an extra copy of summary.md: its failure must not fail the sweep
        log.warning("the sweep's table was not logged to wandb (%s); %s has it", err, path)
