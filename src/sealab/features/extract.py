"""Run a frozen backbone (or any model) over a dataset split: one output row per sample, in order."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sealab.backbones.base import Backbone


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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """``auto``: image decoding in worker processes feeds a GPU (up to 8, one core left for the
    main process); on the CPU the model needs the cores itself, so none."""
    if num_workers == "auto":
        return min(8, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"extract.num_workers={num_workers!r}: use auto or a number >= 0")
    return num_workers


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"extract.precision={precision!r}: choose one of {list(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def run_model(model: nn.Module, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
              device: torch.device, batch_size: int = 128, num_workers: int | str = 0,
              precision: str = "fp32", channels_last: bool = False,
              desc: str = "batches") -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs float32 on CPU, targets)`` of ``model`` in eval mode on ``device`` over every
    sample, in order. ``precision`` bf16/fp16 runs the model under autocast (fp32: as published
    numbers were made); ``channels_last`` stores images and convolution weights NHWC."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.eval().to(device, memory_format=memory_format)
    loader = image_loader(dataset, transform, batch_size, resolve_workers(num_workers, device),
                          pin_memory=device.type == "cuda")
    outputs, targets = [], []
    with _autocast(device, precision):
        for images, target in tqdm(loader, desc=desc, unit="batch"):
            images = images.to(device, non_blocking=True)
            if images.ndim == 4:
                images = images.contiguous(memory_format=memory_format)
            outputs.append(model(images).float().cpu())
            targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def extract_features(backbone: Backbone, dataset: Dataset, device: torch.device, batch_size: int = 128,
                     num_workers: int | str = 0, precision: str = "fp32", channels_last: bool = False,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features n x d float32 on CPU, targets)`` in dataset order."""
    x, y = run_model(backbone.freeze(), dataset, backbone.transform, device, batch_size, num_workers,
                     precision, channels_last, desc)
    if x.ndim != 2:
        raise RuntimeError(f"{backbone.name} returned shape {tuple(x.shape[1:])} per image; expected "
                           "pooled features (B x d). Create the model with num_classes=0.")
    return x, y
