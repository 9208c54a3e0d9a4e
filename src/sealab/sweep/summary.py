"""Collect the records of one or more sweeps into one table (CSV + Markdown), failed and
unfinished jobs included.

``sealab-summary multirun/2026-11-25/12-00-00-000000 [DIR ...]`` (or any folders above run dirs).

A row is a method and what else its runs changed: the settings that label a row
(``sealab.settings``: they change the numbers and are not the seed) whose values differ among
the runs of that dataset, backbone and method, read from each run's resolved config. Settings a
whole sweep shares never label a row, and runs that differ in one never share a cell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from omegaconf import OmegaConf

from sealab.checks import COMPONENTS
from sealab.fileio import atomic_write_bytes
from sealab.sweep.numbers import recorded_numbers, show
from sealab.sweep.outcome import FAILED, METRICS, RESUMED, job_identity
from sealab.sweep.overrides import GRID, is_variant, variant
from sealab.sweep.plan import MULTIRUN, not_started

KEYS = [*COMPONENTS, "seed"]
Roots = Iterable[str | Path]
# What --select reports where a method's variants have no validation score to choose on.
NOT_SELECTED = "not selected: no val score"
NO_JOB = "No job finished.\n"  # the table of a sweep where every job failed


def _row(record: dict, path: Path, overrides: list[str], metrics: dict[str, float],
         settings: dict[str, Any], control: dict[str, float] | None) -> dict:
    """A run's (or grid head's) row; ``control``: the metrics of its control head (the same head
    trained beside it without augmentation), whose primary scores become ``control_primary`` and
    ``control_val_primary`` (NaN without one)."""
    row = {k: record[k] for k in KEYS}
    row["overrides"] = overrides
    row["settings"] = settings
    row.update(metrics)
    val_metric = record["primary_metric"].replace("test/", "val/", 1)
    control, nan = control or {}, float("nan")
    row.update(primary_metric=record["primary_metric"], primary=metrics.get(record["primary_metric"]),
               val_primary=metrics.get(val_metric, nan), control_primary=control.get(record["primary_metric"], nan),
               control_val_primary=control.get(val_metric, nan), fit_seconds=record["fit_seconds"],
               run_dir=str(path.parent))
    return row


def _records(roots: Roots, name: str) -> list[Path]:
    return sorted(path for root in roots for path in Path(root).rglob(name))


def _settings(record: dict) -> dict[str, Any]:
    """The settings that change the run's numbers (sweep.numbers), its grid left out: each head of
    a grid is a run of its own values."""
    numbers = recorded_numbers(record.get("config") or {})
    return {key: value for key, value in numbers.items() if key != GRID and not key.startswith(GRID + ".")}


def variants(runs: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Each run's label: ``key=value`` of every setting that labels a row (overrides.is_variant)
    and differs among the runs of its dataset/backbone/method, keys in ``exclude`` left out."""
    labels = [""] * len(runs)
    for positions in runs.groupby(list(COMPONENTS), dropna=False).indices.values():
        settings = [runs["settings"].iloc[i] for i in positions]
        keys = sorted({key for s in settings for key in s if is_variant(key) and key not in exclude})
        varying = [key for key in keys
                   if len({json.dumps(s.get(key), sort_keys=True, default=str) for s in settings}) > 1]
        for i, s in zip(positions, settings):
            labels[i] = ", ".join(f"{key}={show(s.get(key))}" for key in varying)
    return labels


def collect(*roots: str | Path) -> pd.DataFrame:
    """One row per finished run, or per head of a run's grid (a variant like any other: its values
    set ``method.<key>``, as the override that would train it alone): its identifying keys,
    ``settings`` (what changes its numbers), ``variant`` (its label), every metric, timings and
    primary metric. A run whose latest attempt failed is left to ``failures``."""
    rows = []
    for path in _records(roots, METRICS):
        if (path.parent / FAILED).exists():
            continue
        record = json.loads(path.read_text())
        overrides, settings = record.get("overrides", []), _settings(record)
        if not record.get("grid"):
            rows.append(_row(record, path, overrides, record["metrics"], settings, record.get("control")))
        for head in record.get("grid", []):
            values = {f"method.{key}": value for key, value in head["values"].items()}
            rows.append(_row(record, path, overrides + [f"{key}={show(value)}" for key, value in values.items()],
                             head["metrics"], {**settings, **values}, head.get("control")))
    if not rows:
        raise FileNotFoundError(f"no metrics.json below {', '.join(map(str, roots))}: "
                                "is this a sealab run or sweep folder?")
    runs = pd.DataFrame(rows)
    return runs.assign(variant=variants(runs))


def failures(*roots: str | Path) -> pd.DataFrame:
    """One row per job that left no result: failed or interrupted (failed.json: its error),
    unfinished (Hydra started it, nothing else: still running, or killed) or not started (a job
    of a sweep's multirun.yaml with no run dir: the sweep stopped before it)."""
    rows = []
    for path in _records(roots, FAILED):
        record = json.loads(path.read_text())
        rows.append({**record, "status": record.get("status", "failed"), "run_dir": str(path.parent)})
    for hydra_dir in _records(roots, ".hydra"):
        run_dir, files = hydra_dir.parent, [hydra_dir / "config.yaml", hydra_dir / "hydra.yaml"]
        done = any((run_dir / name).exists() for name in (METRICS, FAILED, RESUMED))
        if not done and all(f.is_file() for f in files):  # (killed while Hydra wrote them: nothing to say)
            config = OmegaConf.merge(*map(OmegaConf.load, files))
            rows.append({**job_identity(config), "error": "no result: still running, or killed",
                         "status": "unfinished", "run_dir": str(run_dir)})
    for multirun in _records(roots, MULTIRUN):
        for num, identity in not_started(multirun.parent):
            rows.append({**identity, "error": "not started: the sweep stopped before this job",
                         "status": "not started", "run_dir": str(multirun.parent / f"job {num}")})
    columns = [*KEYS, "overrides", "status", "error", "run_dir"]
    return pd.DataFrame(rows, columns=columns).assign(variant=lambda f: [variant(o) for o in f["overrides"]])


def _mean_std(mean: float, std: float, count: int) -> str:
    """A cell in %: the mean, and +- the standard deviation over runs when there are several."""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if count > 1 else "")


def results_table(runs: pd.DataFrame, columns_by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows: methods with what else they changed (``variants``). Columns: dataset/backbone, plus
    the values of the settings in ``columns_by`` (e.g. ``norm``), which then label no row. Cells:
    primary test metric in %, mean +- std over seeds."""
    runs = runs.copy()
    extras = variants(runs, columns_by)
    runs["row"] = [f"{m} ({e})" if e else m for m, e in zip(runs["method"], extras)]
    runs["column"] = runs["dataset"] + "/" + runs["backbone"]
    for key in columns_by:
        runs["column"] += [f" {key}={show(s[key])}" if key in s else "" for s in runs["settings"]]
    stats = runs.groupby(["row", "column"])["primary"].agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [_mean_std(*values) for values in zip(stats["mean"], stats["std"], stats["count"])]
    table = stats.pivot(index="row", columns="column", values="cell")
    table.index.name = "method"
    table.columns.name = None
    return table


def chosen_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and dataset/backbone, the variant with the best mean validation score (e.g.
    SeA's eta), with its test score's mean, std and n over seeds: test data never picks the
    variant. A method with one variant needs no choice; one whose variants have no validation
    score (``fit_on=trainval`` keeps no val split) cannot be chosen: its ``variant`` is None."""
    stats = runs.groupby(["method", "variant", "dataset", "backbone"], dropna=False).agg(
        val=("val_primary", "mean"), mean=("primary", "mean"), std=("primary", "std"), n=("primary", "count"))
    chosen = []
    for (method, dataset, backbone), group in stats.reset_index().groupby(["method", "dataset", "backbone"]):
        scored = group.dropna(subset=["val"])
        best = group.iloc[0] if len(group) == 1 else scored.loc[scored["val"].idxmax()] if len(scored) else None
        chosen.append({"method": method, "dataset": dataset, "backbone": backbone,
                       **({"variant": None} if best is None else best[["variant", "mean", "std", "n"]].to_dict())})
    columns = ["method", "dataset", "backbone", "variant", "mean", "std", "n"]
    return pd.DataFrame(chosen, columns=columns).astype({"variant": object, "n": "Int64"})


def selected_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of each method's variant chosen on validation (``chosen_variants``), one per seed;
    cells whose variant cannot be chosen are left out."""
    keys = ["method", "dataset", "backbone", "variant"]
    chosen = chosen_variants(runs).dropna(subset=["variant"])[keys]
    return runs.merge(chosen, on=keys)


def select_on_validation(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and dataset/backbone, the test score of the variant chosen on validation
    (``chosen_variants``), mean +- std over its n seeds; a cell whose variant cannot be chosen
    says so."""
    cells = [{"method": c.method, "column": f"{c.dataset}/{c.backbone}",
              "cell": NOT_SELECTED if pd.isna(c.variant) else (
                  f"{_mean_std(c.mean, c.std, c.n)} (n={c.n}" + (f"; {c.variant})" if c.variant else ")"))}
             for c in chosen_variants(runs).itertuples()]
    table = pd.DataFrame(cells).pivot(index="method", columns="column", values="cell")
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

    ``select``: one row per method, its variant chosen on validation (see select_on_validation),
    written to ``selected.md`` beside summary.md; otherwise ``columns_by`` settings become columns
    (see results_table).
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    out = Path(out) if out is not None else roots[0]
    failed = failures(*roots)
    try:
        runs = collect(*roots).assign(status="ok")
    except FileNotFoundError:
        if failed.empty:
            raise
        runs = pd.DataFrame(columns=[*KEYS, "overrides", "settings", "variant", "status"])
    table = pd.DataFrame()
    if len(runs):
        table = select_on_validation(runs) if select else results_table(runs, columns_by)
    markdown = to_markdown(table) if len(runs) else NO_JOB
    if select and table.isin([NOT_SELECTED]).to_numpy().any():
        markdown += (f"\n{NOT_SELECTED}: these runs have no validation metric to choose a variant on "
                     "(fit_on=trainval refits on train+val). Select with fit_on=train, then refit the "
                     "chosen variant with fit_on=trainval.\n")
    if len(failed):
        markdown += f"\n{len(failed)} job(s) without a result:\n\n" + failures_markdown(failed)
    out.mkdir(parents=True, exist_ok=True)
    every_row = pd.concat([frame for frame in (runs.drop(columns="settings"), failed) if len(frame)],
                          ignore_index=True)
    atomic_write_bytes(out / "runs.csv", lambda p: every_row.to_csv(p, index=False))
    atomic_write_bytes(out / table_file(select), lambda p: p.write_text(markdown))
    return table, markdown


def table_file(select: bool) -> str:
    """summary.md, or selected.md for --select: the selection never replaces the sweep's table."""
    return "selected.md" if select else "summary.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", metavar="DIR",
                        help="sweep folders (or any folders above sealab run dirs), merged into one table")
    parser.add_argument("--out", metavar="DIR",
                        help="where runs.csv, summary.md and the report go (default: the one DIR; required with "
                             "several)")
    parser.add_argument("--select", action="store_true",
                        help="one row per method: the variant with the best validation score (into selected.md)")
    parser.add_argument("--columns-by", nargs="+", default=(), metavar="KEY",
                        help="settings whose values become columns, e.g. norm")
    parser.add_argument("--report", action="store_true",
                        help="also the paper's table: report.md, report.tex, report.csv and figures (PNG, PDF), "
                             "one block per backbone, each method's variant chosen on validation")
    parser.add_argument("--baseline", default="linear", metavar="METHOD",
                        help="the method the report's differences are taken from (default: linear); 'control': "
                             "each run's own control head, the same head trained beside it without augmentation "
                             "(recorded by every augmenter's run, method.control=true)")
    args = parser.parse_args(argv)
    if len(args.roots) > 1 and args.out is None:
        parser.error("several DIRs are merged into one table: name its folder with --out DIR")
    out = Path(args.out or args.roots[0])
    _, markdown = summarize(args.roots, out, select=args.select, columns_by=tuple(args.columns_by))
    print(f"\nResults (primary test metric, %), also in {out / table_file(args.select)}; "
          f"every row in {out / 'runs.csv'}:")
    print(markdown, end="")
    if args.report and not markdown.startswith(NO_JOB):
        from sealab.sweep.report import describe, write_report  # scipy and matplotlib only for the report

        print("\n" + describe(*write_report(collect(*args.roots), out, args.baseline)))


if __name__ == "__main__":
    main()
