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


def print_metrics(record: dict[str, Any]) -> None:
    table = Table(title=f"{record['dataset']} / {record['backbone']} / {record['method']} "
                        f"(seed {record['seed']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        mark = " *" if key == record["primary_metric"] else ""
        table.add_row(key + mark, f"{100 * value:.2f}%")
    table.add_row("fit seconds", f"{record['fit_seconds']:.2f}")
    table.add_row("extract seconds" + (" (cache hit)" if record["cache_hit"] else ""),
                  f"{record['extract_seconds']:.2f}")
    Console().print(table)
