"""Collect the records of one or more sweeps into one table (CSV + Markdown), failed and
unfinished jobs included.

``sealab-summary multirun/2026-11-25/12-00-00-000000 [DIR ...]`` (or any folders above run dirs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

import pandas as pd
from omegaconf import OmegaConf

from sealab.fileio import atomic_write_bytes
from sealab.sweep.outcome import FAILED, METRICS, RESUMED, job_identity
from sealab.sweep.overrides import override_value, variant

KEYS = ["dataset", "backbone", "method", "seed"]
Roots = Iterable[str | Path]


def _row(record: dict, path: Path, variant_overrides: list[str], metrics: dict[str, float]) -> dict:
    row = {k: record[k] for k in KEYS}
    row["overrides"] = variant_overrides
    row["variant"] = variant(variant_overrides)
    row.update(metrics)
    val_metric = record["primary_metric"].replace("test/", "val/", 1)
    row.update(primary_metric=record["primary_metric"], primary=metrics.get(record["primary_metric"]),
               val_primary=metrics.get(val_metric, float("nan")), fit_seconds=record["fit_seconds"],
               run_dir=str(path.parent))
    return row


def _records(roots: Roots, name: str) -> list[Path]:
    return sorted(path for root in roots for path in Path(root).rglob(name))


def collect(*roots: str | Path) -> pd.DataFrame:
    """One row per finished run, or per head of a run's grid (a variant like any other, labelled
    with the override that would train it alone): its identifying keys, every metric, timings
    and primary metric. A run whose latest attempt failed is left to ``failures``."""
    rows = []
    for path in _records(roots, METRICS):
        if (path.parent / FAILED).exists():
            continue
        record = json.loads(path.read_text())
        overrides = record.get("overrides", [])
        if not record.get("grid"):
            rows.append(_row(record, path, overrides, record["metrics"]))
        for head in record.get("grid", []):
            values = [f"method.{key}={value}" for key, value in head["values"].items()]
            rows.append(_row(record, path, overrides + values, head["metrics"]))
    if not rows:
        raise FileNotFoundError(f"no metrics.json below {', '.join(map(str, roots))}: "
                                "is this a sealab run or sweep folder?")
    return pd.DataFrame(rows)


def failures(*roots: str | Path) -> pd.DataFrame:
    """One row per job that left no result: failed (failed.json: its error's last line) or
    unfinished (Hydra started it, nothing else: still running, or killed)."""
    rows = []
    for path in _records(roots, FAILED):
        rows.append({**json.loads(path.read_text()), "status": "failed", "run_dir": str(path.parent)})
    for hydra_dir in _records(roots, ".hydra"):
        run_dir, files = hydra_dir.parent, [hydra_dir / "config.yaml", hydra_dir / "hydra.yaml"]
        done = any((run_dir / name).exists() for name in (METRICS, FAILED, RESUMED))
        if not done and all(f.is_file() for f in files):  # (killed while Hydra wrote them: nothing to say)
            config = OmegaConf.merge(*map(OmegaConf.load, files))
            rows.append({**job_identity(config), "error": "no result: still running, or killed",
                         "status": "unfinished", "run_dir": str(run_dir)})
    columns = [*KEYS, "overrides", "status", "error", "run_dir"]
    return pd.DataFrame(rows, columns=columns).assign(variant=lambda f: [variant(o) for o in f["overrides"]])


def results_table(runs: pd.DataFrame, columns_by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows: methods with what else they changed. Columns: dataset/backbone, plus the values of
    the override keys in ``columns_by`` (e.g. ``norm``). Cells: primary test metric in %,
    mean +- std over seeds."""
    runs = runs.copy()
    extras = [variant(o, columns_by) for o in runs["overrides"]]
    runs["row"] = [f"{m} ({e})" if e else m for m, e in zip(runs["method"], extras)]
    runs["column"] = runs["dataset"] + "/" + runs["backbone"]
    for key in columns_by:
        runs["column"] += [f" {key}={v}" if v is not None else "" for v in
                           (override_value(o, key) for o in runs["overrides"])]
    grouped = runs.groupby(["row", "column"])["primary"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()

    def cell(row: pd.Series) -> str:
        text = f"{100 * row['mean']:.2f}"
        if row["count"] > 1:
            text += f" ± {100 * row['std']:.2f}"
        return text

    stats["cell"] = stats.apply(cell, axis=1)
    table = stats.pivot(index="row", columns="column", values="cell")
    table.index.name = "method"
    table.columns.name = None
    return table


def select_on_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and dataset/backbone, the variant with the best mean validation score
    (e.g. SeA's eta), reported by its mean test score: test data never picks the variant."""
    means = runs.groupby(["method", "variant", "dataset", "backbone"])[["val_primary", "primary"]].mean()
    means = means.reset_index()
    best = means.loc[means.groupby(["method", "dataset", "backbone"])["val_primary"].idxmax()]
    best = best.assign(column=best["dataset"] + "/" + best["backbone"],
                       cell=[f"{100 * t:.2f}" + (f" ({v})" if v else "")
                             for t, v in zip(best["primary"], best["variant"])])
    table = best.pivot(index="method", columns="column", values="cell")
    table.columns.name = None
    return table


def to_markdown(table: pd.DataFrame) -> str:
    header = ["method", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in table.iterrows():
        lines.append("| " + " | ".join([str(method), *(str(v) if pd.notna(v) else "" for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def failures_markdown(failed: pd.DataFrame) -> str:
    lines = ["| run | overrides | error |", "|---|---|---|"]
    for row in failed.itertuples():
        lines.append(f"| {Path(row.run_dir).name} | {' '.join(row.overrides)} | {row.error.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def summarize(roots: str | Path | Roots, out: str | Path | None = None, select: bool = False,
              columns_by: tuple[str, ...] = ()) -> tuple[pd.DataFrame, str]:
    """Write ``runs.csv`` (every row, failures with their error) and ``summary.md`` into ``out``
    (default: the one root); return the table and its Markdown.

    ``select``: one row per method, its variant chosen on validation (see select_on_validation);
    otherwise ``columns_by`` override keys become columns (see results_table).
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    out = Path(out) if out is not None else roots[0]
    failed = failures(*roots)
    try:
        runs = collect(*roots).assign(status="ok")
    except FileNotFoundError:
        if failed.empty:
            raise
        runs = pd.DataFrame(columns=[*KEYS, "overrides", "variant", "status"])
    table = pd.DataFrame()
    if len(runs):
        table = select_on_validation(runs) if select else results_table(runs, columns_by)
    markdown = to_markdown(table) if len(runs) else "No job finished.\n"
    if len(failed):
        markdown += f"\n{len(failed)} job(s) without a result:\n\n" + failures_markdown(failed)
    out.mkdir(parents=True, exist_ok=True)
    every_row = pd.concat([frame for frame in (runs, failed) if len(frame)], ignore_index=True)
    atomic_write_bytes(out / "runs.csv", lambda p: every_row.to_csv(p, index=False))
    atomic_write_bytes(out / "summary.md", lambda p: p.write_text(markdown))
    return table, markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", metavar="DIR",
                        help="sweep folders (or any folders above sealab run dirs), merged into one table")
    parser.add_argument("--out", metavar="DIR",
                        help="where runs.csv and summary.md go (default: the one DIR; required with several)")
    parser.add_argument("--select", action="store_true",
                        help="one row per method: the variant with the best validation score")
    parser.add_argument("--columns-by", nargs="+", default=(), metavar="KEY",
                        help="override keys whose values become columns, e.g. norm")
    args = parser.parse_args(argv)
    if len(args.roots) > 1 and args.out is None:
        parser.error("several DIRs are merged into one table: name its folder with --out DIR")
    out = Path(args.out or args.roots[0])
    _, markdown = summarize(args.roots, out, select=args.select, columns_by=tuple(args.columns_by))
    print(f"\nResults (primary test metric, %), also in {out / 'summary.md'}; every row in {out / 'runs.csv'}:")
    print(markdown, end="")


if __name__ == "__main__":
    main()
