"""Feature extraction speed: sealab's extractor against a plain timm + DataLoader loop on the
same model, images and settings, in this process."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sealab.backbones.timm_backbone import TimmBackbone
from sealab.features.extract import extract_features

MODEL, IMG_SIZE = "resnet10t", 64


class RandomImages(Dataset):
    """Seeded random RGB images held in memory (decoding is not what is measured)."""

    def __init__(self, n: int, size: int = IMG_SIZE, seed: int = 0):
        pixels = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.images = [Image.fromarray(p) for p in pixels]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], 0


def _plain_seconds(backbone: TimmBackbone, images: RandomImages, batch_size: int) -> float:
    model = backbone.model.eval()
    loader = DataLoader(images, batch_size=batch_size,
                        collate_fn=lambda batch: torch.stack([backbone.transform(im) for im, _ in batch]))
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            model(batch)
    return time.perf_counter() - start


def _sealab_seconds(backbone: TimmBackbone, images: RandomImages, batch_size: int) -> float:
    start = time.perf_counter()
    extract_features(backbone, images, torch.device("cpu"), batch_size=batch_size, desc="bench")
    return time.perf_counter() - start


def extraction_seconds_per_1000(n: int, rounds: int, batch_size: int = 64) -> dict[str, float]:
    """Median seconds per 1000 images of each extractor (CPU, fp32, no workers), after a warm-up,
    the two interleaved round by round."""
    images = RandomImages(n)
    backbone = TimmBackbone(MODEL, pretrained=False, img_size=IMG_SIZE, name="bench")
    _sealab_seconds(backbone, images, batch_size)  # warm-up
    plain, ours = [], []
    for _ in range(rounds):
        plain.append(_plain_seconds(backbone, images, batch_size))
        ours.append(_sealab_seconds(backbone, images, batch_size))
    return {"plain_extraction": statistics.median(plain) * 1000 / n,
            "sealab_extraction": statistics.median(ours) * 1000 / n}
