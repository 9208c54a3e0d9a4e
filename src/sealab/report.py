"""Run output: metrics.json in the run directory and a short console table."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sealab.fileio import atomic_write_json


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_metrics(run_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(run_dir) / "metrics.json"
    atomic_write_json(path, record)
    return path


def gains_over_control(record: dict[str, Any]) -> dict[str, float]:
    """``{"val/top1": points, ...}``: the method's primary metric minus its control head's, in points,
    on validation and test (only where both were measured; empty without a control)."""
    control, metric = record.get("control") or {}, record["primary_metric"].split("/", 1)[1]
    keys = (f"{split}/{metric}" for split in ("val", "test"))
    return {key: 100 * (record["metrics"][key] - control[key]) for key in keys
            if key in control and key in record["metrics"]}


def result_line(record: dict[str, Any], variant: list[str] = ()) -> str:
    """A sweep job's one line: what ran (``variant``: the job's own values of what else its sweep
    varies, e.g. ``method.augmenter.eta=0.8``; a grid's selected values), its primary test metric
    and its gain over its control."""
    primary = record["primary_metric"]
    what = [*variant, *(f"{key}={value}" for key, value in record.get("selected", {}).items())]
    gains = ", ".join(f"{key.split('/')[0]} {gain:+.2f} pt" for key, gain in gains_over_control(record).items())
    return (f"{record['dataset']} / {record['backbone']} / {record['method']}"
            + (f" ({', '.join(what)})" if what else "") + f" seed {record['seed']}: "
            f"{primary} {100 * record['metrics'][primary]:.2f}%" + (f" (gain over control: {gains})" if gains else ""))


def print_metrics(record: dict[str, Any], one_line: bool = False, variant: list[str] = ()) -> None:
    """The run's metrics as a table, or (``one_line``: a job of a sweep) as ``result_line``."""
    if one_line:
        print(result_line(record, variant))  # never wrapped: one job, one line, whatever the terminal's width
        return
    table = Table(title=f"{record['dataset']} / {record['backbone']} / {record['method']} "
                        f"(seed {record['seed']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        mark = " *" if key == record["primary_metric"] else ""
        table.add_row(key + mark, f"{100 * value:.2f}%")
    for key, gain in gains_over_control(record).items():
        table.add_row(f"{key} gain over control ({100 * record['control'][key]:.2f}%)", f"{gain:+.2f} pt")
    table.add_row("fit seconds", f"{record['fit_seconds']:.2f}")
    table.add_row("extract seconds" + (" (cache hit)" if record["cache_hit"] else ""),
                  f"{record['extract_seconds']:.2f}")
    Console().print(table)
