"""The fixed cost of a job: whole ``sealab-train`` processes running a tiny job whose features are
already cached, timed from start to exit (interpreter, imports, Hydra, data, fit, results and the
interpreter's end), and beside them, timed the same way, the floors sealab cannot go below:
``python -c "import torch"``, ``python -c "import lightning"`` (Lightning imports torchmetrics,
which imports torchvision.models, scipy.signal and matplotlib), the same ending as a job ends
(without the final garbage collections), and Hydra composing the job's config alone
(``sealab-train --cfg job``). One more run of the job under ``python -X importtime``
says where its import time goes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

# The quickstart's 819 training rows (features cached), one epoch, nothing logged.
TINY_JOB = ("experiment=quickstart", "method=linear", "method.epochs=1", "~logger",
            "trainer.enable_progress_bar=false")
TRAIN = ("-m", "sealab.train")
# CPython's final garbage collections take seconds after these imports; a job skips them
# (sealab.train), so the floor a job can reach is import_lightning_frozen_exit.
FLOORS = {
    "import_torch": ("-c", "import torch"),
    "import_lightning": ("-c", "import lightning"),
    "import_lightning_frozen_exit": ("-c", "import atexit, gc, lightning; atexit.register(gc.freeze)"),
    "hydra_compose": (*TRAIN, "--cfg", "job", *TINY_JOB),
}


def _run(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, text=True)


def _seconds(args: tuple[str, ...], env: dict[str, str]) -> float:
    start = time.perf_counter()
    _run(args, env)
    return time.perf_counter() - start


def spread(seconds: list[float]) -> dict:
    """The median of ``seconds`` (what a target is held to), its range and every value."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "runs": list(seconds)}


def import_seconds(importtime_log: str, top: int = 12) -> dict:
    """Seconds spent importing, from ``python -X importtime``'s stderr: ``total`` and the ``top``
    top-level packages by the time their own modules took (each module's self time summed over
    its package, so a package is not charged for what it imports from others)."""
    per_package: dict[str, float] = defaultdict(float)
    for line in importtime_log.splitlines():
        if not line.startswith("import time:"):
            continue
        own, _cumulative, module = line.removeprefix("import time:").split("|")
        if own.strip().isdigit():  # (not the header line)
            per_package[module.strip().split(".")[0]] += int(own) / 1e6
    largest = sorted(per_package.items(), key=lambda item: -item[1])[:top]
    return {"total": sum(per_package.values()), "by_package": dict(largest)}


def measure_startup(repeats: int = 5) -> dict:
    """Wall seconds of ``repeats`` whole processes of the cached tiny job and of each floor,
    interleaved so that a change in the machine's load touches each alike, in a temporary
    SEALAB_ROOT whose features a first, untimed run extracts."""
    with tempfile.TemporaryDirectory(prefix="sealab-startup-") as root:
        env = {**os.environ, "SEALAB_ROOT": root}
        _run((*TRAIN, *TINY_JOB), env)
        load_before = os.getloadavg()[0]
        job, floors = [], {name: [] for name in FLOORS}
        for _ in range(repeats):
            job.append(_seconds((*TRAIN, *TINY_JOB), env))
            for name, args in FLOORS.items():
                floors[name].append(_seconds(args, env))
        load_after = os.getloadavg()[0]
        imports = import_seconds(_run(("-X", "importtime", *TRAIN, *TINY_JOB), env).stderr)
    return {"command": " ".join(("sealab-train", *TINY_JOB)), "repeats": repeats,
            "cached_tiny_job": spread(job), "floors": {name: spread(s) for name, s in floors.items()},
            "job_imports": imports, "load_average_1min": [load_before, load_after]}
