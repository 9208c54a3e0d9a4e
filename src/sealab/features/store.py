"""Features of every split of a dataset, from files or extracted through the cache."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from sealab.backbones.base import Backbone
from sealab.backbones.ensemble import Ensemble
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


CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _cached_split(cache: FeatureCache, backbone: Backbone, dataset: ImageDataset, split: str,
                  device: torch.device, cache_dtype: str, **extraction) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One backbone's features of one split, through the cache, as float32 (a cache miss returns
    exactly what a later hit will read, so both give the same numbers)."""
    identity = {"backbone": backbone.identity(), "dataset": dataset.identity(), "split": split,
                "precision": extraction["precision"], "cache_dtype": cache_dtype}
    images = dataset.split(split)

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = extract_features(backbone, images, device, **extraction, desc=f"{dataset.name}/{split}")
        return x.to(CACHE_DTYPES[cache_dtype]), y

    (x, y), hit = cache.get_or_compute(identity, compute)
    return x.float(), y, hit


def load_split_features(dataset: DatasetBase, backbone: Backbone | None, cache_dir: str, device: torch.device,
                        batch_size: int = 128, num_workers: int | str = 0, precision: str = "fp32",
                        channels_last: bool = False, cache_dtype: str = "float32") -> SplitFeatures:
    """Train, val and test features. Image datasets go through the backbone and the cache; an
    ensemble's members each through their own cache entries. ``cache_dtype=float16`` halves the
    cache on disk (features are used as float32)."""
    start = time.perf_counter()
    if isinstance(dataset, PrecomputedFeatures):
        return SplitFeatures({s: dataset.features(s) for s in SPLITS}, cache_hit=False,
                             extract_seconds=time.perf_counter() - start)
    if not isinstance(dataset, ImageDataset) or backbone is None:
        raise TypeError(f"{type(dataset).__name__} needs a backbone to turn images into features")
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"extract.cache_dtype={cache_dtype!r}: choose one of {list(CACHE_DTYPES)}")
    extraction = {"batch_size": batch_size, "num_workers": num_workers, "precision": precision,
                  "channels_last": channels_last}
    cache = FeatureCache(cache_dir)
    members = list(backbone.members) if isinstance(backbone, Ensemble) else [backbone]
    splits, hits = {}, []
    for split in SPLITS:
        parts = [_cached_split(cache, m, dataset, split, device, cache_dtype, **extraction) for m in members]
        y = parts[0][1]
        x = backbone.combine([p[0] for p in parts]) if isinstance(backbone, Ensemble) else parts[0][0]
        check_features(x, f"{dataset.name}/{split} features of {backbone.name}")
        dataset.task.check_targets(y, f"{dataset.name}/{split}")
        splits[split] = (x, y)
        hits += [p[2] for p in parts]
    cache_hit = all(hits)
    log.info("features of %s through %s: %s", dataset.name, backbone.name,
             "all splits from the cache, no extraction" if cache_hit else
             f"extracted {sum(not h for h in hits)} split(s), cached under {cache.root}")
    return SplitFeatures(splits, cache_hit, time.perf_counter() - start)
