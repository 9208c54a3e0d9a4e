"""Run a frozen backbone (or any model) over a dataset split: one output row per sample, in order."""

from __future__ import annotations

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


@torch.inference_mode()
def run_model(model: nn.Module, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
              device: torch.device, batch_size: int = 128, num_workers: int = 0,
              desc: str = "batches") -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs float32 on CPU, targets)`` of ``model`` in eval mode on ``device`` over every
    sample, in order."""
    model.eval().to(device)
    loader = image_loader(dataset, transform, batch_size, num_workers, pin_memory=device.type == "cuda")
    outputs, targets = [], []
    for images, target in tqdm(loader, desc=desc, unit="batch"):
        outputs.append(model(images.to(device, non_blocking=True)).float().cpu())
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def extract_features(backbone: Backbone, dataset: Dataset, device: torch.device, batch_size: int = 128,
                     num_workers: int = 0, desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features n x d float32 on CPU, targets)`` in dataset order."""
    x, y = run_model(backbone.freeze(), dataset, backbone.transform, device, batch_size, num_workers, desc)
    if x.ndim != 2:
        raise RuntimeError(f"{backbone.name} returned shape {tuple(x.shape[1:])} per image; expected "
                           "pooled features (B x d). Create the model with num_classes=0.")
    return x, y
