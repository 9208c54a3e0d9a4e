"""sealab's own training path, timed per epoch: the ``method=`` configs through a Lightning Trainer."""

from __future__ import annotations

import tempfile
import time

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from sealab.device import trainer_placement
from sealab.features.ondisk import StreamedFeatures
from sealab.methods.base import Features, FitContext
from sealab.task import MultiClass
from sealab.train import CONFIG_MODULE


class EpochTimer(L.Callback):
    """Wall time of each training epoch, from one epoch's start to the next (or to the end),
    so that epoch-end work (logging reduction, the NaN check) is counted too."""

    def __init__(self):
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def sealab_epoch_seconds(overrides: list[str], train: Features | StreamedFeatures, num_classes: int,
                         batch_size: int, epochs: int, device: torch.device | None = None) -> list[float]:
    """Train the method of ``overrides`` (e.g. ``["method=sea"]``) on ``train`` (tensors, or a
    split streamed from disk) as sealab-train would (trainer from conf/trainer/default.yaml,
    without logger and progress bar) and return the seconds of each epoch. ``device``: the CPU
    unless given (the plain loops the probe is compared with run on the CPU)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"method.epochs={epochs}", f"method.batch_size={batch_size}"])
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="sealab-bench-") as root:
        device = device or torch.device("cpu")
        ctx = FitContext(task=MultiClass(num_classes), seed=0, device=device,
                         make_trainer=lambda **kw: instantiate(
                             cfg.trainer, default_root_dir=root, logger=False,
                             enable_progress_bar=False, callbacks=[timer],
                             **trainer_placement(device), **kw))
        instantiate(cfg.method).fit(train, None, ctx)
    return timer.seconds
