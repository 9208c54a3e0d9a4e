"""SIGTERM (how SLURM and other schedulers pre-empt or cancel a job) and SIGINT (Ctrl-C) stop a
job with ``JobInterrupted``, so that it leaves failed.json and a non-zero exit status.

Without this, Lightning turns SIGTERM into a ``SystemExit`` with status 0 (no metrics.json, no
failed.json: a pre-empted job looked like a success) and SIGINT into ``sys.exit(1)``, and
outside training SIGTERM killed the process before anything was written.
``JobInterrupted`` is a ``SystemExit`` (status 128 + signal number, as a shell reports a job
killed by that signal): Hydra passes it on instead of starting the sweep's next job, the exit
hooks still write the sweep's summary, and Python prints no second traceback."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT)
WHY = {signal.SIGTERM: "a scheduler such as SLURM pre-empting or cancelling the job, or kill",
       signal.SIGINT: "Ctrl-C"}


class JobInterrupted(SystemExit):
    def __init__(self, signum: int, what_next: str):
        super().__init__(128 + signum)
        self.signum = signum
        self.message = f"interrupted by {signal.Signals(signum).name} ({WHY[signum]}). {what_next}"

    def __str__(self) -> str:
        return self.message


@contextmanager
def stop_on_signals(what_next: Callable[[], str]) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise ``JobInterrupted`` (its message ends with
    ``what_next()``: how to finish the job) in the main thread. A second signal meets the
    handlers that were there before (Ctrl-C twice stops as it always did)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    own_pid = os.getpid()
    # (None: a handler set outside Python, which cannot be put back; the default then)
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def stop(signum: int, frame: object) -> None:
        restore()
        if os.getpid() != own_pid:  # a forked child (a data loader worker): as before sealab
            signal.raise_signal(signum)
            return
        raise JobInterrupted(signum, what_next())

    for signum in SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        restore()


def how_to_finish(run_dir: Path, sweep_dir: Path | None) -> str:
    """What to start to finish an interrupted job: in a sweep, the same command into the same
    sweep folder with resume=true (finished jobs are skipped); a single run, the same command in
    its run dir. Fine-tuning continues from the run dir's last checkpoint when it saved one."""
    from sealab.methods.image_training import CHECKPOINT_DIR  # imported by then: the job is running

    checkpoint = Path(run_dir) / CHECKPOINT_DIR / "last.ckpt"
    saved = checkpoint.is_file()
    if sweep_dir is not None:
        start = f"start the same command again with hydra.sweep.dir={sweep_dir} resume=true"
        then = ": the finished jobs are skipped" + (
            f" and this one continues from its last checkpoint ({checkpoint})" if saved else "")
    else:
        start = f"start the same command again with hydra.run.dir={run_dir}"
        then = (f": it continues from the last checkpoint there ({checkpoint})" if saved
                else ": it runs again from the start")
    return f"To finish it, {start}{then}."
