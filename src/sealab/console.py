"""What a job prints: a sealab error a user can fix as its message alone (the traceback goes to
the job's log file, and to the console with HYDRA_FULL_ERROR=1).

Imported by the entry point before any job runs: nothing heavy here (no torch, no Lightning)."""

from __future__ import annotations

import linecache
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
