"""Seconds per epoch of every variant, measured in this process in interleaved rounds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

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


QUICK = Setup(n=1000, epochs=1, rounds=1)

PLAIN_LOOPS = {"bare_linear_loop": bare_linear, "published_sea_loop": published_sea}
SEALAB_METHODS = {"sealab_linear": "linear", "sealab_sea_clean": "sea", "sealab_sea_faithful": "sea_faithful"}
VARIANTS = (*PLAIN_LOOPS, *SEALAB_METHODS)


def random_features(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(setup.seed)
    x = F.normalize(torch.randn(setup.n, setup.d, generator=gen), dim=1)
    return x, torch.randint(setup.num_classes, (setup.n,), generator=gen)


def _plain_epoch_seconds(make_epoch: Callable, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> list[float]:
    torch.manual_seed(setup.seed)
    epoch = make_epoch(x, y, setup.num_classes, setup.batch_size)
    seconds = []
    for _ in range(1 + setup.epochs):
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
    return seconds


def _epoch_seconds(variant: str, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> list[float]:
    if variant in PLAIN_LOOPS:
        return _plain_epoch_seconds(PLAIN_LOOPS[variant], x, y, setup)
    return sealab_epoch_seconds(SEALAB_METHODS[variant], x, y, setup.num_classes, setup.batch_size,
                                epochs=1 + setup.epochs)


def measure(setup: Setup) -> dict[str, list[list[float]]]:
    """Per variant, one list per round: the warm-up epoch's seconds, then the measured ones."""
    x, y = random_features(setup)
    seconds: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for _ in range(setup.rounds):
        for variant in VARIANTS:
            seconds[variant].append(_epoch_seconds(variant, x, y, setup))
    return seconds
