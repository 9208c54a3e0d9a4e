"""What a job leaves in its run directory besides metrics.json, so that a summary can account
for every job of a sweep: failed.json when it raised or was interrupted (and the whole traceback
in the job's log file), resumed.json when ``resume=true`` reused the result of an identical job
in another directory of the sweep."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sealab.console import UserError
from sealab.fileio import atomic_write_json

METRICS, FAILED, RESUMED = "metrics.json", "failed.json", "resumed.json"

log = logging.getLogger(__name__)


def raised_by_sealab(err: BaseException) -> bool:
    """A sealab error class, or raised by sealab code (the frame that raised it is sealab's)."""
    if type(err).__module__.split(".")[0] == "sealab":
        return True
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == "sealab"


def reported_error(err: BaseException) -> BaseException:
    """The error a user should read: the outermost of ``err`` and its causes that sealab raised
    (it names the key or file at fault and the fix; what it wraps is the library's view, e.g.
    torchvision's "Dataset not found or corrupted. You can use download=True"). Without one, the
    first that is not Hydra's instantiate wrapper (which adds only ``full_key: ...``). The
    console's ``UserError`` only carries the error it wraps."""
    chain = [err]
    while chain[-1].__cause__ is not None and chain[-1].__cause__ not in chain:
        chain.append(chain[-1].__cause__)
    for candidate in chain:
        if raised_by_sealab(candidate) and not isinstance(candidate, UserError):
            return candidate
    return next((e for e in chain if not isinstance(e, InstantiationException)), chain[-1])


def error_line(err: BaseException) -> str:
    """``Type: message`` of the reported error, its lines joined into one (a table cell)."""
    error = reported_error(err)
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def job_identity(config: DictConfig, hydra: DictConfig | None = None) -> dict[str, Any]:
    """Dataset, backbone and method as chosen, seed and overrides, from a job's config and its
    ``hydra`` node (by default the config's own, as Hydra hands a callback, or .hydra/config.yaml
    merged with hydra.yaml). Precomputed features name their backbone (dataset.backbone)."""
    hydra = config.hydra if hydra is None else hydra
    choices = hydra.runtime.choices
    identity = {group: choices.get(group) for group in ("dataset", "backbone", "method")}
    identity["backbone"] = OmegaConf.select(config, "dataset.backbone", default=None) or identity["backbone"]
    return {**identity, "seed": config.get("seed"), "overrides": list(hydra.overrides.task)}


def log_traceback(err: BaseException, log_file: Path, status: str = "failed") -> None:
    """The whole traceback into the job's log: the file handlers of the root logger (Hydra's
    ``<run dir>/<job name>.log``), else ``log_file``. The console keeps Hydra's shorter report."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "job %s:", (status,),
                            (type(err), err, err.__traceback__))
    for handler in files:
        handler.handle(record)
    if not files:
        with Path(log_file).open("a") as f:
            f.write("".join(traceback.format_exception(err)))


def record_failure(run_dir: Path, err: BaseException, config: DictConfig, hydra: DictConfig | None = None,
                   status: str = "failed") -> None:
    """failed.json with the job's identity, ``status`` and the error a user should read; the
    traceback in the job's log. A failure to write (a full disk) is logged, not raised over ``err``."""
    hydra = config.hydra if hydra is None else hydra
    error = error_line(err)
    if not (isinstance(err, UserError) and hydra.get("mode") == RunMode.RUN):  # Hydra prints that one last
        log.error("%s: %s", status, error)
    try:
        log_traceback(err, Path(run_dir) / f"{hydra.job.name}.log", status)
        atomic_write_json(Path(run_dir) / FAILED, {**job_identity(config, hydra), "status": status, "error": error})
    except OSError as write_error:
        log.error("could not record the failure in %s: %s", run_dir, write_error)
