"""The paper's study as the GPU bench projects it, and the arithmetic of the projection.

The study: 11 datasets, features of two widths, each dataset's class count, 3 seeds, 100
epochs, an 8-value eta grid trained in one pass (one optimiser step updates every head). Its
head-training time follows from three measured costs of a shape (feature width d, classes C):
one grid step, the fixed part of an epoch and the fixed part of a fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyDataset:
    name: str  # its conf/dataset/<name>.yaml
    train_size: int  # images the heads train on: the official training pool (train + val)
    num_classes: int


# Training pools and class counts of the transfer protocol's splits (Ericsson et al. 2021, "How
# well do self-supervised models transfer?", and each dataset's own release), as sealab reads
# them (conf/dataset/*.yaml): 227,962 images in all, the "about 227k". A run with
# fit_on=train trains on the pool less its val split: the projection is the larger case.
DATASETS = (
    StudyDataset("aircraft", 6_667, 100),  # FGVC-Aircraft 2013b variants: train 3,334 + val 3,333
    StudyDataset("caltech101", 3_060, 102),  # 30 per class, BACKGROUND_Google included
    StudyDataset("cars", 8_144, 196),  # Stanford Cars train
    StudyDataset("cifar10", 50_000, 10),
    StudyDataset("cifar100", 50_000, 100),
    StudyDataset("dtd", 3_760, 47),  # split 1: train 1,880 + val 1,880
    StudyDataset("flowers", 2_040, 102),  # Oxford Flowers-102: train 1,020 + val 1,020
    StudyDataset("food101", 75_750, 101),
    StudyDataset("pets", 3_680, 37),  # Oxford-IIIT Pets trainval
    StudyDataset("sun397", 19_850, 397),  # partition 1: 50 per class
    StudyDataset("voc2007", 5_011, 20),  # trainval, multi-label
)
FEATURE_DIMS = (2048, 768)  # ResNet-50's pooled features; ViT-B's CLS token
SEEDS, EPOCHS, BATCH_SIZE = 3, 100, 256
GRID_SIZE = 8  # SeA heads in one pass: measure.GRID_ETAS
GOAL_SECONDS = 600.0  # the whole study's head training in under 10 minutes on one GPU


@dataclass(frozen=True)
class Costs:
    """Seconds measured on one device for a shape (d, C): one optimiser step of the whole grid
    (``step``), what an epoch costs beyond its steps (``epoch``), what a fit costs beyond its
    epochs (``fit``: trainer, data to the device, heads back)."""

    step: float
    epoch: float
    fit: float


def split_epoch(short_seconds: float, short_steps: int, long_seconds: float,
                long_steps: int) -> tuple[float, float, bool]:
    """``(step, epoch, noisy)`` from two epochs of ``short_steps`` and ``long_steps`` steps:
    the step is their difference per step, the epoch's fixed cost what the short epoch has
    beyond its steps. When the two contradict each other (the long epoch not slower, or a step
    dearer than the short epoch: timings of a busy machine) the step is the long epoch shared
    among its steps, fixed cost included, the epoch 0, and ``noisy`` True."""
    step = (long_seconds - short_seconds) / (long_steps - short_steps)
    epoch = short_seconds - short_steps * step
    if step <= 0 or epoch < 0:
        return long_seconds / long_steps, 0.0, True
    return step, epoch, False


def shapes(datasets: Sequence[StudyDataset] = DATASETS, dims: Sequence[int] = FEATURE_DIMS) -> list[tuple[int, int]]:
    """Every (d, C) the study trains, each once."""
    return sorted({(d, ds.num_classes) for ds in datasets for d in dims}, reverse=True)


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)  # the probe keeps a last, partial batch (drop_last=false)


def project(costs: Mapping[tuple[int, int], Costs], datasets: Sequence[StudyDataset] = DATASETS,
            dims: Sequence[int] = FEATURE_DIMS, seeds: int = SEEDS, epochs: int = EPOCHS,
            batch_size: int = BATCH_SIZE, goal_seconds: float = GOAL_SECONDS) -> dict:
    """The study's head-training time from the per-shape ``costs``: for every dataset and
    feature width, ``seeds`` fits of ``epochs`` epochs of ``steps_per_epoch`` grid steps, each
    fit paying ``fit``, each epoch ``epoch`` and each step ``step`` seconds. One row per
    (dataset, width), the totals and whether they meet ``goal_seconds``."""
    rows = []
    for ds in datasets:
        for d in dims:
            cost = costs[(d, ds.num_classes)]
            per_epoch = steps_per_epoch(ds.train_size, batch_size)
            steps = seeds * epochs * per_epoch
            rows.append({"dataset": ds.name, "d": d, "num_classes": ds.num_classes, "train_size": ds.train_size,
                         "steps_per_epoch": per_epoch, "grid_steps": steps,
                         "seconds": steps * cost.step + seeds * epochs * cost.epoch + seeds * cost.fit})
    seconds = sum(r["seconds"] for r in rows)
    return {"rows": rows, "fits": seeds * len(rows), "epochs": seeds * epochs * len(rows),
            "grid_steps": sum(r["grid_steps"] for r in rows), "seconds": seconds,
            "goal_seconds": goal_seconds, "pass": seconds <= goal_seconds}
