"""Seconds per epoch of every variant, measured in this process in interleaved rounds."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sealab.augment.base import HALVED_GRAM_ROWS
from sealab.bench.plain_loops import bare_linear, published_sea
from sealab.bench.sealab_runs import sealab_epoch_seconds


@dataclass(frozen=True)
class Setup:
    n: int = 20000
    d: int = 2048
    num_classes: int = 100
    batch_size: int = 256
    epochs: int = 2  # measured per round, after one warm-up epoch
    rounds: int = 3  # each round trains every variant afresh, so a busy spell hits all of them
    seed: int = 0
    grid_size: int = 8  # SeA heads trained in one pass, against as many single-head fits


QUICK = Setup(n=1000, epochs=1, rounds=1, grid_size=2)
# The overhead-bound regime (every step on a GPU): small products, measured on one thread.
OVERHEAD = Setup(d=64, num_classes=10, epochs=3)
OVERHEAD_QUICK = Setup(n=1000, d=64, num_classes=10, epochs=1, rounds=1, grid_size=2)
GRID_ETAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)


def eta_grid(size: int) -> str:
    """The ``method.grid`` override of ``size`` SeA steps."""
    return f"method.grid={{augmenter.eta:[{','.join(map(str, GRID_ETAS[:size]))}]}}"


def floor_macs(setup: Setup) -> dict[str, int]:
    """Multiply-adds of one training step: linear (logits and weight gradient, 2BCd); clean SeA
    in logit space adds W W^T (C^2 d), the gradient norms (B C^2), the gradient dots, the mixing
    of logits and the mixed logit gradient (3 B^2 C), and the span moments: from Q X (B^2 d)
    when d < B, else from the batch Gram matrix (3/4 B^2 d) and Q G (B^3).
    The published loop: a forward and a backward that fills both the weight and the input
    gradient (3BCd), the gradient dots (B^2 d), the direction Q X (B^2 d), then the training
    step on the moved features (2BCd). A grid of K SeA heads shares only the Gram matrix: each
    head has its own B x B work."""
    b, c, d = setup.batch_size, setup.num_classes, setup.d
    linear = 2 * b * c * d
    # The symmetric Gram matrix from three quarters of the products (SharedBatch.gram), shared
    # by the heads of a grid; Q X instead when d < B.
    gram = (3 * b * b * d // 4 if b >= HALVED_GRAM_ROWS else b * b * d) if d >= b else 0
    span = gram + b**3 if d >= b else b * b * d
    sea = linear + span + c * c * d + b * c * c + 3 * b * b * c
    return {"linear": linear, "sea_clean": sea, "published_sea": 5 * b * c * d + 2 * b * b * d,
            "sea_grid": setup.grid_size * sea - (setup.grid_size - 1) * gram}


PLAIN_LOOPS = {"bare_linear_loop": bare_linear, "published_sea_loop": published_sea}
# The SeA rows train SeA's heads alone (method.control=false), as the published loop and the floor
# do; ..._with_control is method=sea as a run trains it, with the control head beside it.
NO_CONTROL = "method.control=false"
SEALAB_METHODS = {"sealab_linear": ["method=linear"], "sealab_sea_clean": ["method=sea", NO_CONTROL],
                  "sealab_sea_faithful": ["method=sea_faithful", NO_CONTROL],
                  "sealab_sea_grid": ["method=sea", NO_CONTROL], "sealab_sea_clean_with_control": ["method=sea"],
                  # method.compile: SeA's step eager, through torch.compile (sealab_sea_clean: the default, auto)
                  "sealab_sea_clean_eager": ["method=sea", NO_CONTROL, "method.compile=off"],
                  "sealab_sea_clean_compiled": ["method=sea", NO_CONTROL, "method.compile=inductor"]}
VARIANTS = (*PLAIN_LOOPS, *SEALAB_METHODS)


def control_share(seconds_per_epoch: dict[str, float]) -> float:
    """The control head's share of a SeA epoch as a run trains it: (with - without) / with."""
    with_control = seconds_per_epoch["sealab_sea_clean_with_control"]
    return (with_control - seconds_per_epoch["sealab_sea_clean"]) / with_control


def compile_figures(seconds_per_epoch: dict[str, float], epoch_seconds: dict[str, list[list[float]]]) -> dict:
    """``method.compile``'s figures: seconds per epoch compiled / eager and the default (auto) /
    eager, and the compile's cost: the warm-up epoch (which compiles) less a measured epoch,
    median over rounds."""
    eager = seconds_per_epoch["sealab_sea_clean_eager"]
    warmups = [epochs[0] for epochs in epoch_seconds["sealab_sea_clean_compiled"]]
    return {"compiled_over_eager": seconds_per_epoch["sealab_sea_clean_compiled"] / eager,
            "default_over_eager": seconds_per_epoch["sealab_sea_clean"] / eager,
            "compile_seconds": statistics.median(warmups) - seconds_per_epoch["sealab_sea_clean_compiled"]}


def random_features(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(setup.seed)
    x = F.normalize(torch.randn(setup.n, setup.d, generator=gen), dim=1)
    return x, torch.randint(setup.num_classes, (setup.n,), generator=gen)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously), so a clock read after
    it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain_epoch_seconds(make_epoch: Callable, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> list[float]:
    torch.manual_seed(setup.seed)
    epoch = make_epoch(x, y, setup.num_classes, setup.batch_size)
    seconds = []
    for _ in range(1 + setup.epochs):
        synchronize(x.device)
        start = time.perf_counter()
        epoch()
        synchronize(x.device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _epoch_seconds(variant: str, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> list[float]:
    if variant in PLAIN_LOOPS:
        return _plain_epoch_seconds(PLAIN_LOOPS[variant], x, y, setup)
    overrides = SEALAB_METHODS[variant] + ([eta_grid(setup.grid_size)] if variant == "sealab_sea_grid" else [])
    return sealab_epoch_seconds(overrides, (x, y), setup.num_classes, setup.batch_size, epochs=1 + setup.epochs,
                                device=x.device)


def measure(setup: Setup, threads: int | None = None,
            device: torch.device | None = None) -> dict[str, list[list[float]]]:
    """Per variant, one list per round: the warm-up epoch's seconds, then the measured ones;
    on ``threads`` torch threads (None: as set), with the features on ``device`` (the CPU
    unless given)."""
    x, y = (t.to(device or "cpu") for t in random_features(setup))
    seconds: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        for _ in range(setup.rounds):
            for variant in VARIANTS:
                seconds[variant].append(_epoch_seconds(variant, x, y, setup))
    finally:
        torch.set_num_threads(before)
    return seconds
