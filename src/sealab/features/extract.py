"""Run a frozen backbone over a dataset split: one feature row per sample, in order."""

from __future__ import annotations

from typing import Any, Callable

import torch
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def extract_features(backbone: Backbone, dataset: Dataset, batch_size: int = 128,
                     num_workers: int = 0, device: str = "auto",
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features n x d float32 on CPU, targets)`` in dataset order."""
    dev = resolve_device(device)
    backbone.freeze().to(dev)
    loader = DataLoader(Transformed(dataset, backbone.transform), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    feats, targets = [], []
    for images, target in tqdm(loader, desc=desc, unit="batch"):
        out = backbone(images.to(dev, non_blocking=True))
        if out.ndim != 2:
            raise RuntimeError(f"{backbone.name} returned shape {tuple(out.shape)}; expected "
                               "pooled features (B x d). Create the model with num_classes=0.")
        feats.append(out.float().cpu())
        targets.append(target)
    return torch.cat(feats), torch.cat(targets)
