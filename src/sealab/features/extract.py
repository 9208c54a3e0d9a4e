"""Run a frozen backbone (or any model) over a dataset split: one output row per sample, in order."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sealab.backbones.base import Backbone
from sealab.rules import problem
from sealab.settings import rule


class Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return self.transform(image), torch.as_tensor(target)


def image_loader(dataset: Dataset, transform: Callable[[Any], torch.Tensor], batch_size: int,
                 num_workers: int = 0, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 pin_memory: bool = False) -> DataLoader:
    """Batches of ``(transform(image), target)``; a shuffled order is drawn from ``seed``."""
    return DataLoader(Transformed(dataset, transform), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None,
                      drop_last=drop_last, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)  # no worker restart every epoch


# The autocast dtype of each extract.precision (its rule: sealab.settings, whose choices these
# must be; tests/test_settings.py checks it).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _refuse(key: str, value: Any) -> None:
    """Raise when ``value`` breaks the rule sealab.settings declares for run-level ``key``."""
    if (refused := problem(key, value, rule(key))) is not None:
        raise ValueError(refused)


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """``auto``: image decoding in worker processes feeds a GPU (up to 8, one core left for the
    main process); on the CPU the model needs the cores itself, so none."""
    _refuse("extract.num_workers", num_workers)
    if num_workers == "auto":
        return min(8, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0
    return num_workers


def _autocast(device: torch.device, precision: str):
    dtype = AUTOCAST_DTYPES[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def iter_outputs(model: nn.Module, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
                 device: torch.device, batch_size: int = 128, num_workers: int | str = 0,
                 precision: str = "fp32", channels_last: bool = False,
                 desc: str = "batches") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(outputs float32 on CPU, targets)`` of ``model`` in eval mode on ``device`` over
    every sample, in order. ``precision`` bf16/fp16 runs the model under autocast (fp32: as
    published numbers were made); ``channels_last`` stores images and convolution weights NHWC."""
    for key, value in (("extract.batch_size", batch_size), ("extract.precision", precision),
                       ("extract.channels_last", channels_last)):
        _refuse(key, value)  # before the model moves or the first batch is loaded
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.eval().to(device, memory_format=memory_format)
    loader = image_loader(dataset, transform, batch_size, resolve_workers(num_workers, device),
                          pin_memory=device.type == "cuda")
    autocast = _autocast(device, precision)
    for images, target in tqdm(loader, desc=desc, unit="batch"):
        images = images.to(device, non_blocking=True)
        if images.ndim == 4:
            images = images.contiguous(memory_format=memory_format)
        with autocast:  # entered per batch: the consumer's code between batches runs without it
            outputs = model(images)
        yield outputs.float().cpu(), target


def run_model(model: nn.Module, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
              device: torch.device, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs, targets)`` of every sample, concatenated: ``iter_outputs`` in one piece."""
    return _concat(iter_outputs(model, dataset, transform, device, **settings))


def iter_features(backbone: Backbone, dataset: Dataset, device: torch.device, batch_size: int = 128,
                  num_workers: int | str = 0, precision: str = "fp32", channels_last: bool = False,
                  desc: str = "features") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(features B x d float32 on CPU, targets)`` in dataset order."""
    for x, y in iter_outputs(backbone.freeze(), dataset, backbone.transform, device, batch_size, num_workers,
                             precision, channels_last, desc):
        if x.ndim != 2:
            raise RuntimeError(f"{backbone.name} returned shape {tuple(x.shape[1:])} per image; expected "
                               "pooled features (B x d). Create the model with num_classes=0.")
        yield x, y


def extract_features(backbone: Backbone, dataset: Dataset, device: torch.device,
                     **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features n x d float32 on CPU, targets)`` in dataset order."""
    return _concat(iter_features(backbone, dataset, device, **settings))


def _concat(batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    outputs, targets = zip(*batches)
    return torch.cat(outputs), torch.cat(targets)
