"""Feature extraction speed: sealab's extractor against a plain timm + DataLoader loop on the
same model, images, device and loader workers, in this process."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sealab.backbones.timm_backbone import TimmBackbone
from sealab.bench.measure import synchronize
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


def _plain_seconds(backbone: TimmBackbone, images: RandomImages, batch_size: int, device: torch.device,
                   num_workers: int) -> float:
    """Transform in the loader (its workers, if any), batches pinned for a GPU, forward, the
    features back on the CPU (what an extraction keeps)."""
    model = backbone.model.eval().to(device)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                        collate_fn=lambda batch: torch.stack([backbone.transform(im) for im, _ in batch]))
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            model(batch.to(device, non_blocking=True)).cpu()
    return time.perf_counter() - start


def _sealab_seconds(backbone: TimmBackbone, images: RandomImages, batch_size: int, device: torch.device,
                    num_workers: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    extract_features(backbone, images, device, batch_size=batch_size, num_workers=num_workers, desc="bench")
    return time.perf_counter() - start


def extraction_seconds_per_1000(n: int, rounds: int, batch_size: int = 64, device: torch.device | None = None,
                                model: str = MODEL, img_size: int = IMG_SIZE, num_workers: int = 0) -> dict[str, float]:
    """Median seconds per 1000 images of each extractor (fp32; on the CPU unless ``device`` is
    given; a random-weight timm ``model`` at ``img_size``), after a warm-up, the two
    interleaved round by round."""
    device = device or torch.device("cpu")
    images = RandomImages(n, size=img_size)
    backbone = TimmBackbone(model, pretrained=False, img_size=img_size, name="bench")
    _sealab_seconds(backbone, images, batch_size, device, num_workers)  # warm-up
    plain, ours = [], []
    for _ in range(rounds):
        plain.append(_plain_seconds(backbone, images, batch_size, device, num_workers))
        ours.append(_sealab_seconds(backbone, images, batch_size, device, num_workers))
    return {"plain_extraction": statistics.median(plain) * 1000 / n,
            "sealab_extraction": statistics.median(ours) * 1000 / n}
