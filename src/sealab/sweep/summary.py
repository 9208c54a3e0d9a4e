"""Collect the metrics.json files of a sweep into one table (CSV + Markdown).

``sealab-summary multirun/2026-11-25/12-00-00-000000`` (or any folder above run dirs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sealab.fileio import atomic_write_bytes

KEYS = ["dataset", "backbone", "method", "seed"]
# Overrides that name a table cell already, or do not change results.
NOT_A_VARIANT = ("dataset=", "backbone=", "method=", "seed=", "trainer.enable_progress_bar=", "method.grid=",
                 "experiment=", "hparams_search=", "num_threads=", "debug=",
                 "logger=", "paths.", "hydra.", "extract.")


def variant(overrides: list[str], exclude: tuple[str, ...] = ()) -> str:
    """What else the run changed (e.g. ``method.augmenter.eta=0.3``): part of its row label.
    Overrides of the keys in ``exclude`` are left out (they label columns instead)."""
    skip = NOT_A_VARIANT + tuple(f"{key}=" for key in exclude)
    return ", ".join(o for o in overrides if not o.lstrip("+~").startswith(skip))


def override_value(overrides: list[str], key: str) -> str | None:
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


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


def collect(root: str | Path) -> pd.DataFrame:
    """One row per run, or per head of a run's grid (a variant like any other, labelled with the
    override that would train it alone): its identifying keys, every metric, timings and
    primary metric."""
    rows = []
    for path in sorted(Path(root).rglob("metrics.json")):
        record = json.loads(path.read_text())
        overrides = record.get("overrides", [])
        if not record.get("grid"):
            rows.append(_row(record, path, overrides, record["metrics"]))
        for head in record.get("grid", []):
            values = [f"method.{key}={value}" for key, value in head["values"].items()]
            rows.append(_row(record, path, overrides + values, head["metrics"]))
    if not rows:
        raise FileNotFoundError(f"no metrics.json below {root}: is this a sealab run or sweep folder?")
    return pd.DataFrame(rows)


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


def summarize(root: str | Path, select: bool = False,
              columns_by: tuple[str, ...] = ()) -> tuple[pd.DataFrame, str]:
    """Write ``runs.csv`` and ``summary.md`` into ``root``; return the table and its Markdown.

    ``select``: one row per method, its variant chosen on validation (see select_on_validation);
    otherwise ``columns_by`` override keys become columns (see results_table).
    """
    root = Path(root)
    runs = collect(root)
    table = select_on_validation(runs) if select else results_table(runs, columns_by)
    markdown = to_markdown(table)
    atomic_write_bytes(root / "runs.csv", lambda p: runs.to_csv(p, index=False))
    atomic_write_bytes(root / "summary.md", lambda p: p.write_text(markdown))
    return table, markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="sweep folder (or any folder above sealab run dirs)")
    parser.add_argument("--select", action="store_true",
                        help="one row per method: the variant with the best validation score")
    parser.add_argument("--columns-by", nargs="+", default=(), metavar="KEY",
                        help="override keys whose values become columns, e.g. norm")
    args = parser.parse_args(argv)
    _, markdown = summarize(args.root, select=args.select, columns_by=tuple(args.columns_by))
    print(markdown, end="")
    print(f"(primary test metric in %; rows written to {Path(args.root) / 'runs.csv'})")


if __name__ == "__main__":
    main()
