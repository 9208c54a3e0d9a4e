"""Features of every split of a dataset, from files or extracted through the cache."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from sealab.backbones.base import Backbone
from sealab.data.base import SPLITS, DatasetBase, ImageDataset, PrecomputedFeatures
from sealab.features.cache import FeatureCache
from sealab.features.extract import extract_features

log = logging.getLogger(__name__)


@dataclass
class SplitFeatures:
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    cache_hit: bool
    extract_seconds: float


def check_features(x: torch.Tensor, where: str) -> None:
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} feature rows contain NaN/Inf; the backbone "
                         "or its weights are broken (delete the cache entry after fixing them).")


def load_split_features(dataset: DatasetBase, backbone: Backbone | None, cache_dir: str, device: torch.device,
                        batch_size: int = 128, num_workers: int = 0) -> SplitFeatures:
    """Train, val and test features. Image datasets go through the backbone and the cache."""
    start = time.perf_counter()
    if isinstance(dataset, PrecomputedFeatures):
        return SplitFeatures({s: dataset.features(s) for s in SPLITS}, cache_hit=False,
                             extract_seconds=time.perf_counter() - start)
    if not isinstance(dataset, ImageDataset) or backbone is None:
        raise TypeError(f"{type(dataset).__name__} needs a backbone to turn images into features")
    cache = FeatureCache(cache_dir)
    splits, hits = {}, []
    for split in SPLITS:
        identity = {"backbone": backbone.identity(), "dataset": dataset.identity(), "split": split}
        images = dataset.split(split)
        (x, y), hit = cache.get_or_compute(identity, lambda: extract_features(
            backbone, images, device, batch_size, num_workers, desc=f"{dataset.name}/{split}"))
        check_features(x, f"{dataset.name}/{split} features of {backbone.name}")
        dataset.task.check_targets(y, f"{dataset.name}/{split}")
        splits[split] = (x, y)
        hits.append(hit)
    cache_hit = all(hits)
    log.info("features of %s through %s: %s", dataset.name, backbone.name,
             "all splits from the cache, no extraction" if cache_hit else
             f"extracted {sum(not h for h in hits)} split(s), cached under {cache.root}")
    return SplitFeatures(splits, cache_hit, time.perf_counter() - start)
