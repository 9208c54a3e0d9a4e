"""``python -m sealab.bench --device cuda`` (the second half of ``make gpu-check``): on one
GPU, in one run of a few minutes, everything the study needs to know about it.

- Both regimes of ``make bench`` (overhead-bound d=64, C=10; matmul-bound d=2048, C=100),
  every variant's ms per step and the ratios of their targets;
- extraction images/s, sealab against a plain timm loop (ResNet-50 at 224 px, fp32);
- the cost of one 8-head SeA grid step for every (d, C) of the study, with the fixed costs of
  an epoch and of a fit, and from them the projected head-training time of the whole study
  (``sealab.bench.study``) against its goal: under 10 minutes on one GPU.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sealab.bench.cli import TARGETS, _measured
from sealab.bench.extraction import extraction_seconds_per_1000
from sealab.bench.measure import (
    OVERHEAD,
    OVERHEAD_QUICK,
    QUICK,
    Setup,
    compile_figures,
    eta_grid,
    measure,
    random_features,
)
from sealab.bench.sealab_runs import sealab_epoch_seconds
from sealab.bench.study import (
    BATCH_SIZE,
    DATASETS,
    EPOCHS,
    FEATURE_DIMS,
    GRID_SIZE,
    SEEDS,
    Costs,
    project,
    shapes,
    split_epoch,
)
from sealab.console import quiet_fits
from sealab.features.extract import resolve_workers
from sealab.fileio import atomic_write_json
from sealab.report import git_sha

NO_CUDA = ("no CUDA device: torch.cuda.is_available() is False; run make gpu-check on a machine with a GPU "
           "(python -m sealab.bench --device cuda)")
TIME_LIMIT_SECONDS = 480.0  # the whole check, on one GPU


@dataclass(frozen=True)
class GridSetup:
    """How a shape's costs are measured: two fits of the study's grid, one of ``short`` steps
    per epoch and one of ``long``, each of one warm-up epoch and then ``short_epochs`` or
    ``long_epochs`` measured ones. The difference of their median epochs gives a step, the
    short epoch's remainder an epoch's fixed cost, the short fit's remainder a fit's."""

    short: int = 1
    long: int = 32
    short_epochs: int = 5
    long_epochs: int = 5


@dataclass(frozen=True)
class ExtractionSetup:
    model: str = "resnet50"
    img_size: int = 224
    n: int = 1024
    batch_size: int = 128
    rounds: int = 3


GRID, GRID_QUICK = GridSetup(), GridSetup(long=4, short_epochs=2, long_epochs=1)
# The study's grid as a run trains it: method=sea's own settings (its control head included).
GRID_OVERRIDES = ["method=sea", eta_grid(GRID_SIZE)]
EXTRACTION_QUICK = ExtractionSetup(model="resnet10t", img_size=64, n=128, batch_size=64, rounds=1)


def fit_seconds(d: int, num_classes: int, steps: int, epochs: int, device: torch.device) -> tuple[list[float], float]:
    """The study's grid fit (``method=sea`` with its eta grid) on ``steps`` batches of random
    features per epoch, for a warm-up and ``epochs`` epochs: each epoch's seconds and the whole
    fit's."""
    x, y = random_features(Setup(n=steps * BATCH_SIZE, d=d, num_classes=num_classes))
    x, y = x.to(device), y.to(device)
    start = time.perf_counter()
    seconds = sealab_epoch_seconds(GRID_OVERRIDES, (x, y), num_classes, BATCH_SIZE, epochs=1 + epochs, device=device)
    return seconds, time.perf_counter() - start


def shape_costs(d: int, num_classes: int, setup: GridSetup, device: torch.device) -> dict:
    """A shape's ``Costs`` (as a dict; ``noisy``: see ``split_epoch``) and the epochs they come from."""
    epochs, walls = {}, {}
    for name in ("short", "long"):
        epochs[name], walls[name] = fit_seconds(d, num_classes, getattr(setup, name),
                                                getattr(setup, f"{name}_epochs"), device)
    short, long = (statistics.median(epochs[name][1:]) for name in ("short", "long"))
    step, epoch, noisy = split_epoch(short, setup.short, long, setup.long)
    # A fit's fixed cost: its wall time beyond its epochs at their steady cost (the set-up, the
    # warm-up epoch's excess, the heads moved back), from the short fit, where that dominates.
    fit = max(walls["short"] - len(epochs["short"]) * short, 0.0)
    return {"d": d, "num_classes": num_classes, **asdict(Costs(step, epoch, fit)), "noisy": noisy,
            "epoch_seconds": epochs, "fit_wall_seconds": walls}


def regime(setup: Setup, rounds: dict[str, list[list[float]]]) -> dict:
    per_epoch = {name: statistics.median(_measured(r)) for name, r in rounds.items()}
    steps = -(-setup.n // setup.batch_size)
    return {"setup": asdict(setup), "seconds_per_epoch": per_epoch,
            "ms_per_step": {name: 1e3 * s / steps for name, s in per_epoch.items()}, "epoch_seconds": rounds,
            # method.compile on the device: the default (auto: CUDA graphs) and inductor against eager
            "compile": compile_figures(per_epoch, rounds)}


def verdicts(timings: dict[str, float]) -> dict:
    """Every ``make bench`` target whose two timings were measured here."""
    return {t.name: {"ratio": timings[t.numerator] / timings[t.denominator], "limit": t.limit,
                     "pass": timings[t.numerator] / timings[t.denominator] <= t.limit,
                     "numerator": t.numerator, "denominator": t.denominator}
            for t in TARGETS if t.numerator in timings and t.denominator in timings}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def measure_gpu(device: torch.device, quick: bool = False) -> dict:
    started = time.perf_counter()
    overhead_setup, matmul_setup = (OVERHEAD_QUICK, QUICK) if quick else (OVERHEAD, Setup())
    grid_setup, extraction_setup = (GRID_QUICK, EXTRACTION_QUICK) if quick else (GRID, ExtractionSetup())
    workers = resolve_workers("auto", device)
    with quiet_fits():
        overhead = regime(overhead_setup, measure(overhead_setup, threads=1, device=device))
        matmul = regime(matmul_setup, measure(matmul_setup, device=device))
        extraction = extraction_seconds_per_1000(extraction_setup.n, extraction_setup.rounds,
                                                 extraction_setup.batch_size, device, extraction_setup.model,
                                                 extraction_setup.img_size, workers)
        costs = [shape_costs(d, c, grid_setup, device) for d, c in shapes()]
    projection = project({(c["d"], c["num_classes"]): Costs(c["step"], c["epoch"], c["fit"]) for c in costs})
    timings = {**matmul["seconds_per_epoch"], **extraction,
               **{f"overhead_{name}": s for name, s in overhead["seconds_per_epoch"].items()}}
    return {
        "device": {"type": device.type, "name": device_name(device), "torch": torch.__version__,
                   "cuda": torch.version.cuda, "loader_workers": workers},
        "quick": quick,
        "regimes": {"overhead": overhead, "matmul": matmul},
        "targets": verdicts(timings),
        "extraction": {"setup": {**asdict(extraction_setup), "num_workers": workers, "precision": "fp32"},
                       "images_per_second": {name: 1000 / s for name, s in extraction.items()}},
        "grid": {"setup": asdict(grid_setup), "overrides": GRID_OVERRIDES, "grid_size": GRID_SIZE,
                 "batch_size": BATCH_SIZE, "shapes": costs},
        "study": {"datasets": [asdict(ds) for ds in DATASETS], "feature_dims": list(FEATURE_DIMS), "seeds": SEEDS,
                  "epochs": EPOCHS, "grid_size": GRID_SIZE, "batch_size": BATCH_SIZE,
                  "not_counted": "extraction, validation, evaluation, process start-up (a multirun's jobs share "
                                 "one process with the basic launcher)"},
        "projection": projection,
        "elapsed_seconds": time.perf_counter() - started,
        "time_limit_seconds": TIME_LIMIT_SECONDS,
        "git_sha": git_sha(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def print_gpu(results: dict, console: Console) -> None:
    dev = results["device"]
    regimes = Table(title=f"ms per step on {dev['name']} ({dev['type']}, torch {dev['torch']})")
    for column in ("variant", "overhead-bound d=64 C=10", "matmul-bound d=2048 C=100"):
        regimes.add_column(column, justify="left" if column == "variant" else "right")
    overhead, matmul = (results["regimes"][r]["ms_per_step"] for r in ("overhead", "matmul"))
    for name in overhead:
        regimes.add_row(name, f"{overhead[name]:.3f}", f"{matmul[name]:.3f}")
    console.print(regimes)
    rates = results["extraction"]["images_per_second"]
    setup = results["extraction"]["setup"]
    console.print(f"extraction images/s ({setup['model']}, {setup['img_size']} px, fp32, {setup['num_workers']} "
                  f"loader workers): sealab {rates['sealab_extraction']:.0f}, plain timm loop "
                  f"{rates['plain_extraction']:.0f}")
    costs = Table(title=f"one {results['grid']['grid_size']}-head SeA grid step (batch {results['grid']['batch_size']}) "
                        "and the fixed costs, per shape")
    for column in ("d", "C", "step ms", "epoch fixed ms", "fit fixed s"):
        costs.add_column(column, justify="right")
    for c in results["grid"]["shapes"]:
        costs.add_row(str(c["d"]), str(c["num_classes"]), f"{1e3 * c['step']:.3f}" + (" *" if c["noisy"] else ""),
                      f"{1e3 * c['epoch']:.1f}", f"{c['fit']:.2f}")
    console.print(costs)
    if any(c["noisy"] for c in results["grid"]["shapes"]):
        console.print("[yellow]* the short and long epochs contradicted each other (a busy machine): the step is "
                      "the long epoch over its steps, fixed cost included[/yellow]")
    p, study = results["projection"], results["study"]
    table = Table(title=f"projected head training of the study: {study['seeds']} seeds x {study['epochs']} epochs "
                        f"of an {study['grid_size']}-eta grid in one pass, batch {study['batch_size']}")
    for column in ("dataset", "C", "train images", "steps/epoch", *(f"{d}-d s" for d in study["feature_dims"])):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for ds in study["datasets"]:
        rows = [r for r in p["rows"] if r["dataset"] == ds["name"]]
        table.add_row(ds["name"], str(ds["num_classes"]), f"{ds['train_size']:,}", str(rows[0]["steps_per_epoch"]),
                      *(f"{r['seconds']:.1f}" for r in rows))
    console.print(table)
    verdicts_table = Table(title="targets (reported, not enforced)")
    for column in ("target", "ratio / seconds", "limit", "result"):
        verdicts_table.add_column(column, justify="left" if column == "target" else "right")
    for name, t in results["targets"].items():
        verdicts_table.add_row(f"{name}: {t['numerator']} / {t['denominator']}", f"{t['ratio']:.3f}",
                               f"<= {t['limit']:.2f}", "PASS" if t["pass"] else "FAIL")
    verdicts_table.add_row(f"study head training: {p['grid_steps']:,} grid steps, {p['fits']} fits, "
                           f"{p['epochs']:,} epochs", f"{p['seconds']:.0f}", f"<= {p['goal_seconds']:.0f}",
                           "PASS" if p["pass"] else "FAIL")
    verdicts_table.add_row("this check's own time", f"{results['elapsed_seconds']:.0f}",
                           f"<= {results['time_limit_seconds']:.0f}",
                           "PASS" if results["elapsed_seconds"] <= results["time_limit_seconds"] else "FAIL")
    console.print(verdicts_table)
    console.print(f"the whole study's head training: {p['seconds']:.0f} s ({p['seconds'] / 60:.1f} min) on "
                  f"{dev['name']}; goal under {p['goal_seconds'] / 60:.0f} min: {'PASS' if p['pass'] else 'FAIL'}")


def gpu_out(out: Path) -> Path:
    """Where the GPU check writes without --out: beside ``make bench``'s results, as gpu.json."""
    return out.with_name("gpu.json" if out.parent.name == "bench" else "sealab-gpu.json")


def main(device: torch.device, out: Path, quick: bool = False) -> dict:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA)
    results = measure_gpu(device, quick)
    console = Console()
    print_gpu(results, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results)
    console.print(f"wrote {out}")
    return results
