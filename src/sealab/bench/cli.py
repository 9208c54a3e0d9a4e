"""``python -m sealab.bench [--quick] [--out PATH]``: time every variant, print, write JSON."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sealab.bench.commands import command_seconds
from sealab.bench.contention import OtherProcessesShare
from sealab.bench.extraction import extraction_seconds_per_1000
from sealab.bench.measure import (
    OVERHEAD,
    OVERHEAD_QUICK,
    QUICK,
    Setup,
    compile_figures,
    control_share,
    floor_macs,
    measure,
)
from sealab.bench.scaling import SCALING_QUICK, ScalingSetup, measure_scaling
from sealab.bench.startup import measure_startup
from sealab.console import quiet_fits
from sealab.fileio import atomic_write_json
from sealab.report import git_sha

BUSY_SHARE = 0.1  # of all cores used by other processes: above this, timings are unreliable
CHECKOUT_OUT = Path("bench") / "results.json"  # where `make bench` writes in a source checkout
INSTALLED_OUT = Path("sealab-bench.json")


def default_out(cwd: Path | None = None) -> Path:
    """Where results go without --out: bench/results.json when started at the top of a sealab
    source checkout, else sealab-bench.json in the current directory; never next to the
    installed package (site-packages)."""
    cwd = Path.cwd() if cwd is None else cwd
    checkout = (cwd / "pyproject.toml").is_file() and (cwd / "src" / "sealab").is_dir() and (cwd / "bench").is_dir()
    return cwd / (CHECKOUT_OUT if checkout else INSTALLED_OUT)


@dataclass(frozen=True)
class Target:
    """``numerator / denominator <= limit``, both timings in seconds (medians per epoch, or
    whole commands); without a denominator, ``numerator <= limit`` seconds."""

    name: str
    numerator: str
    denominator: str | None
    limit: float


TARGETS = (
    # The overhead-bound regime (d=64, C=10, one thread): what every step costs on a GPU.
    Target("overhead_linear_over_bare_loop", "overhead_sealab_linear", "overhead_bare_linear_loop", 1.3),
    Target("overhead_sea_clean_over_published_loop", "overhead_sealab_sea_clean", "overhead_published_sea_loop",
           0.8),
    Target("overhead_sea_faithful_over_published_loop", "overhead_sealab_sea_faithful",
           "overhead_published_sea_loop", 0.8),
    Target("overhead_grid_over_one_head", "overhead_sealab_sea_grid", "overhead_sealab_sea_clean", 2.5),
    # The matmul-bound regime (d=2048, C=100).
    Target("sea_clean_over_linear", "sealab_sea_clean", "sealab_linear", 1.9),
    Target("linear_over_bare_loop", "sealab_linear", "bare_linear_loop", 1.10),
    Target("sea_faithful_over_published_loop", "sealab_sea_faithful", "published_sea_loop", 0.45),
    # K heads in one pass at least 2x faster than K single-head fits
    Target("grid_over_single_fits", "sealab_sea_grid", "sealab_sea_single_fits", 0.5),
    # one sealab-train with a grid at least 5x faster than one sealab-train per value
    Target("grid_command_over_separate_commands", "grid_command", "separate_commands", 0.2),
    # extraction at >= 0.95 of a plain timm + DataLoader loop's images/s
    Target("extraction_over_plain_loop", "sealab_extraction", "plain_extraction", 1 / 0.95),
    # a streamed SeA epoch's time linear in n: per-row seconds at the largest n within 25% of the smallest's
    Target("scaling_per_row_largest_over_smallest_n", "scaling_per_row_largest_n", "scaling_per_row_smallest_n",
           1.25),
    # the fixed cost of a job: a whole process running a tiny job from cached features, median
    Target("startup_cached_tiny_job", "startup_cached_tiny_job", None, 3.0),
)


def _measured(rounds: list[list[float]]) -> list[float]:
    return [s for epochs in rounds for s in epochs[1:]]  # every round's warm-up left out


def summarise(setup: Setup, seconds: dict[str, list[list[float]]], commands: dict[str, float],
              extraction: dict[str, float], scaling: dict, quick: bool, other_share: float | None,
              overhead: dict[str, list[list[float]]], overhead_setup: Setup, startup: dict) -> dict:
    per_epoch = {name: statistics.median(_measured(rounds)) for name, rounds in seconds.items()}
    overhead_per_epoch = {name: statistics.median(_measured(rounds)) for name, rounds in overhead.items()}
    # K single-head fits cost K single-head epochs.
    timings = {**per_epoch, "sealab_sea_single_fits": setup.grid_size * per_epoch["sealab_sea_clean"],
               **{f"overhead_{name}": s for name, s in overhead_per_epoch.items()}, **commands,
               **extraction, **{f"scaling_per_row_{end}_n": run["cpu_epoch_seconds"] / run["n"]
                                for end, run in (("smallest", scaling["runs"][0]), ("largest", scaling["runs"][-1]))},
               "startup_cached_tiny_job": startup["cached_tiny_job"]["median"],
               **{f"startup_{name}": floor["median"] for name, floor in startup["floors"].items()}}
    macs, overhead_macs = floor_macs(setup), floor_macs(overhead_setup)
    targets = {}
    for t in TARGETS:
        if t.denominator is None:
            absolute = timings[t.numerator]  # (not `seconds`: the epoch timings recorded below)
            targets[t.name] = {"seconds": absolute, "limit": t.limit, "pass": absolute <= t.limit,
                               "numerator": t.numerator, "denominator": None}
            continue
        ratio = timings[t.numerator] / timings[t.denominator]
        targets[t.name] = {"ratio": ratio, "limit": t.limit, "pass": ratio <= t.limit,
                           "numerator": t.numerator, "denominator": t.denominator}
    return {
        "setup": {**asdict(setup), "quick": quick, "torch_threads": torch.get_num_threads()},
        "seconds_per_epoch": per_epoch,
        "epoch_seconds": seconds,
        "overhead": {"setup": {**asdict(overhead_setup), "torch_threads": 1}, "seconds_per_epoch": overhead_per_epoch,
                     "ms_per_step": {name: 1e3 * s / -(-overhead_setup.n // overhead_setup.batch_size)
                                     for name, s in overhead_per_epoch.items()},
                     "epoch_seconds": overhead},
        "command_seconds": commands,
        "extraction_seconds_per_1000_images": extraction,
        "scaling": scaling,
        "startup": startup,
        "timings": timings,
        # The control head's share of a SeA epoch as a run trains it (method.control, on by default).
        "control_share_of_sea_epoch": {"matmul_bound": control_share(per_epoch),
                                       "overhead_bound": control_share(overhead_per_epoch)},
        # method.compile: SeA's step compiled (inductor) and the default (auto) against eager
        "compile": {"matmul_bound": compile_figures(per_epoch, seconds),
                    "overhead_bound": compile_figures(overhead_per_epoch, overhead)},
        "floor": {"macs_per_step": macs, "sea_clean_over_linear": macs["sea_clean"] / macs["linear"],
                  "sea_over_published": macs["sea_clean"] / macs["published_sea"],
                  "overhead_grid_over_one_head": overhead_macs["sea_grid"] / overhead_macs["sea_clean"]},
        "targets": targets,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "other_processes_cpu_share": other_share},
        "git_sha": git_sha(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def print_results(results: dict, console: Console) -> None:
    s = results["setup"]
    times = Table(title=f"seconds per epoch: median of {s['rounds']} x {s['epochs']} epochs, each round "
                        f"after a warm-up (n={s['n']} d={s['d']} C={s['num_classes']} "
                        f"batch={s['batch_size']} threads={s['torch_threads']})")
    for column in ("variant", "s/epoch", "min", "max"):
        times.add_column(column, justify="left" if column == "variant" else "right")
    for name, median in results["seconds_per_epoch"].items():
        measured = _measured(results["epoch_seconds"][name])
        times.add_row(name, f"{median:.3f}", f"{min(measured):.3f}", f"{max(measured):.3f}")
    console.print(times)
    o = results["overhead"]["setup"]
    console.print(f"overhead-bound regime (n={o['n']} d={o['d']} C={o['num_classes']} batch={o['batch_size']}, "
                  "1 thread), ms per step: " + ", ".join(f"{name} {ms:.3f}"
                                                         for name, ms in results["overhead"]["ms_per_step"].items()))
    share = results["control_share_of_sea_epoch"]
    console.print(f"the control head's share of a SeA epoch (sealab_sea_clean_with_control against sealab_sea_clean, "
                  f"method.control=false): matmul-bound {share['matmul_bound']:.1%}, "
                  f"overhead-bound {share['overhead_bound']:.1%}")
    console.print("method.compile, SeA clean per epoch: " + "; ".join(
        f"{regime.replace('_', '-')} compiled / eager {c['compiled_over_eager']:.2f}, default (auto) / eager "
        f"{c['default_over_eager']:.2f}, compiling {c['compile_seconds']:.1f} s"
        for regime, c in results["compile"].items()))
    commands = Table(title=f"whole sealab-train commands on the quickstart data, {s['grid_size']} SeA steps")
    for column in ("commands", "seconds"):
        commands.add_column(column, justify="left" if column == "commands" else "right")
    for name, seconds in results["command_seconds"].items():
        commands.add_row(name, f"{seconds:.1f}")
    console.print(commands)
    rates = {name: f"{1000 / s:.0f}" for name, s in results["extraction_seconds_per_1000_images"].items()}
    console.print(f"extraction images/s (resnet10t, 64 px, CPU, fp32): {rates}")
    print_scaling(results["scaling"], console)
    print_startup(results["startup"], console)
    floor = results["floor"]
    macs = {name: f"{count / 1e6:.0f}M" for name, count in floor["macs_per_step"].items()}
    console.print(f"multiply-adds of a step: {macs}; floor ratios SeA / linear = "
                  f"{floor['sea_clean_over_linear']:.2f}, SeA / published loop = {floor['sea_over_published']:.2f}; "
                  f"overhead-bound {results['overhead']['setup']['grid_size']}-head grid / one head = "
                  f"{floor['overhead_grid_over_one_head']:.2f}")
    verdicts = Table(title="targets (reported, not enforced)")
    for column in ("target", "ratio", "limit", "result"):
        verdicts.add_column(column, justify="left" if column == "target" else "right")
    lightning = results["startup"]["floors"]["import_lightning_frozen_exit"]["median"]
    for name, t in results["targets"].items():
        if t["denominator"] is None:  # seconds; the start-up's floor beside it
            verdicts.add_row(f"{name}: seconds (floor: a process importing lightning {lightning:.2f} s)",
                             f"{t['seconds']:.3f}",
                             f"<= {t['limit']:.2f}", "PASS" if t["pass"] else "FAIL")
            continue
        verdicts.add_row(f"{name}: {t['numerator']} / {t['denominator']}", f"{t['ratio']:.3f}",
                         f"<= {t['limit']:.2f}", "PASS" if t["pass"] else "FAIL")
    console.print(verdicts)
    share = results["machine"]["other_processes_cpu_share"]
    if share is not None and share > BUSY_SHARE:
        console.print(f"[yellow]warning: other processes used {share:.0%} of the CPU while measuring: "
                      "these timings are unreliable, measure again on a quiet machine[/yellow]")


def print_scaling(scaling: dict, console: Console) -> None:
    s = scaling["setup"]
    devices = [d for d in ("cpu", "cuda") if d in scaling]
    table = Table(title=f"one clean-SeA epoch streamed from a float16 .npy (d={s['d']} C={s['num_classes']} "
                        f"batch={s['batch_size']} block_rows={s['block_rows']})")
    for column in ("n", "GiB on disk", *(f"{d} s/epoch" for d in devices), *(f"{d} / floor" for d in devices),
                   "peak RSS MiB", "RSS growth MiB"):
        table.add_column(column, justify="right")
    for run in scaling["runs"]:
        growth = run["rss_growth_mib"]
        table.add_row(str(run["n"]), f"{run['file_gib']:.2f}",
                      *(f"{run[f'{d}_epoch_seconds']:.2f}" for d in devices),
                      *(f"{run[f'{d}_over_floor']:.1f}" for d in devices),
                      f"{run['peak_rss_mib']:.0f}" if run["peak_rss_mib"] is not None else "?",
                      f"{growth:.0f}" if growth is not None else "?")
    console.print(table)
    for d in devices:
        fit = scaling[d]
        console.print(f"{d}: {fit['seconds_per_10k_rows']:.2f} s per 10k rows (R^2 {fit['r2']:.4f}); per-row time at "
                      f"the largest n / the smallest = {fit['per_row_largest_over_smallest']:.2f}; matmul rate "
                      f"{scaling['matmul_flops'][d] / 1e9:.0f} GFLOP/s")


def print_startup(startup: dict, console: Console) -> None:
    job = startup["cached_tiny_job"]
    table = Table(title=f"whole processes, seconds: median of {startup['repeats']} (`{startup['command']}`, "
                        "features cached)")
    for column in ("process", "median", "min", "max"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name, s in (("cached tiny job", job), *((f"floor: {n}", s) for n, s in startup["floors"].items())):
        table.add_row(name, f"{s['median']:.2f}", f"{s['min']:.2f}", f"{s['max']:.2f}")
    console.print(table)
    imports = startup["job_imports"]
    console.print(f"the job's imports: {imports['total']:.2f} s, by package: "
                  + ", ".join(f"{name} {s:.2f}" for name, s in imports["by_package"].items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sealab.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: n={QUICK.n}, {QUICK.rounds} round of {QUICK.epochs} epoch")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results JSON (default: {CHECKOUT_OUT} at the top of a source checkout, "
                             f"else {INSTALLED_OUT} in the current directory; gpu.json with --device cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: this bench (make bench); cuda: the GPU check (make gpu-check): both regimes, "
                             "extraction and the study's projected head-training time on one GPU")
    # The GPU check's measurements on the CPU: what the CPU projects, and a try of its code here.
    parser.add_argument("--gpu-check-on-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda":
        from sealab.bench import gpu  # it reads this module's targets: imported once this one is

        device = torch.device("cpu") if args.gpu_check_on_cpu else torch.device("cuda", 0)
        return gpu.main(device, args.out or gpu.gpu_out(default_out()), args.quick)
    if args.out is None:
        args.out = default_out()
    setup = QUICK if args.quick else Setup()
    with quiet_fits(), OtherProcessesShare() as others:  # the commands below are other processes: timed after
        seconds = measure(setup)
        overhead_setup = OVERHEAD_QUICK if args.quick else OVERHEAD
        overhead = measure(overhead_setup, threads=1)
        extraction = extraction_seconds_per_1000(n=128 if args.quick else 1024, rounds=setup.rounds)
        scaling = measure_scaling(SCALING_QUICK if args.quick else ScalingSetup())
    commands = command_seconds(setup, epochs=2 if args.quick else None)
    startup = measure_startup(repeats=1 if args.quick else 5)
    results = summarise(setup, seconds, commands, extraction, scaling, args.quick, others.share, overhead,
                        overhead_setup, startup)
    console = Console()
    print_results(results, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)
    console.print(f"wrote {args.out}")
    return results
