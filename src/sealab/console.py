"""What a job prints: one line per event (Lightning's lines once, library tips and known
deprecation warnings filtered at their source, a repeated warning once with its count), and a
sealab error a user can fix as its message alone (the traceback goes to the job's log file, and
to the console with HYDRA_FULL_ERROR=1).

Imported by the entry point before any job runs: nothing heavy here (no torch, no Lightning)."""

from __future__ import annotations

import linecache
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A sealab error with a message written for the user (a config rule, a missing dataset, a
    bad checkpoint): Hydra prints the message alone and exits with status 1. The error itself is
    its ``__cause__`` (what HYDRA_FULL_ERROR=1 prints, and what failed.json reports)."""


def written_for_the_user(err: BaseException) -> bool:
    """An error class of sealab's own, or one a ``raise`` statement of sealab code raised with
    its message. An error a library raised (even wrapped), or one a bug in sealab provoked (an
    AttributeError from an attribute access, an assert), keeps its traceback on the console."""
    from sealab.sweep.outcome import raised_by_sealab

    if type(err).__module__.split(".")[0] == "sealab":
        return True
    if not raised_by_sealab(err) or isinstance(err, (AssertionError, NotImplementedError)):
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).lstrip().startswith("raise ")


def as_user_error(err: BaseException, log_file: Path) -> UserError | None:
    """``err`` as the message Hydra prints alone (pointing at the traceback in ``log_file``), when
    the error a user should read (sweep.outcome.reported_error) was written for the user."""
    from sealab.sweep.outcome import reported_error

    error = reported_error(err)
    if isinstance(error, UserError) or not written_for_the_user(error):
        return None
    return UserError(f"{str(error).rstrip() or type(error).__name__}\n(the traceback is in {log_file})")


# Warnings of libraries that tell a sealab user nothing they can act on, each matched by its
# message and the module that issues it (so a new warning of the same library still shows):
# (message regex, module regex).
KNOWN_WARNINGS = (
    # conf/hydra/launcher/<name>.yaml carry sealab's settings for the launcher plugin of the same
    # name, whose schema Hydra then validates and completes them with (deprecated, still in 1.3).
    # Hydra issues it on behalf of a frame 11 levels up (stacklevel=11): any module.
    (r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema", ""),
    # Lightning's pytree helper calls a torch API that torch deprecated; nothing to do for a user.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
)
# Lightning's advertisement for its cloud logger, logged at every Trainer start.
LIGHTNING_TIPS = ("lightning.pytorch.utilities.rank_zero", "💡 Tip:")


def filter_known_warnings() -> None:
    for message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


@contextmanager
def quiet_fits() -> Iterator[None]:
    """Fits without Lightning's lines (devices, tips, "max_epochs reached") or the library
    warnings sealab-train filters: a grid search or a bench fits hundreds of times. The logger's
    level is restored after, so later runs in the process print as usual."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        filter_known_warnings()
        try:
            yield
        finally:
            lightning_log.setLevel(level)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIPS[1])


def quiet_lightning() -> None:
    """Lightning's lines once, through Hydra's logging (console and the job's log file), without
    its tips. ``import lightning`` gives the ``lightning`` logger a console handler of its own,
    which printed every line a second time beside Hydra's."""
    import lightning  # noqa: F401 - its import adds the handler removed here

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    tips = logging.getLogger(LIGHTNING_TIPS[0])
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())


class RepeatedWarnings(logging.Filter):
    """On a console handler: the first record of each warning (same logger, same message
    template) passes, the repeats are counted (the log file keeps them all)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], list] = {}  # key -> [first record, repeats]
        self.last: tuple[logging.LogRecord | None, bool] = (None, True)  # one record, several handlers

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "repeat_count", False):
            return True
        if record is self.last[0]:
            return self.last[1]
        key = (record.name, str(record.msg))
        first = key not in self.seen
        if first:
            self.seen[key] = [record, 0]
        else:
            self.seen[key][1] += 1
        self.last = (record, first)
        return first


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def job_console() -> Iterator[None]:
    """While a job runs: known warnings filtered, each repeated warning on the console once, and
    at the end one line per repeated warning with its count."""
    filter_known_warnings()
    repeats = RepeatedWarnings()
    handlers = _console_handlers()
    for handler in handlers:
        handler.addFilter(repeats)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(repeats)
        for (name, _), (first, count) in repeats.seen.items():
            if count:
                logging.getLogger(name).log(first.levelno, "%s [repeated %d more time(s) in this job; each is in "
                                            "the job's log file]", first.getMessage(), count,
                                            extra={"repeat_count": True})


# Choices that existed before, or that people guess, and what to write instead.
RENAMED_CHOICES = {
    ("trainer", "cpu"): "device=cpu (the device is a top-level setting; trainer.* holds Lightning's others)",
    ("trainer", "gpu"): "device=cuda (or cuda:N; the device is a top-level setting, devices=N runs N processes)",
}
# Choices whose configs or classes come from a Hydra plugin: the module it installs.
PLUGIN_CHOICES = {
    ("hydra/launcher", "joblib"): "hydra_plugins.hydra_joblib_launcher",
    ("hydra/launcher", "submitit_local"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "submitit_slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "ray"): "hydra_plugins.hydra_ray_launcher",
    ("hydra/sweeper", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
    ("hparams_search", "sea_optuna"): "hydra_plugins.hydra_optuna_sweeper",
}
INSTALL_PLUGINS = "pip install 'sealab[launchers]'"


def _choices(argv: list[str]) -> Iterator[tuple[str, str, str]]:
    """(group, choice, the argument) for each ``group=a,b`` override of the command line."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        group, _, values = arg.partition("=")
        for value in values.split(","):
            yield group.lstrip("+~"), value.strip(), arg


def command_line_problem(argv: list[str]) -> str | None:
    """What is wrong with a choice on the command line that Hydra would refuse without saying
    the fix: an old or guessed choice, a plugin that is not installed."""
    from importlib.util import find_spec

    for group, value, arg in _choices(argv):
        if (group, value) in RENAMED_CHOICES:
            return f"{arg}: there is no {group}={value}; use {RENAMED_CHOICES[group, value]}"
        module = PLUGIN_CHOICES.get((group, value))
        if module and find_spec(module) is None:
            return f"{arg} needs a Hydra plugin that is not installed ({module}): {INSTALL_PLUGINS}"
    return None
