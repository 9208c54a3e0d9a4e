"""Whole ``sealab-train`` commands timed end to end: a grid of SeA steps in one run against one
run per step, as a user would choose between them (start-up, data, fit and evaluation included)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from sealab.bench.measure import GRID_ETAS, Setup, eta_grid


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sealab.train", "experiment=quickstart", "~logger",
                    "trainer.enable_progress_bar=false", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def command_seconds(setup: Setup, epochs: int | None = None) -> dict[str, float]:
    """Wall seconds of ``setup.grid_size`` eta values as one grid run, and as separate runs, on
    the quickstart data with its features already cached (both sides hit the cache)."""
    with tempfile.TemporaryDirectory(prefix="sealab-bench-") as root:
        env = {**os.environ, "SEALAB_ROOT": root}
        extra = [] if epochs is None else [f"method.epochs={epochs}"]
        _run(["method=linear", "method.epochs=1"], env)  # extract and cache the features once
        grid = _run([eta_grid(setup.grid_size), *extra], env)
        separate = sum(_run([f"method.augmenter.eta={eta}", *extra], env) for eta in GRID_ETAS[:setup.grid_size])
    return {"grid_command": grid, "separate_commands": separate}
